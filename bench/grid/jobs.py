"""The grid as a list of jobs: train a spec, or measure one spec with one measurement family
(bench/measure/families.py).

Every job has a deterministic key (the same grid gives the same keys on any machine) and
explicit dependencies: an evaluation needs its model's training run, a transfer attack also its
surrogate's. An executor (bench/grid/executor.py) runs them in any order the dependencies allow, in
this process or on a Ray cluster; a job run twice writes the same records (the store is keyed by
measurement), so a retried or resumed job never duplicates a row.

A ``Context`` holds what every job of a plan needs (the data on the device, the evaluation
subsets, the stores); each process builds it once and reuses it for the jobs it runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from attacks import ATTACKS
from bench.checkpoints import CheckpointStore
from bench.data import load_dataset, stratified_indices, to_float
from bench.errors import BenchError
from bench.grid.models import (external_run_key, get_external_model, get_model, get_zoo_model, run_key,
                               zoo_weights)
from bench.grid.plan import TautoResolver
from bench.measure import families
from bench.measure.attack_suite import AttackSuite
from bench.measure.base import Family, check_planned
from bench.measure.calibration import estimate_temperature
from bench.measure.transfer import surrogate_of
from bench.provenance import provenance
from bench.store import SCHEMA, ResultStore, legacy_record_id, model_source, part_of, record_id
from models import ModelSpec
from models.external import ExternalSpec, check_contract
from models.registry import LoadedSpec
from models.zoo import ZooSpec


@dataclass(frozen=True)
class Job:
    key: str  # e.g. "train/fastnet_T5/1a2b..." or "eval/fastnet_T5/attacks/3c4d..."
    kind: str  # "train" or "eval"
    spec: ModelSpec  # T already resolved (a _Tauto model carries its number)
    family: str = ""  # eval: the measurement family's name ("attacks", "eps sweep", "transfer", ...)
    deps: Tuple[str, ...] = ()

    @property
    def log_name(self) -> str:
        return self.key.replace("/", "__").replace(" ", "_").replace("@", "-at-") + ".log"


class Context:
    """What the jobs of one plan share in one process: built once, reused for every job."""

    def __init__(self, plan, log: Callable[[str], None]):
        self.plan = plan
        # sizes are checked on the labels before the data is decoded into the cache (hundreds of MB),
        # and again on the data loaded (a cache built earlier skips the first check)
        data = load_dataset(plan.data_root, plan.cache_dir, progress=plan.progress, dataset=plan.dataset,
                            check=lambda undecoded: check_sizes(plan, undecoded))
        check_sizes(plan, data)  # before the data line: bad sizes are one line, as every bad input
        log(f"data: {data.name} (fingerprint {data.fingerprint[:12]}), train {len(data.train)}, "
            f"test {len(data.test)}")
        self.data = data.to(plan.device)
        for s in plan.models:  # a network from outside, on a few test images, before anything is written
            if isinstance(s, ExternalSpec):
                if s.source != "python":  # a file's, built on the CPU (audit()'s is on the device already)
                    s.model.to(plan.device)
                self._check_contract(s.name, s.model)
        ev = plan.profile.eval
        self.split = self.data.split(ev.split)
        self.eval_split = self.split.subset(stratified_indices(self.split.labels, ev.n, ev.subset_seed))
        self.store = ResultStore(plan.results_dir)
        self.ckpts = CheckpointStore(plan.checkpoint_dir)
        self.families: Dict[str, Family] = {f.name: f for f in (F.prepare(self, log) for F in families.FAMILIES) if f}
        self._tauto = TautoResolver(plan.profile.tauto, self.data, log)
        self._estimated: Dict[str, ExternalSpec] = {}
        self._log = log
        self._last_model: Optional[tuple] = None  # (spec name, what model() returned) of the last job
        self._verified: Dict[tuple, dict] = {}
        self._zoo: Dict[str, Tuple[str, str]] = {}

    def load_zoo_models(self, log: Callable[[str], None]) -> None:
        """Each RobustBench model of the plan loaded (downloaded first when its checkpoint is
        missing) and put through the outside-model contract before anything is written: offline
        without its file, or with weights that give NaN logits, the run stops in one line rather
        than in its first job, after the results folder and the job's log exist. The driver calls
        it (not --dry-run, which downloads nothing, nor a Ray worker); the last model loaded is
        kept for its first job."""
        for s in self.plan.models:
            if isinstance(s, ZooSpec):
                loaded = get_zoo_model(s, self.plan, self.data, log)
                self._check_contract(s.name, loaded[1])
                self._last_model = (s.name, loaded)
                self._zoo[s.name] = (loaded[0], loaded[2]["weights_sha256"])  # hashed in the loading: not again

    def _check_contract(self, name: str, model) -> None:
        """models.external's contract for a network from outside the grid, on 8 test images."""
        check_contract(name, model, to_float(self.data.test.images[:8]), self.data.num_classes, self.data.name)

    def resolve_T(self, spec: ModelSpec) -> ModelSpec:
        """The T a spec does not state: a _Tauto model's from its formula; a caller's own model's
        estimated once, by post-hoc temperature scaling on held-out test images."""
        if not (isinstance(spec, ExternalSpec) and spec.T is None):
            return self._tauto(spec)
        if spec.name not in self._estimated:
            try:
                T = estimate_temperature(spec.model, self.data, self.plan.profile.eval)
            except BenchError as e:
                raise BenchError(f"{spec.name}: {e}") from None
            self._log(f"{spec.name}: training temperature not given; estimated T = {T:.3g} by post-hoc temperature "
                      f"scaling on held-out test images")
            self._estimated[spec.name] = replace(spec, T=T, T_source="estimated")
        return self._estimated[spec.name]

    def verified(self, spec: ModelSpec, key: str) -> Optional[dict]:
        """``ckpts.verify`` once per weights file: the planner asks for every job of a model, and
        hashing a ResNet's weights nine times over a grid of a hundred adds up."""
        k = (spec.run.name, spec.checkpoint, key)
        if k not in self._verified:
            meta = self.ckpts.verify(spec, key)
            if meta is None:
                return None  # not saved yet: ask again next time
            self._verified[k] = meta
        return self._verified[k]

    def zoo_weights(self, spec: ZooSpec) -> Optional[Tuple[str, str]]:
        """(key, sha256) of a zoo model's checkpoint files, hashed once; None until they are here."""
        if spec.name not in self._zoo:
            found = zoo_weights(spec, self.plan, self.data)
            if found is None:
                return None  # to be downloaded: ask again next time
            self._zoo[spec.name] = found
        return self._zoo[spec.name]

    def model(self, spec: ModelSpec, log: Callable[[str], None]):
        """(weights key, model, sidecar, the spec columns of its records): a trained spec's
        checkpoint (trained first if missing), a zoo model or a caller's own. An executor runs a
        model's jobs one after another, so the last one loaded is kept rather than re-read."""
        if self._last_model is None or self._last_model[0] != spec.name:
            if isinstance(spec, ZooSpec):
                loaded = get_zoo_model(spec, self.plan, self.data, log)
            elif isinstance(spec, ExternalSpec):
                loaded = get_external_model(spec, self.weights_key(spec), self.plan)
            else:
                _, model, meta = get_model(spec, self.plan, self.data, self.ckpts, self.eval_split, log)
                loaded = (self.weights_key(spec), model, meta, spec_columns(spec, meta))
            self._last_model = (spec.name, loaded)
        return self._last_model[1]

    def ckpt_key(self, spec: ModelSpec) -> str:
        return run_key(spec, self.plan, self.data)

    def weights_key(self, spec: ModelSpec) -> str:
        """The identity of the weights measured: @best and @last of one run are two models."""
        if isinstance(spec, ZooSpec):
            return spec.name
        if isinstance(spec, ExternalSpec):
            return external_run_key(spec.name, spec.weights_sha256, self.data.fingerprint,
                                    spec.T if spec.T_source == "given" else None)
        return self.ckpt_key(spec) + (f"@{spec.checkpoint}" if spec.checkpoint else "")

    def identity(self, weights_key: str, n: int, threat: str, view: str, params: dict) -> dict:
        ev = self.plan.profile.eval
        return {"run_key": weights_key, "dataset": self.data.name, "split": ev.split, "n": n,
                "subset_seed": ev.subset_seed, "attack_seed": ev.attack_seed, "threat": threat, "view": view,
                "params": params}

    def load(self, spec: ModelSpec, log: Callable[[str], None]):
        """Another model of the grid (a transfer attack's surrogate), trained first if missing."""
        return get_model(spec, self.plan, self.data, self.ckpts, self.eval_split, log)[1]


