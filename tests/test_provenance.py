"""Provenance names the kernels a number was computed with: torch's capability, and oneDNN's and
MKL's caps when set (the instruction sets of the convolutions and matrix products, which move
seeded weights and speeds)."""
import os
import subprocess
import sys

import torch

from bench.provenance import avx2_cap_may_match, cpu_capability


def test_capability_is_torchs_without_a_onednn_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    assert cpu_capability() == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "all")  # oneDNN's own default: nothing capped
    assert cpu_capability() == torch.backends.cpu.get_cpu_capability()


def _capability(**env) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                                                             "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")}
    code = "from bench.provenance import cpu_capability; print(cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=dict(full, **env), capture_output=True, text=True,
                          check=True).stdout.strip()


def test_torchs_kernels_capped_alone_do_not_read_as_an_avx2_box():
    """ATEN_CPU_CAPABILITY=avx2 alone on an AVX-512 CPU printed "AVX2", as an AVX2-only box does,
    while oneDNN ran the convolutions on AVX-512; a level oneDNN does not know (and ignores) was
    named as a cap."""
    hardware_avx512 = torch.cpu._is_avx512_supported()
    aten_only = _capability(ATEN_CPU_CAPABILITY="avx2")
    assert aten_only == ("AVX2, oneDNN AVX512" if hardware_avx512 else torch.backends.cpu.get_cpu_capability())
    assert _capability(ONEDNN_MAX_CPU_ISA="bogus").endswith(", oneDNN BOGUS ignored")
    assert _capability(ONEDNN_MAX_CPU_ISA="avx512_core_amx").endswith(", oneDNN AVX512_CORE_AMX")


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


def test_the_avx2_cap_is_suggested_only_where_it_may_give_the_stores_weights():
    """The grid's note on evaluations held from another machine's training suggests `make
    ISA=avx2` only on an uncapped AVX-512 CPU whose records came from AVX2 ones of the same model
    and thread count (an AVX-512 EPYC capped at AVX2 trained the AVX2 EPYCs' quick-profile weights)."""
    here = "cpu AMD EPYC (AVX512, 2 threads)"
    assert avx2_cap_may_match(["cpu AMD EPYC (AVX2, 2 threads)"], here)
    capped = "cpu AMD EPYC (AVX2, oneDNN AVX2, MKL AVX2, 2 threads)"  # a store made partly under the cap itself
    assert avx2_cap_may_match(["cpu AMD EPYC (AVX2, 2 threads)", capped], here)
    for theirs, mine in [(["cpu AMD EPYC (AVX2, 4 threads)"], here),  # other threads: other weights anyway
                         (["cpu AMD EPYC (AVX2, 2 threads)", "cpu AMD EPYC (AVX512, 2 threads)"], here),
                         (["cpu Intel(R) Xeon(R) Platinum (AVX2, 2 threads)"], here),  # another model
                         ([], here),
                         (["cpu AMD EPYC (AVX2, 2 threads)"], "cpu AMD EPYC (AVX512, oneDNN AVX2, 2 threads)"),
                         (["cpu AMD EPYC (AVX2, 2 threads)"], "cpu AMD EPYC (AVX2, 2 threads)"),
                         (["cpu AMD EPYC (AVX2, 2 threads)"], "NVIDIA H200")]:
        assert not avx2_cap_may_match(theirs, mine), (theirs, mine)


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
