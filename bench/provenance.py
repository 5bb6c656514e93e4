"""Where a number came from: code version, torch version, device (with the CPU's capability and
thread count, which change a seeded run's weights), time."""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import torch

# torch is imported where a function needs it: code_version alone (scripts/gpu_window.py's
# code-version, once per GPU window) must not pay torch's ~2.5 s import
REPO = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """The git commit, with '-dirty' when tracked code differs from it; outside git,
    $BENCH_CODE_VERSION or 'unknown'.
    results/ is data the code writes, not code: a run that replaces the committed results must
    not call its own code dirty; nor do edits of the documentation (*.md) make it so."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        # --no-optional-locks: status otherwise takes .git/index.lock to refresh the index, and a run
        # killed meanwhile (SIGKILL, as test_faults does) left the lock, stopping the user's next commit
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!results", ":!*.md"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        # a copy without .git, e.g. a GPU window's: scripts/gpu_run.sh says which commit it is
        return os.environ.get("BENCH_CODE_VERSION") or "unknown"


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name as the OS reports it ('AMD EPYC', 'Intel(R) Xeon(R) ...')."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def cpu_capability() -> str:
    """The vector kernels torch dispatches to here (AVX512, AVX2, DEFAULT...): the same seed gives
    other weights, and the same code other speeds, on another capability. The convolutions are
    oneDNN's and the matrix products MKL's, which pick their own instruction sets: capped by
    ONEDNN_MAX_CPU_ISA or MKL_ENABLE_INSTRUCTIONS (read once, at start-up) they are named too, e.g.
    'AVX2, oneDNN AVX2, MKL AVX2' for an AVX2 box emulated on a newer one (`make ISA=avx2`)."""
    import torch
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch < 2.1
        capability = "unknown"
    onednn_capped = False
    for lib, names in (("oneDNN", ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")), ("MKL", ("MKL_ENABLE_INSTRUCTIONS",))):
        cap = next((os.environ[n] for n in names if os.environ.get(n)), "").strip().upper()
        if not cap or cap in ("ALL", "DEFAULT"):
            continue
        if lib == "oneDNN" and not _ONEDNN_ISA.fullmatch(cap):  # oneDNN ignores a name it does not know
            capability += f", oneDNN {cap} ignored"
            continue
        onednn_capped |= lib == "oneDNN"
        capability += f", {lib} {cap}"
    # torch's own kernels capped (ATEN_CPU_CAPABILITY=avx2) on an AVX-512 CPU read "AVX2", as an
    # AVX2-only box does, while the convolutions (oneDNN) ran AVX-512: said, unless oneDNN is capped too
    is_avx512 = getattr(getattr(torch, "cpu", None), "_is_avx512_supported", lambda: False)
    if capability.split(",")[0] in ("AVX2", "DEFAULT") and not onednn_capped and is_avx512():
        capability += ", oneDNN AVX512"
    return capability


# the levels ONEDNN_MAX_CPU_ISA takes (oneDNN's docs, "CPU ISA hints")
_ONEDNN_ISA = re.compile(r"SSE41|AVX|AVX2(_VNNI(_2)?)?|AVX512_CORE(_VNNI|_BF16|_FP16|_AMX(_FP16)?)?"
                         r"|AVX10_\d+_512(_AMX(_FP16|_2)?)?")


# the separator of several device names in one field or line: a device name has commas of its own
# ("cpu AMD EPYC (AVX2, 2 threads)")
DEVICE_SEP = "; "


def device_name(device: torch.device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {cpu_model()} ({cpu_capability()}, {torch.get_num_threads()} threads)"


def avx2_cap_may_match(theirs: Iterable[str], here: str) -> bool:
    """Whether capping this CPU at AVX2 (`make ISA=avx2`) may train the weights of the machines
    ``theirs`` names (device_name strings): ``here`` is an uncapped AVX-512 CPU, and each of them an
    AVX2 one of the same model and thread count. On a 2-core AMD EPYC with AVX-512 the cap gave the
    AVX2 EPYCs' weights for all 14 quick-profile models; on an Intel Xeon it gave other ones (README,
    Reproducibility), hence "may"."""
    m = re.fullmatch(r"cpu (.+) \(AVX512, (\d+) threads\)", here)
    theirs = list(theirs)
    return bool(m and theirs) and all(
        re.fullmatch(rf"cpu {re.escape(m[1])} \(AVX2(, oneDNN AVX2, MKL AVX2)?, {m[2]} threads\)", d) for d in theirs)


def provenance(device: torch.device) -> dict:
    import torch
    return {"code_version": code_version(), "torch_version": torch.__version__, "device": device_name(device),
            "cpu_capability": cpu_capability(), "cpu_model": cpu_model(), "threads": torch.get_num_threads(),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
