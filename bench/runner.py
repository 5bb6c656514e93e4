"""The runner: turn a plan into its grid of jobs (train a model; evaluate it on one family of
threats), skip those the stores already hold, run the rest on an executor, build the reports.
Data flows one way:

    registry spec -> trainer -> checkpoint store -> evaluator -> results store -> reports
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd
import torch

from attacks import AttackConfig, format_eps
from bench.checkpoints import CheckpointStore, checkpoint_key
from bench.data import Dataset, to_float
from bench.errors import BenchError
from bench.jobs import Context, build_jobs, is_done
from bench.profiles import Profile
from bench.provenance import provenance
from bench.report import write_reports
from bench.train import train
from models import ModelSpec
from models.zoo import ZooSpec


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
    dataset: Optional[str] = None  # cifar10 / cifar100 where the data root holds both
    store_dir: Optional[Path] = None  # checkpoints (and job logs) here, e.g. a cluster's shared folder

    @property
    def checkpoint_dir(self) -> Path:
        return (self.store_dir or self.cache_dir) / "checkpoints"

    @property
    def log_dir(self) -> Path:
        return (self.store_dir or self.results_dir) / "logs"


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


@torch.no_grad()
def _accuracy(model, split, batch_size) -> float:
    correct = 0
    for a in range(0, len(split), batch_size):
        correct += int((model(to_float(split.images[a:a + batch_size])).argmax(1) ==
                        split.labels[a:a + batch_size]).sum())
    return correct / len(split)


def get_zoo_model(spec: ZooSpec, plan: Plan, data: Dataset, log: Callable[[str], None]):
    """A RobustBench model through models/zoo.py: (key, model, meta, the spec columns of its records)."""
    from models.zoo import load_zoo_model
    model, info = load_zoo_model(spec.name, model_dir=plan.cache_dir / "robustbench", device=plan.device)
    if info.get("num_classes") not in (None, data.num_classes):
        raise BenchError(f"{spec.name} has {info['num_classes']} classes; {data.name} has {data.num_classes}")
    log(f"  loaded {info['architecture']} from {', '.join(info['checkpoint_paths'])} ({info['source']})")
    cols = {k: info[k] for k in ("model", "arch", "T", "head", "regime", "lr_scale", "seed", "feature_dim",
                                 "checkpoint")}
    return info["run_key"], model, {"weights_sha256": info["weights_sha256"]}, cols


class TautoResolver:
    """_Tauto models under a profile's own [tauto] coefficients or corrections get their T here
    (the dataset's CSG computed once per run when asked for); the published formula needs
    nothing."""

    def __init__(self, setup, data: Dataset, log):
        self.setup, self.data, self.log = setup, data, log
        self._csg = setup.csg if setup.csg != "auto" else None

    def csg(self) -> float:
        if self._csg is None:
            from bench.csg import dataset_csg
            result = dataset_csg(self.data.train, embedding=self.setup.csg_embedding, dataset=self.data.name)
            self._csg = result.value
            self.log(f"CSG of {self.data.name} (train, {self.setup.csg_embedding}): {self._csg:.3f}")
        return self._csg

    def __call__(self, spec: ModelSpec) -> ModelSpec:
        formula = self.setup.formula
        if isinstance(spec, ZooSpec) or spec.temperature != "auto" or (formula.published and self.setup.csg is None):
            return spec
        csg = self.csg() if formula.gamma else None
        return replace(spec, resolved_T=formula.resolve(spec.feature_dim, csg, self.data.num_classes))


def get_model(spec: ModelSpec, plan: Plan, data: Dataset, ckpts: CheckpointStore, eval_split,
              log: Callable[[str], None]):
    """Load the checkpoint for (spec, recipe, data), or train and save it. An adversarial run is
    trained once and saved with both its checkpoints; ``spec`` says which one comes back."""
    recipe = plan.profile.recipe_for(spec)
    key = checkpoint_key(spec, recipe, data.fingerprint, data.num_classes)
    found = ckpts.load(spec, key, data.num_classes, plan.device)
    if found is None:
        with ckpts.lock(spec, key):  # another process may be training it: wait, then load its result
            found = ckpts.load(spec, key, data.num_classes, plan.device)
            if found is None:
                return _train_and_save(spec, recipe, key, plan, data, ckpts, eval_split, log)
    log(f"  loaded checkpoint {key}{f' @{spec.checkpoint}' if spec.checkpoint else ''} "
        f"(trained {found[1].get('wall_s', float('nan')):.0f}s, "
        f"test acc {100 * found[1].get('test_acc', float('nan')):.1f}%)")
    return key, found[0], found[1]


def _train_and_save(spec, recipe, key, plan, data, ckpts, eval_split, log):
    n = min(recipe.train_subset or len(data.train), len(data.train))
    log(f"  training {spec.run.name}: {recipe.epochs} epochs on {n} images")
    result = train(spec.run, recipe, data, plan.device, progress=plan.progress)
    test_acc = _accuracy(result.model, eval_split, plan.profile.eval.batch_size)
    meta = dict(provenance(plan.device), profile=plan.profile.name, recipe=recipe.to_dict(), dataset=data.name,
                data_fingerprint=data.fingerprint, num_classes=data.num_classes, epochs=recipe.epochs,
                train_n=result.train_n, final_train_loss=result.final_train_loss,
                final_train_acc=result.final_train_acc, test_acc=test_acc, test_n=len(eval_split),
                wall_s=result.wall_s)
    if spec.adversarial:
        meta.update(best_epoch=result.best_epoch, holdout_history=result.history,
                    catastrophic_overfitting_epoch=result.catastrophic_overfitting_epoch)
    ckpts.save(spec, key, result.model, meta, best_state=result.best_state)
    log(f"  trained in {result.wall_s:.0f}s: train loss {result.final_train_loss:.3f}, "
        f"train acc {100 * result.final_train_acc:.1f}%, test acc (last) {100 * test_acc:.1f}% -> {key}")
    if spec.adversarial:
        h = result.history
        log("  held-out margin-PGD accuracy by epoch: " + ", ".join(f"{100 * e['pgd_acc']:.1f}%" for e in h) +
            f"; best epoch {result.best_epoch}" + (f"; catastrophic overfitting at epoch "
                                                   f"{result.catastrophic_overfitting_epoch}"
                                                   if result.catastrophic_overfitting_epoch else ""))
    model, meta = ckpts.load(spec, key, data.num_classes, plan.device)  # the checkpoint spec asks for
    return key, model, meta


def summarize(ms) -> str:
    """One log line for a batch of measurements."""
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    head, parts, groups = "", [], {}
    for m in ms:
        if m.threat == "clean":
            head = f"clean {pct(m.metrics['accuracy'])}; "
        elif m.family == "attack":
            at = "" if abs(m.eps * 255 - 8) < 1e-6 else f"@{format_eps(m.eps)}"
            parts.append(f"{m.threat}/{m.view}{at} {pct(m.metrics['robust_acc'])}")
        elif m.threat == "pgd_fp64":
            x = m.metrics
            parts.append(f"CE-PGD raw fp32 {pct(x['robust_acc_fp32'])} vs fp64 {pct(x['robust_acc_fp64'])} "
                         f"(zero grad {pct(x['zero_grad_frac_fp32'])} vs {pct(x['zero_grad_frac_fp64'])})")
        elif m.threat == "calibration":
            x = m.metrics
            parts.append(f"ECE {m.view} {pct(x['ece'])}" +
                         (f" (post-hoc T {x['posthoc_T']:.3g})" if m.view == "posthoc" else ""))
        elif m.threat == "autoattack_crosscheck":
            x = m.metrics
            parts.append(f"AutoAttack torchattacks {pct(x['robust_acc_torchattacks'])} vs pyautoattack "
                         f"{pct(x['robust_acc_pyautoattack'])} on {m.n} images")
        else:
            key = ("clean" if m.corruption == "none" else f"severity {m.severity:g}") \
                if m.family == "corruption" else m.threat
            groups.setdefault(key, []).append(m.metrics["accuracy"])
    parts += [f"{k} {pct(sum(v) / len(v))}" for k, v in groups.items()]
    return head + ", ".join(parts)


def run(plan: Plan, log: Callable[[str], None] = _log, executor=None) -> pd.DataFrame:
    """Run the plan's grid as jobs (bench/jobs.py) on an executor (default: this process), then
    build the reports; returns the leaderboard. Every job stores what it measured as soon as it
    is done, so an interrupted run resumes where it stopped."""
    from bench.executor import GridProgress, LocalExecutor
    started = time.perf_counter()
    ctx = Context(plan, log)
    jobs = build_jobs(ctx)
    # --force re-evaluates; it never retrains (delete a checkpoint to retrain it)
    todo = [j for j in jobs if (plan.force and j.kind == "eval") or not is_done(j, ctx)]
    n_train = sum(j.kind == "train" for j in jobs)
    log(f"grid: {len(jobs)} jobs ({n_train} training runs, {len(jobs) - n_train} evaluations); "
        f"{len(jobs) - len(todo)} already done" + (" (--force re-evaluates)" if not plan.force else "") +
        f"; {len(todo)} to run; job logs in {plan.log_dir}")
    executor = executor or LocalExecutor()
    executor.run(todo, ctx, GridProgress(len(jobs), len(jobs) - len(todo), log), plan.log_dir, log)
    board = write_reports(ctx.store, plan.results_dir)
    log(f"done in {time.perf_counter() - started:.0f}s; reports in {plan.results_dir}")
    return board
