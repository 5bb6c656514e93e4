"""Where a number came from: code version, torch version, device, time."""
from __future__ import annotations

import datetime as _dt
import functools
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """The git commit, with '-dirty' when tracked code differs from it; 'unknown' outside git.
    results/ is data the code writes, not code: a run that replaces the committed results must
    not call its own code dirty."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def provenance(device: torch.device) -> dict:
    return {"code_version": code_version(), "torch_version": torch.__version__, "device": device_name(device),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
