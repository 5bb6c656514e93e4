"""How long the jobs a grid has left would take, at the pace of the store's own records: each
planned measurement at the median wall time of the same measurement (threat, view, images,
parameters but a surrogate's name) on models of the same architecture and kind (standard or
adversarially trained, whose attacks cost far more: nothing stops early on a robust point), each
training run at the median of the kept runs of the same architecture, regime and recipe. A
measurement or run the store has never seen is counted, not guessed. The pace is that of the
machines the records name (their `device`), which the line says: on another box, scale by its
`make perf` training figure.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from statistics import median
from typing import Dict, List, Sequence, Tuple

from bench.grid.jobs import Context, Job, planned_by


@dataclass
class Estimate:
    seconds: float  # of the jobs with a record to go by
    measured: int  # planned measurements and training runs priced from the store
    unknown: int  # those the store has never seen
    machines: Tuple[str, ...]  # the devices whose records set the pace

    def line(self) -> str:
        if not self.measured:
            return "no estimate: the stores hold no run or measurement like these to go by"
        minutes = self.seconds / 60
        took = f"about {minutes / 60:.1f} h" if minutes >= 90 else f"about {minutes:.0f} min" if minutes >= 1 \
            else "under a minute"
        rest = ("; the other one has nothing like it in the stores: not counted" if self.unknown == 1 else
                f"; the other {self.unknown} have nothing like them in the stores: not counted" if self.unknown else "")
        return (f"estimate: {took} for {self.measured} of the {self.measured + self.unknown} measurements and "
                f"training runs left, at the pace of the stores' own records (made on {'; '.join(self.machines)}){rest}")


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


def _paces(ctx: Context) -> Dict[tuple, List[Tuple[float, str]]]:
    """(wall_s, device) of every measurement and kept training run in the stores, by what was done."""
    paces: Dict[tuple, List[Tuple[float, str]]] = defaultdict(list)
    for rec in ctx.store.records():
        if rec.get("same_weights_as") or rec.get("wall_s") is None:
            continue  # a copy from a twin carries its source's time, not its own
        key = _measure_key(rec.get("arch", "?"), rec.get("regime", "std"), rec["n"], rec["threat"], rec["view"],
                           rec.get("params", {}))
        paces[key].append((float(rec["wall_s"]), rec.get("device", "?")))
    for meta in ctx.ckpts.sidecars():
        spec = meta.get("spec", {})
        if "wall_s" in meta:
            key = _train_key(spec.get("arch"), spec.get("feature_dim"), spec.get("bn_head"), spec.get("regime"),
                             meta.get("recipe"), meta.get("data_fingerprint"))
            paces[key].append((float(meta["wall_s"]), meta.get("device", "?")))
    return paces


def _job_keys(job: Job, ctx: Context) -> List[tuple]:
    spec = job.spec
    if job.kind == "train":
        return [_train_key(spec.arch_name, spec.feature_dim, spec.bn_head, spec.regime,
                           asdict(ctx.plan.profile.recipe_for(spec)), ctx.data.fingerprint)]
    return [_measure_key(_arch(spec), getattr(spec, "regime", "zoo"), *p)
            for p in planned_by(ctx.families[job.family], spec, ctx)]


def estimate(todo: Sequence[Job], ctx: Context) -> Estimate:
    paces = _paces(ctx)
    seconds, measured, unknown, used = 0.0, 0, 0, set()
    for job in todo:
        for key in _job_keys(job, ctx):
            if paces.get(key):
                seconds += median(wall for wall, _ in paces[key])
                measured += 1
                used.update(device for _, device in paces[key])
            else:
                unknown += 1
    return Estimate(seconds, measured, unknown, tuple(sorted(used)))


def job_prices(todo: Sequence[Job], ctx: Context) -> Dict[str, float]:
    """Seconds per job key at the stores' pace, for the jobs whose every part the stores have
    done before (the grid's ETA; bench/grid/executor.py scales them by this machine's pace)."""
    paces, prices = _paces(ctx), {}
    for job in todo:
        walls = [median(wall for wall, _ in paces[key]) if paces.get(key) else None for key in _job_keys(job, ctx)]
        if walls and None not in walls:
            prices[job.key] = sum(walls)
    return prices
