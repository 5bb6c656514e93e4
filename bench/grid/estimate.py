"""How long the jobs a grid has left would take, at the pace of the store's own records: each
planned measurement at the median wall time of the same measurement (threat, view, images,
parameters but a surrogate's name) on models of the same architecture and kind (standard or
adversarially trained, whose attacks cost far more: nothing stops early on a robust point), each
training run at the median of the kept runs of the same architecture, regime and recipe. A
measurement or run the store has never seen is counted, not guessed. The pace is that of the
machines the records name (their `device`), which the line says: on another box, scale by its
`make perf` training figure. ``--pace-from`` adds other results folders' records and checkpoint
sidecars to the run's own, so that a grid can be priced before its store holds anything (a fresh
run of a committed profile, or a new grid of the same models).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from bench.checkpoints import CheckpointStore
from bench.grid.jobs import (Context, Job, held_evaluations, is_done, ordered, stored_record, to_measure,
                             twin_of)
from bench.provenance import device_name
from bench.store import SCHEMA, ResultStore


@dataclass
class Estimate:
    seconds: float  # of the jobs with a record to go by
    measured: int  # planned measurements and training runs priced from the store
    unknown: int  # those the store has never seen
    machines: Tuple[str, ...]  # the devices whose records set the pace
    odds: str = ""  # how twin checkpoints' copies were priced, when some were
    sources: str = "the stores' own records"  # whose wall times set the pace
    held: int = 0  # evaluations expected to be found again once their run is retrained here
    held_seconds: float = 0.0  # what they cost if training here gives other weights

    def line(self) -> str:
        if not self.measured:
            return "no estimate: the stores hold no run or measurement like these to go by"
        took = _took(self.seconds)
        rest = ("; the other one has nothing like it in the stores: not counted" if self.unknown == 1 else
                f"; the other {self.unknown} have nothing like them in the stores: not counted" if self.unknown else "")
        return (f"estimate: {took} for {self.measured} of the {self.measured + self.unknown} measurements and "
                f"training runs left, at the pace of {self.sources} (made on {'; '.join(self.machines)}){rest}"
                f"{self.odds}{self._held_note()}")

    def _held_note(self) -> str:
        if not self.held:
            return ""
        these = "evaluation" if self.held == 1 else "evaluations"
        return (f"; priced at nothing: {self.held} {these} the store holds from an earlier training on this machine's "
                f"CPU and thread count, found again when training here gives the same weights "
                f"({_took(self.held_seconds)} more if it does not)")


def _took(seconds: float) -> str:
    minutes = seconds / 60
    return f"about {minutes / 60:.1f} h" if minutes >= 90 else f"about {minutes:.0f} min" if minutes >= 1 \
        else "under a minute"


# a grid's standard training and the store's names for a caller's or zoo model (bench/store.py);
# any other regime is adversarial training. scripts/grid_cost.py keeps a copy (it imports no torch),
# held equal by tests/test_grid_cost.py
STANDARD_REGIMES = ("std", "zoo", "file", "python")


def _kind(regime: str) -> str:
    return "standard" if regime in STANDARD_REGIMES else "adversarial"


# parameters that name another model rather than set the work: a transfer attack's surrogate
# costs the same whichever seed it is
_NOT_COST = ("surrogate", "surrogate_key")


def _measure_key(arch: str, regime: str, n, threat: str, view: str, params) -> tuple:
    work = {k: v for k, v in (params or {}).items() if k not in _NOT_COST}
    return "eval", arch, _kind(regime), int(n), threat, view, json.dumps(work, sort_keys=True, default=str)


def _train_key(arch: str, feature_dim, bn_head, regime: str, recipe, fingerprint) -> tuple:
    return "train", arch, feature_dim, bn_head, regime, json.dumps(recipe, sort_keys=True, default=str), fingerprint


def _arch(spec) -> str:
    """The arch column the spec's records carry: a grid model's arch name, a caller's model's
    arch, a zoo model's own name (bench/grid/models.py)."""
    return getattr(spec, "arch_name", None) or getattr(spec, "arch", None) or spec.name


Paces = Dict[tuple, List[Tuple[float, str]]]


def _sources(ctx: Context) -> Tuple[list, list]:
    """The result stores and checkpoint stores whose wall times set the pace: the run's own, and
    each --pace-from folder's (its records and its checkpoints/ sidecars), read only."""
    stores, ckpts = [ctx.store], [ctx.ckpts]
    for d in ctx.plan.pace_dirs:
        stores.append(ResultStore(d))
        ckpts.append(CheckpointStore(Path(d) / "checkpoints"))
    return stores, ckpts