def spec_source(spec) -> str:
    """What ``bench.store.model_source`` will say of this spec's records."""
    if isinstance(spec, ZooSpec):
        return "zoo"
    if isinstance(spec, ExternalSpec):
        return "python" if spec.source == "python" else "file"
    return "grid"


def _described(source: str, where: Optional[str]) -> str:
    return {"grid": "the grid (trained by the harness)", "zoo": "RobustBench", "python": "a model handed to audit()",
            "file": f"the file {where}"}[source]


def check_model_names(plan, store: ResultStore, dataset: str) -> None:
    """A store's leaderboard has one row a name (and dataset): the latest network measured under
    it. A network given as a file is named by the file's stem, so fastnet_T1.safetensors run into
    a folder that holds the grid's fastnet_T1 took that model's row, and the claims with it, without
    a word (and the grid's run after it the file's); another file of that stem likewise. Refused
    before anything is written. Two runs of one source are the same model measured again (a grid
    model retrained, a model handed to audit() again), the later replacing the earlier's row."""
    mine = {s.name: s for s in plan.models}
    for rec in store.records():
        s = mine.get(rec.get("model"))
        if s is None or rec.get("dataset") != dataset:
            continue
        theirs, ours = model_source(rec), spec_source(s)
        if theirs == ours and (ours != "file" or rec.get("weights_sha256") in (None, s.weights_sha256)):
            continue
        if theirs == ours == "file":
            raise BenchError(f"{plan.results_dir} already holds another network named {s.name} (weights "
                             f"{rec['weights_sha256'][:12]}, from {rec.get('weights_source')}): a file's model is "
                             f"named by its stem, so rename {s.source} or use another --results")
        fix = {"file": f"rename {getattr(s, 'source', '')} (a file's model is named by its stem)",
               "python": "give audit() another name="}.get(ours, "use another --results")
        raise BenchError(f"{plan.results_dir} holds {s.name} from {_described(theirs, rec.get('weights_source'))}, "
                         f"and this run's {s.name} is from {_described(ours, getattr(s, 'source', None))}: the "
                         f"leaderboard keeps one network a name, the later hiding the other: {fix}")


