"""Audit any model from Python: the attack suite, the masking audit, calibration and the shifts
that the CLI runs on a grid model, run on a network of your own.

    from bench.api import audit
    result = audit(model, data_root="../shared/data/cifar10-jpeg75", name="my_net", temperature=5)
    print(result.row[["clean", "robust_min", "masking"]])

The contract, checked before anything is measured: ``model`` is a torch module that takes NCHW
pixels in [0, 1] (give ``mean``/``std`` if it expects normalised input: it is wrapped in the
registry models' own first-layer normalisation) and returns raw logits of shape (N, classes). A
model that returns probabilities or log-probabilities is refused, not attacked through a second
softmax; so is one whose forward cuts the input out of the autograd graph (no attack could take a
gradient through it). The model is measured in eval mode and given back in the mode it came in, its
parameters untouched. Without ``temperature`` the training T (the scaled view's divisor) is
estimated by post-hoc temperature scaling on test images outside the evaluation subset, and the
records say so (``T_source``).
"""
from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd
import torch

from bench.cli import check_normalisation, make_plan
from bench.data import TORCHVISION_CIFAR, load_dataset
from bench.errors import BenchError
from bench.grid.models import external_run_key
from bench.grid.runner import run
from bench.profiles import MIN_EVAL_N
from bench.report.export import model_card
from bench.report.publish import regenerate
from bench.report.tables import leaderboard
from bench.run import build_parser
from bench.store import ResultStore
from models.archs import Normalize
from models.external import ExternalSpec, check_normalised_once, weights_sha256

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


@dataclass
class AuditResult:
    name: str
    results: Path  # the results folder: its store, tables, plots and index.html
    row: pd.Series  # the model's leaderboard row: clean, robust_min, robust_worst, masking and its reasons, ...
    table: pd.DataFrame  # the model's rows of the tidy table, one per measurement and metric
    temperature: float
    temperature_source: str  # "given" or "estimated"

    def report(self, path: Optional[Path] = None) -> Path:
        """The HTML report of the results folder (this model and any other measured there),
        built from the store first if the audit wrote its tables alone (``pages=False``)."""
        page = self.results / "index.html"
        if not page.exists():
            regenerate(self.results)
        if path is None:
            return page
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copyfile(page, path))

    def model_card(self) -> dict:
        """The RobustBench-style model card of this model's row."""
        return model_card(self.row)


