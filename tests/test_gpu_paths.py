"""The GPU code paths, run on the CPU: bf16 autocast in training and in the attacks' forward
passes, torch.compile of the training step, the device flag, and scripts/gpu_run.sh end to end
on a tiny grid (bench/accel.py says what is CUDA-only by default)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from attacks import make_attack
from attacks.precision import AutocastView, autocast_view
from bench.accel import Accel
from bench.data import to_float
from bench.errors import BenchError
from bench.profiles import Recipe
from bench.tools.selfcheck import scaled_last_layer
from bench.train import standard_step, train
from models import parse_name

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_accel_is_on_for_cuda_only_and_overridable():
    assert Accel.for_device(CPU, env={}) == Accel(bf16=False, attack_bf16=False, compile=False)
    assert Accel.for_device(torch.device("cuda"), env={}) == Accel(bf16=True, attack_bf16=False, compile=True)
    assert Accel.for_device(torch.device("cuda"), env={"BENCH_ATTACK_BF16": "1"}).attack_bf16
    assert not Accel.for_device(torch.device("cuda"), env={"BENCH_COMPILE": "0"}).compile
    assert Accel.for_device(CPU, env={"BENCH_BF16": "1"}).bf16
    with pytest.raises(BenchError, match="BENCH_BF16='yes': use auto, 1 or 0"):
        Accel.for_device(CPU, env={"BENCH_BF16": "yes"})


def test_cudnn_benchmark_only_while_training():
    """On while a CUDA model trains (one batch shape), off again for the attacks (a new shape
    each step of an early-stopped attack would be benchmarked anew)."""
    before = torch.backends.cudnn.benchmark
    with Accel().training(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    with Accel().training(CPU):
        assert torch.backends.cudnn.benchmark == before


def _conv_dtypes():
    """The dtypes the convolutions of every model compute in, while the context is open."""
    seen = set()

    def hook(module, args, out):
        if isinstance(module, torch.nn.Conv2d):
            seen.add(out.dtype)
    return seen, torch.nn.modules.module.register_module_forward_hook(hook)


def test_bf16_autocast_training_runs_and_learns(mini_data):
    seen, handle = _conv_dtypes()
    try:
        # 4 epochs: after 2 the bf16 run's loss was 2.13 on one thread and 2.26 on two (a lone
        # pytest), too near the bar below; after 4, 1.93 and 2.04
        result = train(parse_name("fastnetw8_T2"), Recipe(epochs=4, batch_size=32, lr=0.1, train_subset=512),
                       mini_data, CPU, accel=Accel(bf16=True))
    finally:
        handle.remove()
    assert seen == {torch.bfloat16}
    assert torch.isfinite(torch.tensor(result.final_train_loss))
    assert result.final_train_loss < 2.25  # below chance's ln(10) = 2.30: the bf16 steps learned
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # master weights stay fp32


def test_a_bf16_training_run_is_its_own_checkpoint(mini_root, tmp_path, monkeypatch):
    """BENCH_BF16 (CUDA's default) trains another model than float32: one key for both loaded the
    bf16 weights into a float32 run without a word. Each has its key and its sidecar says which."""
    from bench.checkpoints import CheckpointStore
    from bench.run import main
    args = ["--profile", "smoke", "--model", "fastnetw8_T1", "--attack", "none", "--data-root", str(mini_root),
            "--cache", str(tmp_path / "c"), "--results", str(tmp_path / "out"), "--no-progress", "--tables-only"]
    monkeypatch.setenv("BENCH_BF16", "1")
    assert main(args) == 0
    monkeypatch.setenv("BENCH_BF16", "0")
    assert main(args) == 0
    sidecars = {m["key"]: m for m in CheckpointStore(tmp_path / "c" / "checkpoints").sidecars()}
    assert len(sidecars) == 2 and sorted(m["train_bf16"] for m in sidecars.values()) == [False, True]
    assert all(m["train_compile"] is False for m in sidecars.values())


def test_standard_step_keeps_the_loss_in_float32(mini_data):
    model = train(parse_name("fastnetw8_T1"), Recipe(epochs=1, batch_size=64, train_subset=128), mini_data, CPU).model
    x, y = to_float(mini_data.test.images[:32]), mini_data.test.labels[:32]
    loss, logits = standard_step(model.train(), x, y, 5.0, False, 0.0, True)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32


@pytest.fixture(scope="module")
def hot_model(tiny_model):
    """tiny_model with its logits x20, as a training at T=20 leaves them (they grow ~T-fold): the
    raw view's softmax saturates, where precision could matter most. The same decisions as
    tiny_model, so the scale is all that differs between the two cases."""
    return scaled_last_layer(tiny_model[1], 20)


def _pgd_robust(model, target, x, y, eps):
    """Plain PGD (its last iterate) crafted on ``target`` (a view), judged by the float32
    ``model``: bf16 crafts, float32 decides. Early-stopped PGD would decide when to stop on the
    view's bf16 logits (attacks/precision.py)."""
    attack = make_attack("pgd", {"eps": eps, "alpha": eps / 2, "steps": 3, "early_stop": False})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x_adv = attack.build(target, n_classes=10, seed=0)(x, y)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y) & (model(x).argmax(1) == y)