def check_sizes(plan, data) -> None:
    """The plan's sizes against the data's, before any job writes: a subset larger than its
    split, an adversarial run's held-out images leaving too few to train on, a training set
    smaller than one batch, fewer than two classes. Each error names the setting to change."""
    if data.num_classes < 2:
        raise BenchError(f"data {data.name} has {data.num_classes} class ({', '.join(data.classes)}): a classifier "
                         f"needs at least 2; point --data-root at a tree with two or more class folders")
    ev = plan.profile.eval
    for name in families.built_attacks(ev):
        need = ATTACKS[name].min_classes
        if data.num_classes < need:
            raise BenchError(f"{name} needs at least {need} classes ({ATTACKS[name].loss} loss) and {data.name} has "
                             f"{data.num_classes}: leave it out of the run (--attack, or the profile's [eval]), or use "
                             f"data with more classes")
    split = data.split(ev.split)
    for key, n in (("n", ev.n), ("shift_n", ev.shift_n)):
        if n is not None and n > len(split):
            flag = " (or --n-test)" if key == "n" else " (or --shift-n)"
            raise BenchError(f"[eval] {key}{flag} = {n} is more than the {len(split)} images of the {ev.split} split "
                             f"of {data.name}: lower it")
    for s in plan.models:
        if isinstance(s, ExternalSpec) and s.num_classes not in (None, data.num_classes):
            raise BenchError(f"{s.name} predicts {s.num_classes} classes and {data.name} has {data.num_classes}: "
                             f"give the weights of a {data.num_classes}-class model (or another --data-root)")
    runs = {s.run.name: s.run for s in plan.models if not isinstance(s, LoadedSpec)}
    for s in list(runs.values()):  # the transfer attack's surrogates are trained too
        sur = surrogate_of(s, ev)
        if sur is not None:
            runs.setdefault(sur.name, sur)
    for spec in runs.values():
        recipe = plan.profile.recipe_for(spec)
        where = f"recipe of {spec.name}:"
        try:
            idx = stratified_indices(data.train.labels, recipe.train_subset, recipe.subset_seed)
        except BenchError as e:
            raise BenchError(f"{where} train_subset = {recipe.train_subset} does not fit the {len(data.train)} "
                             f"training images of {data.name} ({e}): lower it") from None
        n = len(idx)
        what = f"the {n} training images" + (f" (train_subset {recipe.train_subset})" if recipe.train_subset else "")
        if spec.adversarial:
            if recipe.at_holdout >= n:
                raise BenchError(f"{where} at_holdout = {recipe.at_holdout} held-out images leave none of {what} to "
                                 f"train on: lower at_holdout (in [recipe] or the [[grid]] entry's recipe)")
            n -= recipe.at_holdout
            what = f"the {n} training images left after at_holdout = {recipe.at_holdout}"
        if n < recipe.batch_size:
            raise BenchError(f"{where} batch_size = {recipe.batch_size} is more than {what}: lower batch_size or "
                             f"train on more images")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def planned_by(family, spec: ModelSpec, ctx: Context) -> list:
    """What ``family`` measures on ``spec``: nothing where the model's [[grid]] entry narrows its
    measurements (`measure`) to others; the attack suite's clean accuracy is "clean"."""
    part = "clean" if family.name == AttackSuite.name else family.name
    return family.planned(spec, ctx) if ctx.plan.profile.measures(spec, part) else []