def _history(ctx: Context) -> Tuple[Paces, Dict[tuple, List[bool]]]:
    """From the stores: (wall_s, device) of every measurement and kept training run, by what was
    done; and per training key, whether each kept run that saved a best checkpoint saved its last
    weights there (its best epoch was the last). A record or run found in two stores counts once:
    a profile's folder holds copies of the runs it shares with another (results/cpu holds all of
    cpu_at2's), and --pace-from both counted them twice."""
    paces: Paces = defaultdict(list)
    best_was_last: Dict[tuple, List[bool]] = defaultdict(list)
    stores, ckpts = _sources(ctx)
    seen_records, seen_runs = set(), set()
    for rec in (r for store in stores for r in store.records()):
        if rec.get("schema", 1) < SCHEMA:
            continue  # stale, as ResultStore.table() skips them: it need not have n, threat or view
        if rec.get("same_weights_as") or rec.get("wall_s") is None:
            continue  # a copy from a twin carries its source's time, not its own
        if rec.get("id") is not None:
            if rec["id"] in seen_records:
                continue
            seen_records.add(rec["id"])
        key = _measure_key(rec.get("arch", "?"), rec.get("regime", "std"), rec["n"], rec["threat"], rec["view"],
                           rec.get("params", {}))
        paces[key].append((float(rec["wall_s"]), rec.get("device", "?")))
    for meta in (m for store in ckpts if store.root.is_dir() for m in store.sidecars()):
        run = (meta.get("key"), meta.get("weights_sha256"))
        if run in seen_runs and None not in run:
            continue
        seen_runs.add(run)
        spec = meta.get("spec", {})
        key = _train_key(spec.get("arch"), spec.get("feature_dim"), spec.get("bn_head"), spec.get("regime"),
                         meta.get("recipe"), meta.get("data_fingerprint"))
        if "wall_s" in meta:
            paces[key].append((float(meta["wall_s"]), meta.get("device", "?")))
        if meta.get("best_weights_sha256"):
            best_was_last[key].append(meta["best_weights_sha256"] == meta.get("weights_sha256"))
    return paces, best_was_last


def _train_key_of(spec, ctx: Context) -> tuple:
    return _train_key(spec.arch_name, spec.feature_dim, spec.bn_head, spec.regime,
                      asdict(ctx.plan.profile.recipe_for(spec)), ctx.data.fingerprint)


def _planned(job: Job, ctx: Context) -> Optional[list]:
    """What an evaluation job will measure (to_measure: an attack revised since the store's
    records costs that attack, not the job's whole suite); None for a training job."""
    return None if job.kind == "train" else to_measure(job, ctx)


def _job_keys(job: Job, ctx: Context, planned: Optional[list]) -> List[tuple]:
    spec = job.spec
    if planned is None:
        return [_train_key_of(spec, ctx)]
    return [_measure_key(_arch(spec), getattr(spec, "regime", "zoo"), *p) for p in planned]


class _Copies:
    """The chance that a planned measurement of an adversarial run's @best or @last is copied
    from its twin rather than measured (bench/grid/jobs.py: the two are one set of weights where
    the best epoch was the last). Where the run is trained, 0 or 1; where not, the share of such
    runs among the stores' kept runs of its training key, for the twin the executor measures
    second. Priced in full, @last looked twice as dear as it mostly is."""

    def __init__(self, todo: Sequence[Job], ctx: Context, best_was_last: Dict[tuple, List[bool]]):
        self.ctx, self.runs = ctx, best_was_last
        self.order = {(j.spec.name, j.family): i for i, j in enumerate(ordered(list(todo))) if j.kind == "eval"}
        self.odds_used: Dict[tuple, List[bool]] = {}

    def shares(self, job: Job, planned: Optional[list]) -> Tuple[List[float], bool]:
        """Per planned measurement of the job (``planned``, _planned's), the chance it is copied;
        and whether those chances are known (0 or 1) rather than odds. A training run is one part,
        never a copy."""
        if planned is None:
            return [0.0], True
        ctx = self.ctx
        none = [0.0] * len(planned), True
        twin = twin_of(job.spec)
        if twin is None or ctx.plan.force:  # --force measures each name itself, copying nothing
            return none
        first = self.order.get((twin.name, job.family), len(self.order)) < self.order[job.spec.name, job.family]
        key = ctx.ckpt_key(job.spec)
        mine, theirs = ctx.verified(job.spec, key), ctx.verified(twin, key)
        if mine is not None and theirs is not None:
            if mine["weights_sha256"] != theirs["weights_sha256"]:
                return none
            twin_key, family = ctx.weights_key(twin), ctx.families[job.family]
            return [1.0 if first or stored_record(ctx, twin_key, p, mine["weights_sha256"], family) else 0.0
                    for p in planned], True
        train_key = _train_key_of(job.spec, ctx)
        runs = self.runs.get(train_key)
        if not first or not runs:
            return none
        self.odds_used[train_key] = runs
        return [sum(runs) / len(runs)] * len(planned), False


