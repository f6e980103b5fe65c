import numpy as np
import pytest
import torch

from utils.fid import inception_score
from utils.metrics import auroc, expected_calibration_error


def test_ece_of_a_perfectly_calibrated_predictor_is_about_zero():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 200000)
    correct = rng.uniform(size=conf.size) < conf
    assert expected_calibration_error(conf, correct) < 0.005


def test_ece_of_an_overconfident_predictor():
    conf = np.full(1000, 0.9)
    correct = np.arange(1000) < 600
    assert expected_calibration_error(conf, correct) == pytest.approx(0.3)


def test_auroc_identical_sets_and_separated_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=20000)
    b = rng.normal(size=20000)
    assert auroc(a, b) == pytest.approx(0.5, abs=0.01)
    assert auroc(a + 10, b) == pytest.approx(1.0)
    assert auroc(a - 10, b) == pytest.approx(0.0)


def test_cross_correlation_finds_the_lag():
    from utils.evaluation.run_logs import cross_correlation
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    b = np.roll(a, 3)  # b[t] = a[t - 3]: a leads b by 3 steps
    lags, corr = cross_correlation(a, b, 10)
    assert lags[np.argmax(corr)] == 3 and corr.max() > 0.95
    assert abs(corr[lags == 0][0]) < 0.2


def one_hot_logits(labels, n_classes=10, scale=30.0):
    logits = torch.full((len(labels), n_classes), -scale, dtype=torch.float64)
    logits[torch.arange(len(labels)), labels] = scale
    return logits


def test_inception_score_closed_forms_and_order():
    assert inception_score(torch.zeros(1000, 1008))[0] == pytest.approx(1.0)
    # 7 classes used equally, arriving grouped class by class as the buffer selection returns them:
    # unshuffled splits would each hold one class and score 1; shuffled, each split scores about 7
    grouped = one_hot_logits(torch.arange(70000) // 10000)
    assert inception_score(grouped)[0] == pytest.approx(7.0, rel=0.002)
    assert inception_score(grouped[torch.randperm(70000)])[0] == pytest.approx(7.0, rel=0.002)


def test_inception_logits_leave_out_the_fc_bias():
    from utils.fid import InceptionFeatures, fid_inception_structure
    state = fid_inception_structure().state_dict()
    state["fc.bias"] = torch.full_like(state["fc.bias"], 5.0)
    net = InceptionFeatures(state, has_logits=True)
    pool, logits = net(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert torch.allclose(logits, pool @ state["fc.weight"].T, atol=1e-4)


def test_kid_is_zero_within_its_spread_on_one_distribution_and_large_across_two():
    from utils.fid import kernel_inception_distance
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(2000, 256))
    kid, std = kernel_inception_distance(feats[:1000], feats[1000:], n_subsets=50, subset_size=500)
    assert abs(kid) < 2 * std and std > 0
    shifted, std2 = kernel_inception_distance(feats[:1000], feats[1000:] + 0.3, n_subsets=50, subset_size=500)
    assert shifted > 10 * std2


def test_aupr_and_fpr_at_95_tpr_closed_forms():
    from utils.metrics import aupr, fpr_at_95_tpr
    inside = np.arange(100, 200, dtype=float)  # every in-distribution score above every OOD one
    assert aupr(inside, np.arange(100.0)) == 1.0 and fpr_at_95_tpr(inside, np.arange(100.0)) == 0.0
    # OOD scores interleaved: at the threshold keeping 95 of 100 inputs (scores >= 5), 95 of 100 OOD pass too
    assert fpr_at_95_tpr(np.arange(100.0), np.arange(100.0) + 0.5) == pytest.approx(0.95)
    assert aupr(np.arange(100.0), np.arange(100.0) + 0.5) == pytest.approx(0.5, abs=0.01)