def build_jobs(ctx: Context) -> List[Job]:
    """The plan's grid as jobs, each training run once however many checkpoints and surrogate
    uses it has; in an order that runs every dependency first."""
    jobs: Dict[str, Job] = {}

    def train_job(spec: ModelSpec) -> str:
        run = spec.run
        key = f"train/{run.name}/{ctx.ckpt_key(run)}"
        jobs.setdefault(key, Job(key, "train", run))
        return key

    # (run, family) -> the first checkpoint's job: its twin's waits for it, so where the two are one
    # set of weights the second copies the first's records instead of measuring them again beside
    # it (on Ray both would otherwise start once training is done)
    first_of_run: Dict[tuple, str] = {}
    for spec in map(ctx.resolve_T, ctx.plan.models):
        deps = () if isinstance(spec, LoadedSpec) else (train_job(spec),)
        wkey = ctx.weights_key(spec)
        for family in ctx.families.values():
            planned = planned_by(family, spec, ctx)
            if not planned:
                continue
            fam_deps = deps + tuple(train_job(s) for s in family.needs(spec, ctx))
            key = f"eval/{spec.name}/{family.name.replace(' ', '_')}/{_digest([wkey, planned])}"
            if twin_of(spec) is not None:
                fam_deps += (first_of_run.setdefault((spec.run.name, family.name), key),)
            jobs[key] = Job(key, "eval", spec, family.name, tuple(d for d in dict.fromkeys(fam_deps) if d != key))
    return list(jobs.values())


def ordered(jobs: List[Job]) -> List[Job]:
    """The jobs, each after the dependencies it has among them (stable otherwise)."""
    by_key = {j.key: j for j in jobs}
    out, seen = [], set()

    def visit(job: Job):
        if job.key in seen:
            return
        seen.add(job.key)
        for d in job.deps:
            if d in by_key:
                visit(by_key[d])
        out.append(job)

    for j in jobs:
        visit(j)
    return out


def is_done(job: Job, ctx: Context) -> bool:
    """True when the store already holds the job's outcome for these very weights: a checkpoint
    for a training run; every planned record, of the family's version, for an evaluation."""
    if isinstance(job.spec, ZooSpec):
        # from its checkpoint files' hash, the key its records are under once it is loaded: a
        # complete zoo run's --dry-run listed (and priced) every job again, which the run then skipped
        found = ctx.zoo_weights(job.spec)
        if found is None:
            return False
        wkey, sha = found
    elif isinstance(job.spec, ExternalSpec):
        wkey, sha = ctx.weights_key(job.spec), job.spec.weights_sha256
    else:
        key = ctx.ckpt_key(job.spec)
        meta = ctx.verified(job.spec, key)  # a corrupt checkpoint stops the run here, before it writes
        if meta is None:
            return False
        if job.kind == "train":
            return not meta.get("best_weights") or ctx.verified(replace(job.spec, checkpoint="best"), key) is not None
        wkey, sha = ctx.weights_key(job.spec), meta["weights_sha256"]
    family = ctx.families[job.family]
    return _records_done(ctx, wkey, planned_by(family, job.spec, ctx), sha, family)


