"""The checkpoint store: safetensors weights plus a JSON sidecar, keyed by what made them.

Key = hash(spec, recipe, data fingerprint, class count, trainer version): a found checkpoint is reused, never
retrained. The weights are written first and the sidecar (which holds their sha256) last, each
atomically, so a sidecar vouches for complete weights; a weights file without a sidecar is an
interrupted save and is simply redone. Nothing here is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from bench.atomic import write_atomic, write_json_atomic
from bench.errors import BenchError
from bench.profiles import Recipe
from bench.train import TRAINER_VERSION
from models import ModelSpec, build_model

FORMAT = 1


def checkpoint_key(spec: ModelSpec, recipe: Recipe, data_fingerprint: str, num_classes: int) -> str:
    blob = json.dumps({"format": FORMAT, "trainer": TRAINER_VERSION, "spec": spec.to_dict(),
                       "recipe": recipe.to_dict(), "data": data_fingerprint, "num_classes": num_classes},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CheckpointStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def paths(self, spec: ModelSpec, key: str) -> Tuple[Path, Path]:
        stem = self.root / f"{spec.name}-{key}"
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    def load(self, spec: ModelSpec, key: str, num_classes: int,
             device: torch.device) -> Optional[Tuple[torch.nn.Module, dict]]:
        """The stored model and its sidecar, or None if there is none; a bad file raises BenchError."""
        weights, sidecar = self.paths(spec, key)
        if not sidecar.exists():
            return None
        fix = f"delete {weights.name} and {sidecar.name} in {self.root} to retrain"
        try:
            meta = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BenchError(f"checkpoint sidecar {sidecar} is not valid JSON: {fix}") from None
        if meta.get("key") != key or meta.get("spec", {}).get("name") != spec.name:
            raise BenchError(f"checkpoint {sidecar} belongs to {meta.get('spec', {}).get('name')!r} "
                             f"(key {meta.get('key')}), not {spec.name} (key {key}): {fix}")
        if not weights.exists():
            raise BenchError(f"checkpoint weights {weights} are missing: {fix}")
        if sha256_file(weights) != meta.get("weights_sha256"):
            raise BenchError(f"checkpoint {weights} is corrupt or truncated (sha256 mismatch): {fix}")
        model = build_model(spec, num_classes)
        try:
            model.load_state_dict(load_file(str(weights)), strict=True)
        except Exception as e:  # noqa: BLE001 - safetensors/torch raise several types
            raise BenchError(f"checkpoint {weights} does not fit {spec.name} ({str(e).splitlines()[0]}): {fix}") from None
        model = model.to(device, memory_format=torch.channels_last).eval()
        return model, meta

    def save(self, spec: ModelSpec, key: str, model: torch.nn.Module, meta: dict) -> dict:
        weights, sidecar = self.paths(spec, key)
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        write_atomic(weights, lambda tmp: save_file(state, str(tmp), metadata={"name": spec.name, "key": key}))
        meta = dict(meta, key=key, spec=spec.to_dict(), weights=weights.name, weights_sha256=sha256_file(weights))
        write_json_atomic(sidecar, meta)
        return meta
