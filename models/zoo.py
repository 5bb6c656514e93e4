"""RobustBench zoo models as harness models: ``--model robustbench:<Name>`` (e.g. robustbench:Standard).

The one place that knows about robustbench. It loads a model through robustbench's own
``load_model(model_name, model_dir, dataset, threat_model)``, so the architecture, the checkpoint
layout (``<model_dir>/<dataset>/<threat>/<Name>.pt``) and the state-dict fixes are RobustBench's,
and handles three packaging problems of robustbench 1.1.1 (PyPI):

* ``robustbench/__init__.py`` imports ``robustbench.eval``, which does ``from autoattack import
  AutoAttack``: its dependency ``pyautoattack`` installs a module of another name and API; and
  ``robustbench.data`` -> ``loaders`` imports ``pkg_resources``, gone from setuptools >= 81. Loading
  a model needs neither: it lives in ``robustbench.utils`` and ``robustbench.model_zoo``. So the
  package is imported *without running its __init__* (a package module made from its spec, its
  submodules found on its path), and that module is taken out of sys.modules again afterwards,
  so a later ``import robustbench`` behaves exactly as it would have.
* ``load_model`` calls ``torch.load`` without ``weights_only``: a downloaded checkpoint is a
  pickle and could run code. During the load, robustbench.utils sees a ``torch`` whose ``load``
  always passes ``weights_only=True``; a checkpoint that needs more than tensors and plain
  containers is refused.
* a missing checkpoint is downloaded from Google Drive (robustbench's gdown); offline that fails,
  and the error says where to put the file.

Every failure is one BenchError line. A zoo model takes inputs in [0, 1] and returns logits
(RobustBench's convention: normalisation inside), like the harness's own models, so
bench.measure.adversarial.evaluate and the attack registry work on it unchanged. Its training temperature is
taken as 1 (CE-trained): the raw and scaled views coincide.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import pickle
import sys
import warnings
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import torch

from bench.atomic import sha256_files
from bench.errors import BenchError
from models.registry import LoadedSpec

PREFIX = "robustbench:"
INSTALL_HINT = "pip install -e '.[robustbench]'"


def is_zoo_name(name: str) -> bool:
    return str(name).startswith(PREFIX)


@dataclass(frozen=True)
class ZooSpec(LoadedSpec):
    """A RobustBench zoo model (robustbench:<Name>): T = 1, so the raw and scaled views coincide."""

    def __post_init__(self):
        # a malformed or unknown name fails here, at planning (--dry-run too), not when its job
        # runs after the results folder, logs and data cache are written; the zoo's list ships
        # with robustbench, so this reads no network. The grid loads every zoo model as
        # cifar10/Linf (load_zoo_model's defaults): the same list is checked here.
        _entry(_robustbench_utils(), zoo_name(self.name), "cifar10", "Linf")


def zoo_name(name: str) -> str:
    """robustbench:Standard -> Standard."""
    bare = str(name)[len(PREFIX):] if is_zoo_name(name) else str(name)
    if not bare:
        raise BenchError(f"malformed zoo model name {name!r}: expected robustbench:<Name>, e.g. robustbench:Standard")
    return bare


def _robustbench_utils():
    """robustbench.utils (load_model, the zoo's model_dicts, the enums) without running
    robustbench/__init__.py (see the module docstring)."""
    if "robustbench.utils" in sys.modules:
        return sys.modules["robustbench.utils"]
    try:
        spec = importlib.util.find_spec("robustbench")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(f"robustbench is not installed: {INSTALL_HINT}")
    stub = "robustbench" not in sys.modules
    if stub:
        sys.modules["robustbench"] = importlib.util.module_from_spec(spec)
    try:
        with warnings.catch_warnings():
            # its architectures re-register timm names and use torch.jit.interface: noise, not news
            warnings.simplefilter("ignore")
            return importlib.import_module("robustbench.utils")
    except ImportError as e:
        raise BenchError(f"robustbench is installed but cannot be imported ({e}); reinstall it: {INSTALL_HINT}") \
            from None
    finally:
        if stub:
            sys.modules.pop("robustbench", None)


class _WeightsOnlyTorch:
    """torch as robustbench.utils sees it while it loads: torch.load never unpickles objects."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        return torch.load(f, *args, **kwargs)


@contextmanager
def _weights_only(utils):
    real = utils.torch
    utils.torch = _WeightsOnlyTorch()
    try:
        yield
    finally:
        utils.torch = real


def _zoo(utils, dataset: str, threat_model: str):
    try:
        ds, tm = utils.BenchmarkDataset(dataset), utils.ThreatModel(threat_model)
    except ValueError:
        raise BenchError(f"RobustBench has no {dataset}/{threat_model} zoo (datasets: "
                         f"{', '.join(d.value for d in utils.BenchmarkDataset)}; threat models: "
                         f"{', '.join(t.value for t in utils.ThreatModel)})") from None
    return utils.all_models[ds][tm]


def zoo_models(dataset: str = "cifar10", threat_model: str = "Linf") -> List[str]:
    """The names RobustBench's zoo has for a dataset and threat model."""
    return list(_zoo(_robustbench_utils(), dataset, threat_model))


def zoo_run_key(weights_sha256: str) -> str:
    """A zoo model's run key: its weights' hash, so that a store's records are found again from
    the checkpoint files alone (--dry-run), before the model is loaded."""
    return "rb" + weights_sha256[:14]


def checkpoint_paths(name: str, model_dir, dataset: str = "cifar10", threat_model: str = "Linf") -> List[Path]:
    """Where robustbench's load_model looks for a model's weights (one file, or one per member of
    an ensemble)."""
    utils = _robustbench_utils()
    entry = _entry(utils, zoo_name(name), dataset, threat_model)
    path = Path(model_dir) / dataset / threat_model / f"{zoo_name(name)}.pt"
    ids = entry["gdrive_id"]
    return [Path(f"{path}_m{i}.pt") for i in range(len(ids))] if isinstance(ids, list) else [path]


def _entry(utils, bare: str, dataset: str, threat_model: str) -> dict:
    zoo = _zoo(utils, dataset, threat_model)
    if bare not in zoo:
        near = difflib.get_close_matches(bare, list(zoo), n=3, cutoff=0.5)
        raise BenchError(f"unknown RobustBench model {bare!r} for {dataset}/{threat_model}"
                         + (f" (nearest: {', '.join(near)})" if near else f" ({len(zoo)} models, e.g. Standard)")
                         + f"; list them with: python -c \"from models.zoo import zoo_models; "
                           f"print(*zoo_models({dataset!r}, {threat_model!r}), sep='\\n')\"")
    return zoo[bare]


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("robustbench")
    except PackageNotFoundError:
        return "?"


def _feature_dim(module: torch.nn.Module):
    last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return int(last[-1].in_features) if last else None


def load_zoo_model(name: str, model_dir, device, dataset: str = "cifar10", threat_model: str = "Linf",
                   download: bool = True) -> Tuple[torch.nn.Module, Dict]:
    """(model in eval mode on ``device``, info) for ``robustbench:<Name>``. The weights are read from
    ``<model_dir>/<dataset>/<threat_model>/<Name>.pt`` (RobustBench's layout), downloaded there
    first when missing and ``download`` is true. ``info`` holds the leaderboard's identity columns
    and the weights' sha256 (``run_key`` is derived from it)."""
    utils = _robustbench_utils()
    bare = zoo_name(name)
    entry = _entry(utils, bare, dataset, threat_model)
    if entry["gdrive_id"] is None:
        raise BenchError(f"robustbench:{bare} is served by timm from the Hugging Face hub, not from a checkpoint "
                         f"file; load it with timm directly")
    paths = checkpoint_paths(bare, model_dir, dataset, threat_model)
    missing = [p for p in paths if not p.is_file()]
    where = ", ".join(str(p) for p in missing)
    if missing and not download:
        raise BenchError(f"no checkpoint for robustbench:{bare}: put RobustBench's file at {where}")
    try:
        # robustbench prints its download progress on stdout: keep stdout for the harness's tables
        with _weights_only(utils), warnings.catch_warnings(), redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            model = utils.load_model(bare, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    except pickle.UnpicklingError:
        raise BenchError(f"{paths[0]} holds more than tensors and plain containers (a pickle that would build "
                         f"objects or run code): refusing to load it") from None
    except Exception as e:  # noqa: BLE001 - download and file errors from requests, gdown, torch
        for p in missing:  # a failed download may leave a partial file behind
            if p.is_file():
                p.unlink()
        if missing:
            raise BenchError(f"could not download the checkpoint of robustbench:{bare} ({type(e).__name__}); "
                             f"offline, put RobustBench's file at {where}") from None
        raise BenchError(f"cannot load robustbench:{bare} from {paths[0]}: {str(e).splitlines()[0][:200]}") from None
    model = model.to(device).eval()
    sha = sha256_files(paths)
    num_classes = getattr(utils, "DATASET_CLASSES", {}).get(utils.BenchmarkDataset(dataset))
    info = {
        "model": f"{PREFIX}{bare}",
        "arch": f"{PREFIX}{bare}",  # each zoo model is a family of its own: it has no temperature sweep
        "architecture": type(model).__name__,
        "T": 1.0,
        "head": "plain",
        "regime": "zoo",
        "lr_scale": False,
        "seed": 0,
        "checkpoint": "",
        "feature_dim": _feature_dim(model),
        "num_classes": num_classes,
        "dataset": dataset,
        "threat_model": threat_model,
        "checkpoint_paths": [str(p) for p in paths],
        "weights_sha256": sha,
        "run_key": zoo_run_key(sha),
        "source": f"robustbench {_installed_version()}",
    }
    return model, info
