import pytest
import torch

from models import NORMS, build_model
from models.energy import class_conditional
from utils.sampling.samplers import run_sampler
from utils.training import lr_at, px_loss


@pytest.mark.parametrize("norm", NORMS)
def test_wrn_on_grayscale_28_and_rgb_32(norm):
    for ch, size in ((1, 28), (3, 32)):
        model = build_model("wrn", 10, ch, depth=10, width=1, norm=norm)
        f, logits = model(torch.randn(4, ch, size, size))
        assert f.shape == (4,) and logits.shape == (4, 10) and torch.isfinite(f).all()


def test_joint_energy_is_logsumexp_of_logits_and_class_energy_is_the_logit():
    model = build_model("cnn", 10, 1, width=1, norm="none", image_size=28)
    x = torch.randn(5, 1, 28, 28)
    f, logits = model(x)
    assert torch.allclose(f, torch.logsumexp(logits, 1))
    y = torch.tensor([0, 3, 9, 2, 2])
    fy, _ = model(x, y)
    assert torch.allclose(fy, logits[torch.arange(5), y])
    assert torch.allclose(model.classify(x), logits)


def test_uncond_head_is_separate_from_the_classifier():
    model = build_model("cnn", 10, 1, width=1, norm="none", uncond=True, image_size=28)
    x = torch.randn(5, 1, 28, 28)
    f, logits = model(x)
    assert f.shape == (5,)
    assert not torch.allclose(f, torch.logsumexp(logits, 1))
    assert torch.allclose(f, model.energy_output(model.f(x)).squeeze(1))
    f.sum().backward()
    assert model.energy_output.weight.grad is not None and model.class_output.weight.grad is None


def test_bad_model_and_norm_names():
    with pytest.raises(ValueError, match="unknown norm"):
        build_model("wrn", 10, 3, norm="group")
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn", 10, 3, depth=12)


def test_px_loss_value_and_gradient_direction():
    fp = torch.tensor([1.0, 3.0], requires_grad=True)
    fq = torch.tensor([0.0, -2.0], requires_grad=True)
    loss = px_loss(fp, fq, l2_coeff=0.5)
    assert loss.item() == pytest.approx(-(2.0 - (-1.0)) + 0.5 * ((1 + 9) / 2 + 1.0))
    loss.backward()
    # d/dfp_i = -1/n + l2 * 2 fp_i / n ; d/dfq_i = 1/n + l2 * 2 mean(fq) / n
    assert torch.allclose(fp.grad, torch.tensor([-0.5 + 0.5, -0.5 + 1.5]))
    assert torch.allclose(fq.grad, torch.tensor([0.5 - 0.5, 0.5 - 0.5]))
    fp.grad = fq.grad = None
    px_loss(fp, fq, l2_coeff=0.0).backward()
    assert (fp.grad < 0).all() and (fq.grad > 0).all()  # descent raises f on data, lowers it on samples


def test_lr_schedule_warmup_and_decay():
    assert lr_at(0.1, 0, 0, 1000, [60, 120], 0.2) == 0
    assert lr_at(0.1, 500, 0, 1000, [60, 120], 0.2) == pytest.approx(0.05)
    assert lr_at(0.1, 5000, 59, 1000, [60, 120], 0.2) == pytest.approx(0.1)
    assert lr_at(0.1, 5000, 60, 1000, [60, 120], 0.2) == pytest.approx(0.02)
    assert lr_at(0.1, 9000, 130, -1, [60, 120], 0.2) == pytest.approx(0.004)


def test_spectral_norm_bounds_every_layer():
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, width=1, norm="none", image_size=28, spectral_norm=True)
    model.train()
    for _ in range(20):  # power iterations converge during forward passes in train mode
        model(torch.randn(4, 1, 28, 28))
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 6  # 4 convs, the feature layer and the class head
    for layer in layers:  # a conv's weight as the (out, in x k x k) matrix that spectral_norm normalises
        assert torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item() == pytest.approx(1.0, abs=0.05)
        assert hasattr(layer, "parametrizations")


@pytest.mark.parametrize("name", ["tutorial_cnn", "conv5", "mlp"])
@pytest.mark.parametrize("uncond", [False, True])
def test_literature_energy_nets_on_28x28(name, uncond):
    model = build_model(name, 10, 1, width=1, norm="none", image_size=28, uncond=uncond)
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    f, logits = model(x)
    assert f.shape == (3,) and logits.shape == (3, 10)
    g, = torch.autograd.grad(f.sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0


def test_step_lr_every_epoch():
    assert lr_at(1e-4, 10_000, 3, 0, [], 0.97, decay_every=1) == pytest.approx(1e-4 * 0.97 ** 3)


def test_class_conditional_energy_of_a_separate_head_adds_log_p_y_given_x():
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, width=1, norm="none", uncond=True, image_size=28)
    x, y = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8)
    f, logits = model(x)
    joint = class_conditional(model)
    fy, _ = joint(x, y)
    assert torch.allclose(fy, f + logits.log_softmax(1)[torch.arange(8), y], atol=1e-6)
    assert torch.equal(joint(x)[0], f)  # without a class: the marginal energy
    assert not torch.allclose(fy, model(x, y)[0])  # the head alone ignores y
    jem = build_model("cnn", 10, 1, width=1, norm="none", image_size=28)
    assert class_conditional(jem) is jem  # JEM's logits[y] are already joint
    # chains given a class move towards it: log p(y|x) rises along them
    c = torch.full((8,), 3)
    x1, _ = run_sampler("langevin", joint, x, 20, 0.05, 0.0, y=c)
    log_p = lambda z: model(z)[1].log_softmax(1)[:, 3]
    with torch.no_grad():
        assert (log_p(x1) > log_p(x)).float().mean() > 0.8


@pytest.mark.parametrize("name", ["wrn", "cnn", "tutorial_cnn", "conv5", "mlp"])
def test_every_net_takes_the_activation_it_is_given(name):
    kinds = lambda m: {type(x) for x in m.modules()} & {torch.nn.LeakyReLU, torch.nn.SiLU, torch.nn.GELU}
    size = 32 if name == "wrn" else 28
    published = build_model(name, 10, 1, depth=10, width=1, image_size=size)
    silu = build_model(name, 10, 1, depth=10, width=1, image_size=size, act="silu")
    gelu = build_model(name, 10, 1, depth=10, width=1, image_size=size, act="gelu")
    assert kinds(published) == ({torch.nn.SiLU} if name == "tutorial_cnn" else {torch.nn.LeakyReLU})
    assert kinds(silu) == {torch.nn.SiLU} and kinds(gelu) == {torch.nn.GELU}
    assert silu.state_dict().keys() == published.state_dict().keys()  # checkpoints keep their keys
    gelu.load_state_dict(published.state_dict())
    x = torch.randn(3, 1, size, size)
    assert not torch.allclose(gelu.eval()(x)[0], published.eval()(x)[0])
