"""Prove the CUDA path in one command: cuda tests, the published M-JEM iteration timed (fp32 and fast path), fp32
against the fast path on real data, a SIGKILLed run resumed, exact FID features against the CPU's, fresh samples for
FID on the CPU afterwards.

    python bench/gpu_check.py --out $OUT                    # on a GPU machine, about 8 minutes on one H100
    python bench/gpu_check.py --smoke --device cpu --out D  # the same parts at toy sizes (CI)
Writes OUT/gpu_check.json and OUT/gpu_check.md after every part, so a part that runs out of time or fails leaves
the others' results; each part has its own time limit.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.checkpoint import load_checkpoint  # noqa: E402
from utils.data import load_dataset, prepare_fashion_mnist  # noqa: E402
from utils.errors import ArgumentParser, UserError, positive_int, run_cli  # noqa: E402
from utils.run_dir import read_metrics  # noqa: E402


def parse(argv=None):
    p = ArgumentParser("bench/gpu_check.py", description=__doc__.split("\n")[0],
                       example="python bench/gpu_check.py --out experiment/gpu_check")
    p.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md, samples_*.npz, logs")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--smoke", action="store_true", help="toy sizes (CI): small nets, a few iterations")
    p.add_argument("--data_root", default=os.path.join(ROOT, "data"),
                   help="Fashion-MNIST for part 3 (unpacked as the scripts do; missing: a toy set is written)")
    p.add_argument("--fashion_mnist_gz", default="/usr/share/datasets/fashion-mnist",
                   help="folder of Fashion-MNIST's *-ubyte.gz files (Debian's layout), unpacked into --data_root")
    p.add_argument("--iters", type=positive_int, default=300, help="part 3: iterations of each fp32 / fast-path run")
    return p.parse_args(argv)


class Report:
    """Results of the parts, written out (JSON and markdown) after each one."""

    def __init__(self, out, device):
        self.out, self.parts = out, {}
        self.info = {"device": device, "python": sys.version.split()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def record(self, name, result):
        self.parts[name] = result
        with open(os.path.join(self.out, "gpu_check.json"), "w") as fh:
            json.dump({**self.info, "parts": self.parts}, fh, indent=2, default=str)
        lines = [f"# GPU check ({self.info['device']}, started {self.info['started']})", ""]
        for part, res in self.parts.items():
            lines.append(f"## {part}: {res.get('status')} ({res.get('seconds', 0):.0f} s)")
            lines += [f"- {k}: {v}" for k, v in res.items() if k not in ("status", "seconds")] + [""]
        with open(os.path.join(self.out, "gpu_check.md"), "w") as fh:
            fh.write("\n".join(lines))


def run(cmd, limit, log):
    """(return code or 'timeout', seconds) of a subprocess from the repository root, its output into `log`."""
    start = time.time()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return rc, time.time() - start


def part(report, name, fn):
    start = time.time()
    try:
        result = fn()
    except Exception as e:  # a failed part is reported; the next part still runs
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    result.setdefault("status", "ok")
    result["seconds"] = round(time.time() - start, 1)
    report.record(name, result)
    print(f"{name}: {result['status']} ({result['seconds']:.0f} s)", flush=True)


def cuda_tests(a):
    marker = "cuda" if a.device == "cuda" else "cuda or not cuda"  # smoke: the marker mechanism on a CPU test
    target = ["tests/test_cuda.py"] if a.device == "cuda" else ["tests/test_training_pieces.py"]
    rc, _ = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker, *target], 240 if not a.smoke else 120,
                os.path.join(a.out, "cuda_tests.log"))
    tail = open(os.path.join(a.out, "cuda_tests.log")).read().strip().splitlines()[-1:]
    return {"status": "ok" if rc == 0 else "failed", "pytest": tail[0] if tail else "", "log": "cuda_tests.log"}


def timing(a):
    out = os.path.join(a.out, "train_step.json")
    size = ["--nets", "cnn-1-1", "--iters", "2", "--warmup", "1", "--batch_size", "8", "--pyx_batch_size", "8",
            "--compile", "off", "--peak_size", "256"] if a.smoke else ["--iters", "20", "--warmup", "5"]
    rc, _ = run(["bench/train_step.py", "--device", a.device, "--out", out, "--policies", "fp32", "bf16_loss",
                 "bf16_all", *size], 300, os.path.join(a.out, "train_step.log"))
    if rc != 0:
        return {"status": f"failed ({rc})", "log": "train_step.log"}
    info = json.load(open(out))
    name = lambda r: f"{r['net']} {r['policy']}{' compiled' if r['compile'] else ''}"
    rows = {name(r): {k: round(v, 3) for k, v in r.items() if isinstance(v, float)} for r in info["rows"]}
    return {"peak_gflops": {k: round(v) for k, v in info["peak_gflops"].items()}, **rows}


def has_fashion_mnist(a):
    """Whether Fashion-MNIST is (or can be unpacked from --fashion_mnist_gz) under --data_root."""
    prepare_fashion_mnist(a.data_root, source=a.fashion_mnist_gz)
    try:
        load_dataset("fashionmnist", a.data_root, True, None)
    except UserError:
        return False
    return True


def data_root(a):
    """Fashion-MNIST where the scripts find it, or (smoke, or no data travelled) a toy set in the tests' layout."""
    if not a.smoke and has_fashion_mnist(a):
        return a.data_root, "Fashion-MNIST"
    toy = os.path.join(a.out, "toy_data")
    if not os.path.isdir(toy):
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from conftest import write_fashion_mnist
        write_fashion_mnist(toy, n_train=320, n_test=100)
    return toy, "toy class images (no Fashion-MNIST under --data_root)"