def estimate(todo: Sequence[Job], ctx: Context, held: Optional[Dict[str, str]] = None) -> Estimate:
    """The grid's time left (``--dry-run``), part by part: a job the stores know only in part is
    priced for those parts, the rest counted. ``held``: as for Pricer."""
    pricer = Pricer(todo, ctx, held)
    seconds, measured, unknown, used, held, held_seconds = 0.0, 0, 0, set(), 0, 0.0
    for job in todo:
        found = pricer.found_again(job)
        held += found
        for key, wall, share in pricer.parts(job)[0]:
            if wall is None:
                unknown += 1
                continue
            seconds += wall * (1 - share)
            held_seconds += wall if found else 0.0
            measured += 1
            used.update(device for _, device in pricer.paces[key])
    sources = "the stores' own records" + (f" and those of {', '.join(str(d) for d in ctx.plan.pace_dirs)}"
                                            if ctx.plan.pace_dirs else "")
    return Estimate(seconds, measured, unknown, tuple(sorted(used)), _odds_note(pricer.copies.odds_used), sources,
                    held, held_seconds)


def _price(paces, key) -> float:
    return median(wall for wall, _ in paces[key])


def _odds_note(odds: Dict[tuple, List[bool]]) -> str:
    if not odds:
        return ""
    same = sum(sum(runs) for runs in odds.values())
    total = sum(len(runs) for runs in odds.values())
    return (f"; a run not trained yet has its second checkpoint priced at the odds that it holds the first's "
            f"weights, its records then copies: {same} of the stores' {total} runs of the same recipe")


class Price(NamedTuple):
    measured: float  # seconds if every part not known to be a copy is measured
    expected: float  # at the odds that a part is copied from a twin checkpoint instead


class Pricer:
    """Each job's price at the stores' pace, the stores read once: at the start of a grid, and again
    for a run's checkpoints once it is trained, when whether @last is @best's weights is known
    rather than a chance (bench/grid/executor.py's ETA)."""

    def __init__(self, todo: Sequence[Job], ctx: Context, held: Optional[Dict[str, str]] = None):
        """``held``: jobs.held_evaluations(todo, ctx), where the caller has it already (the grid's
        first line reads it); read here otherwise."""
        self.ctx = ctx
        self.paces, best_was_last = _history(ctx)
        self.copies = _Copies(todo, ctx, best_was_last)
        self.evals = [j for j in todo if j.kind == "eval"]
        # Evaluations held for their run's retraining (a fresh clone of a committed store) whose
        # records name this machine's CPU and thread count: seeded training gives the same weights
        # there, so they are expected to be found, not measured. Read once: after the run trains,
        # found_again is False either way (its checkpoint is here).
        held = held_evaluations(todo, ctx) if held is None else held
        here = device_name(ctx.plan.device)
        self.held_here = {key for key, device in held.items() if device == here}

    def found_again(self, job: Job) -> bool:
        """Whether ``job`` is held for a retraining here that is expected to give its records' weights."""
        return job.key in self.held_here and self.ctx.verified(job.spec, self.ctx.ckpt_key(job.spec)) is None

    def after_training(self, job: Job) -> Dict[str, Price]:
        """The prices of a training job's checkpoints' jobs, now that its weights are saved: a
        twin's as a copy or not, one held for this retraining at its full price (it was priced as
        found again: where it is, nothing, as for those whose records the store already holds for
        these very weights; under --force, which measures those again, in full)."""
        of_run = [j for j in self.evals if j.spec.run.name == job.spec.name]
        prices = self.prices([j for j in of_run if twin_of(j.spec) is not None or j.key in self.held_here])
        if not self.ctx.plan.force:
            prices.update({j.key: Price(0.0, 0.0) for j in of_run if is_done(j, self.ctx)})
        return prices

    def parts(self, job: Job) -> Tuple[List[Tuple[tuple, Optional[float], float]], bool]:
        """(key, seconds at the stores' pace or None where they never did it, chance it is a copy
        or found again) per part of the job (a training run, or each planned measurement); and
        whether those chances are known rather than odds."""
        planned = _planned(job, self.ctx)
        if self.found_again(job):
            return [(key, _price(self.paces, key) if self.paces.get(key) else None, 1.0)
                    for key in _job_keys(job, self.ctx, planned)], False
        shares, known = self.copies.shares(job, planned)
        left = self._epochs_left(job) if planned is None else 1.0
        return [(key, _price(self.paces, key) * left if self.paces.get(key) else None, share)
                for key, share in zip(_job_keys(job, self.ctx, planned), shares)], known

    def _epochs_left(self, job: Job) -> float:
        """The share of a training run still to train: an interrupted run resumes from the epochs
        its state holds (priced in full, a PGD-AT run at epoch 9 of 10 cost ten times its rest)."""
        spec = job.spec.run
        done = self.ctx.ckpts.partial_epoch(spec, self.ctx.ckpt_key(spec))
        epochs = self.ctx.plan.profile.recipe_for(spec).epochs
        return 1.0 - min(done, epochs) / epochs if done and epochs else 1.0

    def prices(self, jobs: Sequence[Job]) -> Dict[str, Price]:
        """Per job key, for the jobs whose every part the stores have done before."""
        out = {}
        for job in jobs:
            parts, known = self.parts(job)
            if not parts or any(wall is None for _, wall, _ in parts):
                continue
            out[job.key] = Price(sum(w for _, w, s in parts if not (known and s == 1)),
                                 sum(w * (1 - s) for _, w, s in parts))
        return out