def test_bf16_attack_view_robust_accuracy_within_half_a_point(tiny_model, hot_model, mini_data):
    # 600 images (the 500 test images and 100 training images): 0.5 pp is 3 images. bf16 is
    # emulated on a CPU without AVX-512 BF16, the suite's slowest arithmetic: 600 x 3 steps
    idx = torch.arange(0, len(mini_data.train), 20)
    x = torch.cat([to_float(mini_data.test.images), to_float(mini_data.train.images[idx])])
    y = torch.cat([mini_data.test.labels, mini_data.train.labels[idx]])
    assert len(y) == 600
    # the raw view (the model itself): with logits x20 its softmax saturates (exactly 1.0 in float32
    # on a fifth of the images; on none as trained), where a precision effect would show first
    with torch.no_grad():
        saturated = [(torch.softmax(m.eval()(x), 1).amax(1) == 1).float().mean().item()
                     for m in (tiny_model[1], hot_model)]
    assert saturated[0] == 0 and saturated[1] > 0.1, saturated
    for name, model in (("as trained", tiny_model[1]), ("logits x20", hot_model)):
        model.eval()
        half = AutocastView(model, "cpu")
        assert half(x[:8]).dtype == torch.float32  # the attack's loss sees float32 logits
        acc32 = _pgd_robust(model, model, x, y, 2 / 255).float().mean().item()
        acc16 = _pgd_robust(model, half, x, y, 2 / 255).float().mean().item()
        # mid-range robustness (eps 2/255), so that a precision effect would show
        assert 0.05 < acc32 < 0.9, (name, acc32)
        assert abs(acc32 - acc16) <= 0.005, (name, acc32, acc16)
        assert not model.training  # the view put the model's mode back


def test_autocast_view_is_opt_in(tiny_model, monkeypatch):
    _, model = tiny_model
    assert autocast_view(model) is model
    monkeypatch.setenv("BENCH_ATTACK_BF16", "1")
    assert isinstance(autocast_view(model), AutocastView)


