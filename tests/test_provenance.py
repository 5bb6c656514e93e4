"""Provenance names the kernels a number was computed with: torch's capability, and oneDNN's and
MKL's caps when set (the instruction sets of the convolutions and matrix products, which move
seeded weights and speeds)."""
import os
import subprocess
import sys

import torch

from bench.provenance import cpu_capability


def test_capability_is_torchs_without_a_onednn_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    assert cpu_capability() == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "all")  # oneDNN's own default: nothing capped
    assert cpu_capability() == torch.backends.cpu.get_cpu_capability()


def test_an_emulated_avx2_box_says_so():
    """ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA set at start-up, as README's Speed section does."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    env.pop("DNNL_MAX_CPU_ISA", None)
    code = "import torch; from bench.provenance import device_name; print(device_name(torch.device('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    host = torch.backends.cpu.get_cpu_capability()
    # a CPU without AVX2 falls back to its own capability: the cap is only a ceiling
    expected = "AVX2" if host.startswith(("AVX2", "AVX512")) else host
    assert f"({expected}, oneDNN AVX2, MKL AVX2, " in out, out


def test_the_code_version_leaves_the_git_index_alone(tmp_path, monkeypatch):
    """`git status` refreshes a stale index by writing it under .git/index.lock; a run killed
    meanwhile (test_faults' SIGKILLs) left the lock behind, and the user's next commit failed."""
    import time

    import bench.provenance as provenance
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f.py").write_text("a\n")
    subprocess.run([*git, "add", "f.py"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    stamp = (tmp_path / ".git" / "index").stat().st_mtime_ns
    time.sleep(0.05)
    os.utime(tmp_path / "f.py")  # a file newer than the index: plain `git status` rewrites it
    monkeypatch.setattr(provenance, "REPO", tmp_path)
    assert not provenance.code_version.__wrapped__().endswith("-dirty")  # the same bytes: not dirty
    assert (tmp_path / ".git" / "index").stat().st_mtime_ns == stamp