def train_flags(a, root, centers, save, iters):
    net = ["--model", "cnn", "--width", "1", "--batch_size", "16", "--pyx_batch_size", "32", "--buffer_size", "200"] \
        if a.smoke else ["--model", "wrn", "--depth", "16", "--width", "4"]
    return ["train_maebm.py", "--data_root", root, "--center_dir", centers, "--save_dir", save, *net, "--uncond",
            "--n_steps", "5", "--sgld_std", "0.001", "--l2_coeff", "0.5", "--lr", "0.05", "--warmup_iters", "50",
            "--print_every", "4", "--plot_every", "100000", "--workers", "0", "--device", a.device,
            "--max_iters", str(iters), "--ckpt_every_iters", str(max(iters // 4, 1)), "--seed", "3"]


def samples_npz(a, ckpt, name, n):
    """n fresh samples (the recipe's own start and K) as a float16 npz under 16 MB, scored on the CPU afterwards."""
    out = os.path.join(a.out, f"eval_{name}")
    rc, _ = run(["eval_maebm.py", "--load_path", ckpt, "--eval", "gen", "--variant", "project", "--n_samples", str(n),
                 "--n_sample_steps", "5", "--no_fid", "--save_dir", out, "--device", a.device], 150,
                os.path.join(a.out, f"gen_{name}.log"))
    if rc != 0:
        return f"failed ({rc})"
    x = np.load(os.path.join(out, "gen_samples.npz"))["samples"].astype(np.float16)
    np.savez_compressed(os.path.join(a.out, f"samples_{name}.npz"), samples=x)
    return f"samples_{name}.npz ({len(x)} images)"


def fp32_vs_fast(a):
    root, what = data_root(a)
    centers = os.path.join(a.out, "centers")
    run(["one_center.py", "--dataset", "fashionmnist", "--data_root", root, "--save_dir", centers], 120,
        os.path.join(a.out, "one_center.log"))
    iters, result = (10 if a.smoke else a.iters), {"data": what}  # smoke: one epoch of the toy set
    for name, fast in (("fp32", []), ("fast", ["--amp", "on", "--channels_last", "on"])):
        save = os.path.join(a.out, f"run_{name}")
        rc, sec = run(train_flags(a, root, centers, save, iters) + fast, 200, os.path.join(a.out, f"train_{name}.log"))
        rows = read_metrics(os.path.join(save, "metrics.jsonl"))
        evals = [r for r in rows if "test/acc" in r] or [{}]
        last = [r for r in rows if "energy/f_data" in r][-1:] or [{}]
        result[name] = {"rc": rc, "seconds": round(sec, 1), "test_acc": evals[-1].get("test/acc"),
                        "f_data": last[0].get("energy/f_data"), "f_samples": last[0].get("energy/f_samples")}
        if rc == 0:
            result[name]["samples"] = samples_npz(a, os.path.join(save, "last_ckpt.pt"), name, 64 if a.smoke else 2000)
    acc = [result[k]["test_acc"] for k in ("fp32", "fast")]
    if None not in acc:
        result["accuracy_gap_points"] = round(100 * abs(acc[0] - acc[1]), 2)
        result["verdict"] = ("the fast path keeps accuracy within 0.5 points" if result["accuracy_gap_points"] <= 0.5
                             else "the fast path moves accuracy by more than 0.5 points: keep fp32 as the default")
    result["status"] = "ok" if all(result[k]["rc"] == 0 for k in ("fp32", "fast")) else "failed"
    return result


def kill_and_resume(a):
    root, _ = data_root(a)
    centers = os.path.join(a.out, "centers")
    iters = 8 if a.smoke else 100
    full, part_dir = os.path.join(a.out, "resume_full"), os.path.join(a.out, "resume_killed")
    run(train_flags(a, root, centers, full, iters), 200, os.path.join(a.out, "resume_full.log"))
    proc = subprocess.Popen([sys.executable, *train_flags(a, root, centers, part_dir, iters)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    while time.time() < deadline and proc.poll() is None:  # killed once a mid-run checkpoint exists
        if [p for p in glob.glob(os.path.join(part_dir, "ckpt_iter_*.pt")) if not p.endswith("00000000.pt")]:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(os.path.join(part_dir, "last_ckpt.pt"))["iteration"]
    rc, _ = run(train_flags(a, root, centers, part_dir, iters) + ["--resume", part_dir], 200,
                os.path.join(a.out, "resume.log"))
    a_ckpt = load_checkpoint(os.path.join(full, "last_ckpt.pt"))
    b_ckpt = load_checkpoint(os.path.join(part_dir, "last_ckpt.pt"))
    diff = max(float((a_ckpt["model_state_dict"][k].float() - b_ckpt["model_state_dict"][k].float()).abs().max())
               for k in a_ckpt["model_state_dict"] if a_ckpt["model_state_dict"][k].is_floating_point())
    loss = lambda d: [r["loss/total"] for r in read_metrics(os.path.join(d, "metrics.jsonl")) if "loss/total" in r]
    return {"status": "ok" if rc == 0 and b_ckpt["iteration"] == iters else "failed", "killed_at_checkpoint": killed_at,
            "final_iterations": [a_ckpt["iteration"], b_ckpt["iteration"]], "max_weight_difference": diff,
            "bit_identical": diff == 0.0, "final_loss": [loss(full)[-1:], loss(part_dir)[-1:]]}


def exact_fid_features(a):
    """Inception's exact pool3 features on --device against the CPU's, on the same smooth random images: with cuDNN's
    TF32 off they agree to fp32 rounding (on the CPU, smoke: the same computation twice, exactly)."""
    import torch
    from utils.fid import load_inception
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(4 if a.smoke else 64, 1, 7, 7, generator=g), size=28,
                                        mode="bilinear", align_corners=False) * 2 - 1
    try:
        cpu_net, source = load_inception(device="cpu", precision="exact")
    except UserError as e:  # the weights do not travel to a GPU machine unless installed there
        return {"status": "skipped", "why": str(e)}
    with torch.no_grad():
        cpu = cpu_net(x)[0].double()
        dev = load_inception(device=a.device, precision="exact")[0](x.to(a.device))[0].double().cpu()
    rel = float((dev - cpu).norm() / cpu.norm())
    return {"status": "ok" if rel < 1e-4 else "failed", "images": len(x), "weights": source,
            "relative_difference": rel}


def main(argv=None):
    a = parse(argv)
    os.makedirs(a.out, exist_ok=True)
    import torch
    device = torch.cuda.get_device_name(0) if a.device == "cuda" and torch.cuda.is_available() else "cpu"
    report = Report(a.out, f"{device}, torch {torch.__version__}")
    part(report, "1 cuda tests", lambda: cuda_tests(a))
    part(report, "2 published M-JEM iteration timed", lambda: timing(a))
    part(report, "3 fp32 against the fast path", lambda: fp32_vs_fast(a))
    part(report, "4 SIGKILL and resume", lambda: kill_and_resume(a))
    part(report, "5 exact FID features against the CPU's", lambda: exact_fid_features(a))
    print(f"report: {os.path.join(a.out, 'gpu_check.md')}")
    return 0 if all(p["status"] in ("ok", "skipped") for p in report.parts.values()) else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