def test_compiled_training_step_matches_eager_and_compiles_once(mini_data):
    """torch.compile of the training step (aot_eager here: Inductor's code generation took 257 s
    on this CPU; bench/accel.py): the same loss, logits and gradients as eager, and one graph
    for two training runs at two temperatures."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    accel = Accel(compile=True, compile_backend="aot_eager")
    step = accel.compiled(standard_step)
    model = train(parse_name("fastnetw8_T1"), Recipe(epochs=1, batch_size=64, train_subset=256), mini_data,
                  CPU).model
    x, y = to_float(mini_data.test.images[:64]), mini_data.test.labels[:64]
    x = x.contiguous(memory_format=torch.channels_last)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        outs = []
        for fn in (standard_step, step):
            model.zero_grad()
            loss, logits = fn(model, x, y, torch.tensor(3.0), True, 0.0, False)
            loss.backward()
            outs.append((loss.detach(), logits.detach(), [p.grad.clone() for p in model.parameters()]))
        (l0, z0, g0), (l1, z1, g1) = outs
        torch.testing.assert_close(z1, z0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-6)
        for a, b in zip(g1, g0):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    recipe = Recipe(epochs=1, batch_size=64, train_subset=256)
    train(parse_name("fastnetw8_T2"), recipe, mini_data, CPU, accel=accel)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    eager = train(parse_name("fastnetw8_T5"), recipe, mini_data, CPU).model
    compiled = train(parse_name("fastnetw8_T5"), recipe, mini_data, CPU, accel=accel).model
    assert counters["stats"]["unique_graphs"] == graphs  # a new model and a new T: no recompile
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-3, atol=1e-3)


def test_device_flag_cuda_without_a_gpu_is_one_line_and_writes_nothing(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from bench.run import main
    assert main(["--profile", "smoke", "--device", "cuda", "--results", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --device cuda asked for, but torch sees no GPU: use --device cpu"
    assert not any(tmp_path.iterdir())


DRY_PROFILE = """
name = "gpu-dry"
[recipe]
epochs = 1
batch_size = 64
train_subset = 256
[eval]
n = 40
batch_size = 100
attacks = ["fgsm", "pgd"]
views = ["raw", "scaled"]
eps_sweep = ["2/255", "8/255"]
sweep_attacks = ["pgd"]
fp64_n = 10
corruptions = "generated"
corruption_names = ["gaussian_noise", "contrast"]
severities = [1, 5]
natural = ["brightness"]
[attack.pgd]
steps = 2
[[grid]]
arch = "fastnetw8"
"""


def _dry_run(tmp_path, mini_root, temperatures: str, out: str, **env_extra):
    carry = tmp_path / "carry"
    carry.mkdir(exist_ok=True)
    pack = carry / "cifar10-mini.tar.gz"
    if not pack.exists():  # the data carried as scripts/gpu_wheels.sh packs it
        with tarfile.open(pack, "w:gz") as tar:
            tar.add(mini_root, arcname="cifar10-mini")
    profile = tmp_path / "gpu-dry.toml"
    profile.write_text(DRY_PROFILE + f"T = {temperatures}\n")
    env = dict(os.environ, OUT=str(tmp_path / out), GPU_PROFILE=str(profile), GPU_DEVICE="cpu",
               GPU_RESULTS=str(tmp_path / "results" / "gpu"), GPU_WORK=str(tmp_path / "work"),
               GPU_CARRY=str(carry), PYTHON=sys.executable, **env_extra)
    env.pop("BENCH_DATA", None)
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp_path / out, json.loads((tmp_path / out / "provenance.json").read_text())


def test_gpu_run_dry_run_on_the_cpu(tmp_path, mini_root):
    """scripts/gpu_run.sh as a GPU window runs it, on the CPU with a tiny grid and the data
    carried as a tar.gz: what comes back in $OUT; then a later call with a bigger grid, stopped by
    its time limit, on a fresh copy of the repository: it restores the store the first call kept
    in the scratch folder, keeps what that call finished and still packs its provenance."""
    out, prov = _dry_run(tmp_path, mini_root, "[1]", "out1")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_results.tar.gz", "leaderboard.csv", "provenance.json", "run.log"]
    assert all(p.stat().st_size < 16 * 2 ** 20 for p in out.iterdir())
    assert prov["status"] == "finished" and prov["jobs_done"] == prov["jobs"] > 5
    assert prov["device"] == "cpu" and prov["torch"] == torch.__version__ and prov["wall_s"] > 0
    assert prov["code_version"] not in ("", "unknown") and prov["data"] == "cifar10-mini"
    assert prov["models_finished"] == ["fastnetw8_T1"]
    assert prov["models"]["fastnetw8_T1"]["train_s"] > 0 and prov["models"]["fastnetw8_T1"]["eval_s"] > 0
    with tarfile.open(out / "gpu_results.tar.gz") as tar:
        names = tar.getnames()
    assert {"gpu/provenance.json", "gpu/leaderboard.csv", "gpu/index.html"} <= set(names)
    assert sum(n.startswith("gpu/records/") for n in names) >= 10
    assert [n for n in names if n.startswith("gpu/checkpoints/")] and \
        all(n.endswith(".json") for n in names if n.startswith("gpu/checkpoints/"))  # sidecars, no weights
    assert "grid exit 0" in (out / "run.log").read_text()

    # a later call on the same warm machine: a fresh copy of the repository (no results/gpu) but
    # the same scratch folder, from which the store comes back. The grid is stopped before it can
    # measure anything, so every job counted done is one the first call finished (one run of
    # the script fewer than resuming to the end: ~30 s of `make test`; test_cli checks that a
    # rerun over a complete store has nothing to run)
    shutil.rmtree(tmp_path / "results")
    out, stopped = _dry_run(tmp_path, mini_root, "[1, 10]", "out2", GPU_GRID_LIMIT_S="1")
    log = (out / "run.log").read_text()
    assert "store restored from" in log, log[-2000:]
    assert stopped["status"].startswith("stopped at the time limit")
    assert stopped["jobs_done"] == prov["jobs_done"] < stopped["jobs"]  # what finished is kept
    assert stopped["models_finished"] == ["fastnetw8_T1"]
    assert (out / "gpu_results.tar.gz").exists()


def test_gpu_run_without_out_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh")], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "OUT is not set" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_gpu_profile_loads_and_its_grid_is_the_issues():
    from bench.profiles import load_profile
    p = load_profile("gpu")
    names = set(p.models)
    assert {f"fastnetw64_T{t:g}" for t in (0.5, 1, 2, 5, 10, 20, 50)} <= names
    assert {f"fastnetw64_T{t}_s{s}" for t in (1, 5, 20) for s in (1, 2)} <= names
    assert any(n.endswith("_lrT") for n in names)
    assert p.models[-2:] == ("resnet18_T1", "resnet18_T10")  # last: what the window may not reach


def test_gpu_tree_hides_results_from_a_device_call_and_restores_them(tmp_path):
    """scripts/gpu_tree.sh in a scratch repository: `hide` leaves results/ on disk but out of both
    lists a device call sends (tracked, untracked-not-ignored); `restore` gives back the index
    and the exclude file as they were."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "results" / "cpu").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "gpu_tree.sh", repo / "scripts")
    (repo / "results" / "cpu" / "records.json").write_text("{}")
    (repo / "bench.py").write_text("")
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True).stdout
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    sent = lambda: git("ls-files", "--cached", "--others", "--exclude-standard").split()
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    tree = lambda *a: subprocess.run(["bash", "scripts/gpu_tree.sh", *a], cwd=repo, capture_output=True, text=True)

    r = tree("hide")
    assert r.returncode == 0 and "restore" in r.stdout
    assert sent() == ["bench.py", "scripts/gpu_tree.sh"] and (repo / "results" / "cpu" / "records.json").exists()
    assert tree("hide").returncode == 0 and sent() == ["bench.py", "scripts/gpu_tree.sh"]  # twice is fine
    assert tree("status").stdout.startswith("hidden")
    assert tree("restore").returncode == 0
    assert "results/cpu/records.json" in sent() and git("status", "--porcelain") == ""
    assert (repo / ".git" / "info" / "exclude").read_text() == exclude
    r = tree("nonsense")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert tree("check").returncode == 0
    with open(repo / "big.bin", "wb") as f:  # sparse: 65 MiB by size, nothing on disk
        f.truncate(65 * 2 ** 20)
    r = tree("check")
    assert r.returncode == 1 and "gpu_tree.sh hide" in r.stderr and "65 MiB" in r.stdout