def to_measure(job: Job, ctx: Context) -> list:
    """What running evaluation ``job`` now would measure of its planned measurements: where its
    checkpoint is here and the store holds some of them for these weights, what its family
    measures again with the missing ones (Family.remeasures: one revised attack, not the suite);
    else all of them."""
    family = ctx.families[job.family]
    planned = planned_by(family, job.spec, ctx)
    if ctx.plan.force or isinstance(job.spec, (ZooSpec, ExternalSpec)):
        return planned
    meta = ctx.verified(job.spec, ctx.ckpt_key(job.spec))
    if meta is None:
        return planned
    missing = _missing(ctx, ctx.weights_key(job.spec), planned, meta["weights_sha256"], family)
    return family.remeasures(planned, missing) if missing else planned


def _missing(ctx: Context, weights_key: str, planned, sha: Optional[str], family) -> list:
    """The planned measurements the store does not hold for these weights (at their version)."""
    return [p for p in planned if stored_record(ctx, weights_key, p, sha, family) is None]


def stored_record(ctx: Context, weights_key: str, p, sha: Optional[str], family) -> Optional[dict]:
    """The store's record of measurement ``p`` of these weights, if it is of the version ``family``
    measures ``p`` at now."""
    d = _current_record(ctx, weights_key, p, family)
    made_at = None if d is None else d.get("eval_batch_size")
    if family.batch_seeded and made_at not in (None, ctx.plan.profile.eval.batch_size):
        return None  # other random starts (a record from before eval_batch_size was kept cannot say: it stands)
    return d if d is not None and d.get("weights_sha256") == sha and not family.stale(d, p, ctx) else None


def _current_record(ctx: Context, weights_key: str, p, family) -> Optional[dict]:
    """The store's record of measurement ``p`` under ``weights_key``, of the version ``family``
    measures ``p`` at now, whichever weights it was made on."""
    ident, eval_n = ctx.identity(weights_key, *p), len(ctx.eval_split)
    part = family.parts_of_evaluation and p[0] < eval_n
    d = ctx.store.get(record_id(ident, eval_n if part else None))
    if d is None and part:  # one made before the evaluation's n was in its id, if it says it is this one's:
        # that name is also a whole evaluation's on as many images, whose record names no evaluation
        d = ctx.store.get(legacy_record_id(ident))
        d = d if d is not None and part_of(d) == eval_n else None
    if d is None or d.get("measure_version", 1) != family.version_of(p) or d.get("schema") != SCHEMA:
        return None
    return d


def held_for_retraining(job: Job, ctx: Context) -> Optional[str]:
    """For an evaluation whose model has no checkpoint here (a fresh clone of a committed store,
    an emptied cache) while the store holds every record it plans, at today's versions, from one
    earlier training of the same run: the device those records name. Training again finds them if
    it gives the same weights (the same CPU capability and thread count), and the job measures anew
    if not. Said before the run, so that "to run" does not read as "to measure". None otherwise."""
    if job.kind != "eval" or isinstance(job.spec, (ZooSpec, ExternalSpec)) \
            or ctx.verified(job.spec, ctx.ckpt_key(job.spec)) is not None:
        return None
    family, wkey = ctx.families[job.family], ctx.weights_key(job.spec)
    records = [_current_record(ctx, wkey, p, family) for p in planned_by(family, job.spec, ctx)]
    if not records or not all(records) or len({d.get("weights_sha256") for d in records}) != 1:
        return None
    return records[0].get("device") or "an unnamed device"


def held_evaluations(todo: Sequence[Job], ctx: Context) -> Dict[str, str]:
    """held_for_retraining over a grid's jobs left, read once at its start: job key -> the device
    its records name. None under --force, which measures every evaluation again."""
    if ctx.plan.force:
        return {}
    return {j.key: d for j in todo if (d := held_for_retraining(j, ctx))}


def _records_done(ctx: Context, weights_key: str, planned, sha: Optional[str], family) -> bool:
    return not _missing(ctx, weights_key, planned, sha, family)


def spec_columns(spec: ModelSpec, meta: dict) -> dict:
    return {"model": spec.name, "arch": spec.arch_name, "T": spec.T, "head": spec.head, "regime": spec.regime,
            "lr_scale": spec.lr_scale, "seed": spec.seed, "feature_dim": spec.feature_dim,
            "checkpoint": meta.get("checkpoint", "last"), "best_epoch": meta.get("best_epoch"),
            "catastrophic_overfitting_epoch": meta.get("catastrophic_overfitting_epoch")}