def audit(model: torch.nn.Module, *, name: Optional[str] = None, temperature: Optional[float] = None,
          data_root: Optional[str] = None, dataset: Optional[str] = None, n: Optional[int] = 500,
          profile: str = "quick", attacks: Optional[Sequence[str]] = None, results: Optional[str] = None,
          cache: Optional[str] = None, device: Optional[str] = None, mean: Optional[Sequence[float]] = None,
          std: Optional[Sequence[float]] = None, log: Optional[Callable[[str], None]] = None,
          pages: bool = True) -> AuditResult:
    """Measure ``model`` as the CLI measures a grid model (``profile``'s evaluation, or the
    threats named in ``attacks``: the names ``--attack`` takes) on ``n`` stratified test images.
    Records go to ``results`` (when None, a new temporary folder each call), so a second call with
    the same weights, temperature and ``results`` resumes rather than re-measures; with its
    reports, or (``pages=False``) its tables alone. Raises BenchError, with one sentence, on bad
    input."""
    if not isinstance(model, torch.nn.Module):
        raise BenchError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = name or type(model).__name__
    if not NAME_RE.fullmatch(name):
        raise BenchError(f"name {name!r}: use a letter, then letters, digits, '.', '_' or '-' (64 at most)")
    if (mean is None) != (std is None):
        raise BenchError("give mean and std together (the per-channel normalisation the model expects), or neither")
    if isinstance(temperature, bool) or not (temperature is None or isinstance(temperature, (int, float))
                                             and 0 < temperature < float("inf")):
        raise BenchError(f"temperature must be a positive number, got {temperature!r}")
    # what argparse would refuse, said in this function's words (it printed its usage, then failed)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < MIN_EVAL_N):
        raise BenchError(f"n must be a whole number of test images, at least {MIN_EVAL_N}; got {n!r}")
    if dataset is not None and dataset not in TORCHVISION_CIFAR:
        raise BenchError(f"dataset must be one of {', '.join(TORCHVISION_CIFAR)} (or None: the only one under "
                         f"data_root), got {dataset!r}")
    if mean is not None:  # as floats: a tensor's elements would print into the weights' hash as "tensor(0.4914)"
        mean, std = check_normalisation(mean, "mean"), check_normalisation(std, "std")
        check_normalised_once(model, "the model", "mean= and std=")
    for arg, value in (("profile", profile), ("data_root", data_root), ("cache", cache), ("results", results)):
        # a blank one reached argparse, which printed its usage and raised SystemExit (not an
        # Exception a caller catches); results="" was a temporary folder, where a path was meant
        if isinstance(value, (str, Path)) and not str(value).strip():
            raise BenchError(f"{arg}={value!r} is empty: give a {'profile' if arg == 'profile' else 'folder'}, "
                             f"or leave it out")
    if not isinstance(profile, (str, Path)):
        raise BenchError(f"profile must be a profile name or a .toml path, got {profile!r}")
    if isinstance(attacks, str):  # one name, or a comma-separated list as --attack takes; not its letters
        attacks = [attacks]
    if attacks is not None and not (isinstance(attacks, (list, tuple)) and all(isinstance(a, str) for a in attacks)):
        raise BenchError(f"attacks must be a list of names as --attack takes, e.g. ['fgsm', 'pgd'], got {attacks!r}")
    made = None if results is not None else Path(tempfile.mkdtemp(prefix="tempbench-audit-"))
    try:
        # FLAG=VALUE: a value that starts with '-' (a folder, say) is not read as a flag
        argv = [f"--profile={profile}", "--no-progress", "--model=" + name, f"--results={results or made}",
                *([] if pages else ["--tables-only"])]
        for flag, value in (("--data-root", data_root), ("--dataset", dataset), ("--cache", cache),
                            ("--device", device or _default_device(model)), ("--n-test", n),
                            ("--attack", ",".join(attacks) if attacks is not None else None)):
            if value is not None:
                argv.append(f"{flag}={value}")
        plan = make_plan(build_parser().parse_args(argv), specs=[])  # every setting, before a file is written
        if _device_of(model) != plan.device.type:
            raise BenchError(f"the model is on {_device_of(model)} and the audit runs on {plan.device}: move the "
                             f"model (model.to(...)) or pass device={_device_of(model)!r}")
        _, sha = _measure(model, name, temperature, mean, std, plan, pages, log)
    except BaseException:
        if made is not None and not any(made.iterdir()):
            made.rmdir()  # refused before anything was written (the model's contract, say): its folder goes too
        raise
    # the run's key names its data's fingerprint: from the decoded cache the run made (half a second)
    key = external_run_key(name, sha, load_dataset(plan.data_root, plan.cache_dir, dataset=plan.dataset).fingerprint,
                           None if temperature is None else float(temperature))
    tidy = pd.read_csv(plan.results_dir / "results.csv")
    tidy = tidy[tidy.run_key == key]
    # this run's row from its own records alone: the leaderboard's rows of this name and weights are
    # this run's and those of any other temperature it was audited at (or another model's of the name,
    # measured later), and picking one of them gave another run's row and T beside this run's table
    store = ResultStore(plan.results_dir)
    bits = store.bits_table()
    row = leaderboard(store.table().query("run_key == @key"), bits[bits.run_key == key]).iloc[0]
    return AuditResult(name, plan.results_dir, row, tidy.reset_index(drop=True), float(row["T"]), row["T_source"])


def _measure(model, name, temperature, mean, std, plan, pages, log):
    """The audit's run, with the model in eval mode and given back in the mode it came in."""
    modes = {m: m.training for m in model.modules()}  # each module's own: a mixed model comes back mixed
    wrapped = model if mean is None else torch.nn.Sequential(Normalize(mean, std), model).to(plan.device)
    try:
        wrapped.eval()
        sha = weights_sha256(model)
        if mean is not None:  # the same weights behind another normalisation are another model
            sha = hashlib.sha256(f"{sha}:{list(mean)}:{list(std)}".encode()).hexdigest()
        # without a temperature the grid estimates it (bench/measure/calibration.py estimate_temperature)
        spec = ExternalSpec(name=name, T=None if temperature is None else float(temperature), model=wrapped,
                            weights_sha256=sha, arch=type(model).__name__)
        plan.models = [spec]
        board = run(plan, pages=pages, **({"log": log} if log else {}))
    finally:
        for m, training in modes.items():
            m.training = training
    return board, sha


def _default_device(model: torch.nn.Module) -> str:
    """The model's own device when the harness runs there; else auto, and the device check says why not."""
    return _device_of(model) if _device_of(model) in ("cpu", "cuda") else "auto"


def _device_of(model: torch.nn.Module) -> str:
    p = next(iter(model.parameters()), None)
    return "cpu" if p is None else p.device.type
