"""The checkpoint store: safetensors weights plus a JSON sidecar, keyed by what made them.

Key = hash(spec, recipe, data fingerprint, class count, trainer version): a found checkpoint is reused, never
retrained. The weights are written first and the sidecar (which holds their sha256) last, each
atomically, so a sidecar vouches for complete weights; a weights file without a sidecar is an
interrupted save and is simply redone. A run in training keeps its state after each epoch under
``in-progress/`` (the same two-file pattern), so that a killed run goes on from its last epoch;
the state goes once the checkpoint is saved. Nothing here is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bench.atomic import sha256_files, write_atomic, write_json_atomic
from bench.errors import BenchError
from bench.fields import field_problem, is_number, is_text, is_whole_or_null
from bench.profiles import Recipe
from bench.train import TRAINER_VERSION, TrainState
from models import ModelSpec, build_model

FORMAT = 1


def checkpoint_key(spec: ModelSpec, recipe: Recipe, data_fingerprint: str, num_classes: int,
                   bf16: bool = False) -> str:
    """The key of the training run (@best and @last of an adversarial run share it). ``bf16``: the
    training forward ran under bf16 autocast (bench/accel.py; CUDA's default), another model than
    float32's, so BENCH_BF16=0 beside a bf16 run trains its own rather than load that one; float32
    keys are as they were before the flag was in them."""
    fields = {"format": FORMAT, "trainer": TRAINER_VERSION, "spec": spec.run.to_dict(),
              "recipe": recipe.key_dict(spec.adversarial), "data": data_fingerprint, "num_classes": num_classes}
    if bf16:
        fields["train_precision"] = "bf16"
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# the fields a sidecar's readers use, with the type they use them as: a pace estimate adds up
# wall_s and keys on recipe and data_fingerprint, a training job's summary formats test_acc, and
# best_epoch goes into every record of the run; a hand-edited or foreign sidecar with another
# type there was a traceback in the middle of a grid
SIDECAR_TYPES = (
    (("key", "weights_sha256", "best_weights_sha256", "data_fingerprint", "dataset", "device", "profile",
      "timestamp", "code_version", "torch_version"), is_text, "a string"),
    # a report links them as checkpoints/<name>: a path there pointed the page elsewhere
    (("weights", "best_weights"), lambda v: isinstance(v, str) and v not in ("", ".", "..") and Path(v).name == v,
     "a file name"),
    (("wall_s", "test_acc"), is_number, "a number"),
    (("best_epoch", "catastrophic_overfitting_epoch", "resumed_from_epoch"), is_whole_or_null,
     "a whole number or null"),
    (("recipe",), lambda v: isinstance(v, dict), "an object"),
)


def sidecar_problem(meta) -> Optional[str]:
    """What makes parsed JSON unusable as a sidecar (its readers call .get on it and its spec,
    and read SIDECAR_TYPES' fields as those types), or None."""
    if not isinstance(meta, dict):
        return f"a JSON {type(meta).__name__}, not an object"
    if not isinstance(meta.get("spec", {}), dict):
        return f"not a sidecar (its spec is a JSON {type(meta['spec']).__name__}, not an object)"
    problem = field_problem(meta, SIDECAR_TYPES)
    return None if problem is None else f"not a sidecar (its {problem})"


def _save_file(state: Dict[str, torch.Tensor], path: Path, metadata: Dict[str, str]) -> None:
    """safetensors' save_file, its writer's I/O errors raised as the OSError a Python write gives
    (a full disk is errno 28 either way, and the CLI says so in one line: bench.errors.disk_stop)."""
    try:
        save_file(state, str(path), metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"\(os error (\d+)\)", str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from e


def _write_tensors(path: Path, state: Dict[str, torch.Tensor], run: str) -> str:
    """Tensors to ``path`` as safetensors, atomically; their sha256. One metadata entry:
    safetensors writes a map of several in a per-process random order, and the same weights
    would get another sha256 in each process."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    write_atomic(path, lambda tmp: _save_file(state, tmp, {"run": run}))
    return sha256_files([path])


class CheckpointStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def paths(self, spec: ModelSpec, key: str) -> Tuple[Path, Path]:
        """(weights, sidecar) of ``spec``: an adversarial run's @best weights sit beside its last.
        Suffixes are appended, never put in place of a "suffix": a name's dot is part of it
        (fastnet_T0.5, fastnet_T0.15)."""
        stem = f"{spec.run.name}-{key}"
        return (self.root / f"{stem}{'.best' if spec.checkpoint == 'best' else ''}.safetensors",
                self.root / f"{stem}.json")

    def _old_paths(self, spec: ModelSpec, key: str) -> Optional[Tuple[Path, Path]]:
        """Where the store's first version saved ``spec`` when that is elsewhere. It used
        ``Path.with_suffix``, which cut a name with a dot at that dot: every fractional T of an
        architecture shared ``fastnet_T0.safetensors`` and ``fastnet_T0.json``, whose sidecar
        says which run's they are. Names without a dot had the files ``paths`` gives."""
        stem = self.root / f"{spec.run.name}-{key}"
        old = (stem.with_suffix(".best.safetensors" if spec.checkpoint == "best" else ".safetensors"),
               stem.with_suffix(".json"))
        return None if old == self.paths(spec, key) else old

    def lock(self, spec: ModelSpec, key: str) -> FileLock:
        """Held while a run trains and saves, so that two processes (two grids on one store, or
        a Ray task and its retry) train it once and never interleave their writes."""
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{spec.run.name}-{key}.lock"))

    def _fix(self, weights: Path, sidecar: Path) -> str:
        """What an error about a stored run tells the user to do."""
        return f"delete {weights.name} and {sidecar.name} in {self.root} to retrain"

    def _read_sidecar(self, weights: Path, sidecar: Path) -> dict:
        try:
            meta = json.loads(sidecar.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BenchError(f"checkpoint sidecar {sidecar} is not valid JSON: {self._fix(weights, sidecar)}") from None
        except OSError as e:  # a folder by that name, say: it was an IsADirectoryError traceback
            raise BenchError(f"checkpoint sidecar {sidecar} cannot be read ({e.strerror}): "
                             f"{self._fix(weights, sidecar)}") from None
        problem = sidecar_problem(meta)
        if problem:
            raise BenchError(f"checkpoint sidecar {sidecar} is {problem}: {self._fix(weights, sidecar)}")
        return meta

    def _find(self, spec: ModelSpec, key: str) -> Optional[Tuple[Path, Path, dict]]:
        """(weights, sidecar, its content) of a saved run, or None; the sidecar is checked against
        the run it should describe, the weights are not read."""
        weights, sidecar = self.paths(spec, key)
        if sidecar.exists():
            meta = self._read_sidecar(weights, sidecar)
            if meta.get("key") != key or meta.get("spec", {}).get("name") != spec.run.name:
                raise BenchError(f"checkpoint {sidecar} belongs to {meta.get('spec', {}).get('name')!r} "
                                 f"(key {meta.get('key')}), not {spec.run.name} (key {key}): "
                                 f"{self._fix(weights, sidecar)}")
            return weights, sidecar, meta
        old = self._old_paths(spec, key)
        if old is not None and old[1].exists():
            meta = self._read_sidecar(*old)
            # the shared old files hold one run: this one, or another that trains afresh under its own name
            if meta.get("key") == key and meta.get("spec", {}).get("name") == spec.run.name:
                return (*old, meta)
        return None

    def verify(self, spec: ModelSpec, key: str) -> Optional[dict]:
        """The sidecar of ``spec``'s weights once they are checked (present, the sha256 the
        sidecar holds, a safetensors header), or None if the run was never saved; a bad file
        raises BenchError. Cheap enough for a planner to call on a whole grid before it runs."""
        found = self._verified(spec, key)
        return None if found is None else found[2]

    def _verified(self, spec: ModelSpec, key: str) -> Optional[Tuple[Path, Path, dict]]:
        found = self._find(spec, key)
        if found is None:
            return None
        weights, sidecar, meta = found
        fix = self._fix(weights, sidecar)
        if not weights.exists():
            raise BenchError(f"checkpoint weights {weights} are missing: {fix}")
        if not weights.is_file():
            raise BenchError(f"checkpoint weights {weights} are not a file: {fix}")
        sha = meta.get("best_weights_sha256" if spec.checkpoint == "best" else "weights_sha256")
        if sha256_files([weights]) != sha:
            raise BenchError(f"checkpoint {weights} is corrupt or truncated (sha256 mismatch): {fix}")
        try:  # the header only: a file that is not safetensors (a pickle, say) stops here, unread
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise BenchError(f"checkpoint {weights} is not a safetensors file ({str(e).splitlines()[0]}): "
                             f"{fix}") from None
        # the sidecar describes the run; say which of its weights these are
        return weights, sidecar, dict(meta, weights_sha256=sha, checkpoint=spec.checkpoint or "last")

    def load(self, spec: ModelSpec, key: str, num_classes: int,
             device: torch.device) -> Optional[Tuple[torch.nn.Module, dict]]:
        """The stored model and its sidecar, or None if there is none; a bad file raises BenchError."""
        found = self._verified(spec, key)
        if found is None:
            return None
        weights, sidecar, meta = found
        model = build_model(spec, num_classes)
        try:
            model.load_state_dict(load_file(str(weights)), strict=True)
        except Exception as e:  # noqa: BLE001 - safetensors/torch raise several types
            raise BenchError(f"checkpoint {weights} does not fit {spec.name} ({str(e).splitlines()[0]}): "
                             f"{self._fix(weights, sidecar)}") from None
        return model.to(device, memory_format=torch.channels_last).eval(), meta

    def files_by_sha256(self) -> Dict[str, str]:
        """{sha256: weights file name} of every saved run here, from the sidecars (the weights are
        not read): what a report links a row's weights_sha256 to."""
        out = {}
        for meta in self.sidecars():
            for name, sha in (("weights", "weights_sha256"), ("best_weights", "best_weights_sha256")):
                if isinstance(meta.get(name), str) and isinstance(meta.get(sha), str) \
                        and (self.root / meta[name]).exists():
                    out[meta[sha]] = meta[name]
        return out

    def sidecars(self) -> Iterator[dict]:
        """Every readable sidecar here, parsed. A report or an estimate does not stop on a bad
        one; loading its run says what to do."""
        for sidecar in sorted(self.root.glob("*.json")):
            try:
                meta = json.loads(sidecar.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                continue
            if sidecar_problem(meta) is None:
                yield meta

    def _partial_paths(self, spec: ModelSpec, key: str) -> Tuple[Path, Path]:
        """Where a run in progress keeps its last epoch's TrainState: a folder of their own, so
        that nothing that reads the finished runs' sidecars (reports, estimates) meets them."""
        stem = self.root / "in-progress" / f"{spec.run.name}-{key}"
        return stem.parent / f"{stem.name}.safetensors", stem.parent / f"{stem.name}.json"

    def save_partial(self, spec: ModelSpec, key: str, state: TrainState, made_by: Optional[dict] = None,
                     earlier: Sequence[dict] = ()) -> None:
        """The run's state after an epoch (its tensors, then the JSON that vouches for them, each
        atomically), replacing the previous epoch's; ``made_by``: the provenance of the process
        that trained it, for the resumed run's sidecar to name; ``earlier``: the processes before it
        (trained_before), so that a run interrupted twice still names its first machine."""
        tensors, info = self._partial_paths(spec, key)
        tensors.parent.mkdir(parents=True, exist_ok=True)
        sha = _write_tensors(tensors, state.tensors, f"{spec.run.name}-{key}")
        write_json_atomic(info, dict(state.info, key=key, spec=spec.run.to_dict(), made_by=made_by or {},
                                     earlier=list(earlier), tensors_sha256=sha))

    def load_partial(self, spec: ModelSpec, key: str) -> Optional[TrainState]:
        """The state an interrupted run of (spec, key) left, or None: none saved, or one whose
        files do not match (a process killed between the two writes), which is then retrained."""
        tensors, info = self._partial_paths(spec, key)
        try:
            meta = json.loads(info.read_text())
            if meta.get("key") != key or sha256_files([tensors]) != meta.get("tensors_sha256"):
                return None
            return TrainState(int(meta["epoch"]), load_file(str(tensors)), meta)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError):
            return None

    def partial_epoch(self, spec: ModelSpec, key: str) -> Optional[int]:
        """The epochs an interrupted run of (spec, key) has saved, from its JSON alone (what
        --dry-run says; load_partial checks the tensors against it before they are used)."""
        try:
            meta = json.loads(self._partial_paths(spec, key)[1].read_text())
            return int(meta["epoch"]) if meta.get("key") == key else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def drop_partial(self, spec: ModelSpec, key: str) -> None:
        """Once the run's checkpoint is saved (its lock held: no other process writes these)."""
        for path in self._partial_paths(spec, key):
            path.unlink(missing_ok=True)
            for stale in path.parent.glob(f".tmp-{path.name}.*"):  # a write that a kill cut short
                stale.unlink(missing_ok=True)
        try:
            path.parent.rmdir()  # when no other run is in progress
        except OSError:
            pass

    def save(self, spec: ModelSpec, key: str, model: torch.nn.Module, meta: dict,
             best_state: Optional[dict] = None) -> dict:
        """Save the last weights (and an adversarial run's best ones), then the sidecar."""
        run = spec.run
        weights, sidecar = self.paths(run, key)
        meta = dict(meta, key=key, spec=run.to_dict(), weights=weights.name,
                    weights_sha256=_write_tensors(weights, model.state_dict(), f"{run.name}-{key}"))
        if best_state is not None:
            best = self.paths(replace(run, checkpoint="best"), key)[0]
            meta.update(best_weights=best.name,
                        best_weights_sha256=_write_tensors(best, best_state, f"{run.name}-{key}"))
        write_json_atomic(sidecar, meta)
        return meta