def execute(job: Job, ctx: Context, log: Callable[[str], None]) -> str:
    """Run one job here and now; returns its one-line summary. Safe to run twice, or in two
    processes at once: a training run is locked per checkpoint, and records are keyed by
    measurement."""
    plan = ctx.plan
    wkey, model, meta, cols = ctx.model(job.spec, log)
    if job.kind == "train":  # the run's own key: a training job's spec has no @checkpoint
        return f"checkpoint {wkey}, test acc {100 * meta.get('test_acc', float('nan')):.1f}%"
    spec, family = job.spec, ctx.families[job.family]
    planned = planned_by(family, spec, ctx)
    missing = planned if plan.force else _missing(ctx, wkey, planned, meta["weights_sha256"], family)
    if not missing:
        return "already in the store (--force re-evaluates)"
    twin, copied = (None, []) if plan.force else _copy_from_twin(ctx, spec, wkey, family, missing, meta, cols)
    if copied:
        missing = [p for p in missing if p not in copied]
        if not missing:
            return (f"the same weights as {twin.name}: its {len(copied)} record{'s' * (len(copied) != 1)} copied "
                    f"(--force measures them)")
        log(f"  {spec.name}: the same weights as {twin.name}: {len(copied)} of its records copied, the other "
            f"{len(missing)} measured here")
    ev, prov = plan.profile.eval, provenance(plan.device)
    measurements = family.run_missing(model, spec, ctx, log, missing)
    check_planned(family.name, planned, measurements, missing)
    for m in measurements:
        record = dict(ctx.identity(wkey, m.n, m.threat, m.view, m.params), **cols, **prov, family=m.family,
                      source=m.source or f"{ctx.data.name}:{ev.split}", num_classes=ctx.data.num_classes,
                      corruption=m.corruption or None, severity=m.severity, magnitude=m.magnitude, eps=m.eps,
                      steps=m.steps, metrics=m.metrics, wall_s=round(m.wall_s, 3),
                      weights_sha256=meta["weights_sha256"], profile=plan.profile.name,
                      # a random start's seed is the batch's (bench/measure/adversarial.py): to
                      # draw the same starts again, the batches must fall as they fell
                      eval_batch_size=ev.batch_size,
                      measure_version=family.version_of(m.identity))
        if m.bits:
            record["bits"] = m.bits
        record.update(m.extra)
        ctx.store.put(record)
    return family.summary(measurements)


def twin_of(spec) -> Optional[ModelSpec]:
    """The other checkpoint of an adversarial run (@best for @last and back), whose records this
    one's copy where the two are one set of weights; None for a model without one."""
    if not isinstance(spec, ModelSpec) or spec.checkpoint not in ("best", "last"):
        return None
    return replace(spec, checkpoint="last" if spec.checkpoint == "best" else "best")


def _copy_from_twin(ctx: Context, spec: ModelSpec, wkey: str, family, missing, meta: dict, cols: dict):
    """(twin, the measurements copied): where an adversarial run's best epoch was its last, @best
    and @last are one set of weights, and a measurement of one is a measurement of the other (fast
    AT on the cpu profile: 30 minutes a checkpoint). The twin's records are copied under this
    checkpoint's name, each naming the run key it was measured as (`same_weights_as`) and keeping
    that measurement's provenance and wall time; what the twin lacks is measured here."""
    twin = twin_of(spec)
    if twin is None:
        return None, []
    twin_meta = ctx.verified(twin, ctx.ckpt_key(spec))
    if twin_meta is None or twin_meta["weights_sha256"] != meta["weights_sha256"]:
        return None, []
    twin_key, copied = ctx.weights_key(twin), []
    for p in missing:
        rec = stored_record(ctx, twin_key, p, meta["weights_sha256"], family)
        if rec is None:
            continue
        rec = {k: v for k, v in rec.items() if k not in ("id", "schema")}
        rec.update(ctx.identity(wkey, *p), **cols, same_weights_as=rec.get("same_weights_as") or twin_key)
        ctx.store.put(rec)
        copied.append(p)
    return twin, copied


class JobLog:
    """The per-job log file (appended to: a retried job's attempts follow one another), plus
    an optional echo."""

    def __init__(self, folder: Path, job: Job, echo: Optional[Callable[[str], None]] = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.echo = folder / job.log_name, None
        self(f"== {job.key}: attempt by pid {os.getpid()} on {socket.gethostname()} at "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        self.echo = echo

    def __call__(self, msg: str):
        with open(self.path, "a") as f:
            f.write(msg + "\n")
        if self.echo:
            self.echo(msg)

