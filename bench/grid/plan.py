"""A run's plan: what the CLI decided (profile, models, attacks, views, folders, device), and
the T of _Tauto models under a profile's own [tauto] settings. Built once, read by every job."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from attacks import AttackConfig
from bench.accel import Accel
from bench.csg import dataset_csg
from bench.data import Dataset
from bench.profiles import Profile
from models import ModelSpec
from models.registry import LoadedSpec


@dataclass
class Plan:
    profile: Profile
    models: Sequence[ModelSpec]
    attacks: Sequence[AttackConfig]
    views: Sequence[str]
    results_dir: Path
    cache_dir: Path
    data_root: Optional[str] = None
    device: torch.device = torch.device("cpu")
    force: bool = False  # re-evaluate even when the store already holds the measurement
    progress: bool = False
    fetch_shift_sets: bool = False  # download a shifted test set (CIFAR-10.1) that is missing, else skip it
    # a shifted test set named in --attack stops the run when it cannot be had; one that --attack
    # all brings in is skipped with a line (offline, 'all' is everything this machine can measure)
    require_shift_sets: bool = False
    dataset: Optional[str] = None  # cifar10 / cifar100 where the data root holds both
    store_dir: Optional[Path] = None  # checkpoints (and job logs) here, e.g. a cluster's shared folder
    pace_dirs: Sequence[Path] = ()  # other results folders whose wall times also price the estimate and ETA
    # the device whose precision defaults (bf16, compile) the runs take; None: ``device``'s own. A
    # Ray driver plans on the CPU while its workers may run on a GPU: bf16 is part of a checkpoint's
    # key, so the driver decides it once for every worker, else the workers' records and checkpoints
    # would sit under keys the driver's resume never asks for
    accel_device: Optional[torch.device] = None
    # the precision flags (BENCH_BF16, BENCH_COMPILE) as the driver read them; None: this process's
    # environment. A joined cluster's workers have the environment `ray start` ran in: reading their
    # own, they trained under other keys than the driver planned and its resume looks for
    accel_flags: Optional[Mapping[str, str]] = None

    @property
    def precision_device(self) -> torch.device:
        return self.device if self.accel_device is None else self.accel_device

    def accel(self) -> Accel:
        return Accel.for_device(self.precision_device, env=self.accel_flags)

    @property
    def checkpoint_dir(self) -> Path:
        if self.store_dir is None and self.profile.keep_checkpoints:
            return self.results_dir / "checkpoints"
        return (self.store_dir or self.cache_dir) / "checkpoints"

    @property
    def kept_checkpoint_dir(self) -> Optional[Path]:
        """Where the checkpoints are kept for others to read (a shared store, or a profile's
        keep_checkpoints), which the reports link; None where they live in the private cache."""
        return self.checkpoint_dir if (self.store_dir is not None or self.profile.keep_checkpoints) else None

    @property
    def log_dir(self) -> Path:
        return (self.store_dir or self.results_dir) / "logs"


class TautoResolver:
    """_Tauto models under a profile's own [tauto] coefficients or corrections get their T here
    (the dataset's CSG computed once per run when asked for); the published formula needs
    nothing."""

    def __init__(self, setup, data: Dataset, log):
        self.setup, self.data, self.log = setup, data, log
        self._csg = setup.csg if setup.csg != "auto" else None

    def csg(self) -> float:
        if self._csg is None:
            result = dataset_csg(self.data.train, embedding=self.setup.csg_embedding, dataset=self.data.name)
            self._csg = result.value
            self.log(f"CSG of {self.data.name} (train, {self.setup.csg_embedding}): {self._csg:.3f}")
        return self._csg

    def __call__(self, spec: ModelSpec) -> ModelSpec:
        formula = self.setup.formula
        if isinstance(spec, LoadedSpec) or spec.temperature != "auto" or (formula.published and self.setup.csg is None):
            return spec
        csg = self.csg() if formula.gamma else None
        return replace(spec, resolved_T=formula.resolve(spec.feature_dim, csg, self.data.num_classes))
