"""A caller's own network as a model of the grid: loaded, never trained, named by the caller and
told apart by the sha256 of its weights (two different networks never share records)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from models.registry import LoadedSpec


@dataclass(frozen=True)
class ExternalSpec(LoadedSpec):
    regime: str = "external"
    model: Any = field(default=None, compare=False, repr=False)  # the torch.nn.Module, in this process
    weights_sha256: str = ""
    T_source: str = "given"  # "given", or "estimated" by post-hoc temperature scaling
    arch: str = "external"
    source: str = "python"  # "python", or the weights file it was loaded from


def weights_sha256(model: torch.nn.Module) -> str:
    """One sha256 over the state dict (names, dtypes, shapes and values, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
