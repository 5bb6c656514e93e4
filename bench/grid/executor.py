"""Executors run the grid's jobs (bench/grid/jobs.py) in an order their dependencies allow.

``LocalExecutor`` runs them one after another in this process (the default). ``RayExecutor``
makes each job a Ray task with a resource request, its dependencies passed as object refs so Ray
starts it only when they are done; a task whose worker dies is retried (Ray's ``max_retries``),
which is safe because a job run twice writes the same records and trains under a lock. Both
write to the same stores, so both give the same table for the same grid at the same thread count
(a Ray job runs --cpus-per-job threads, 1 by default; a local run torch's default, the machine's
cores: the rounding of a few reductions differs, and the records' device says which). (An
adversarial run's @last jobs depend on its @best ones, build_jobs says why.)

Ray is imported only by ``RayExecutor``: the local executor never needs it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from dataclasses import replace
from pathlib import Path
from statistics import median
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from bench.accel import flags_of
from bench.atomic import write_bytes_atomic
from bench.errors import BenchError
from bench.grid.estimate import Price
from bench.grid.jobs import Context, Job, JobLog, execute, ordered
from bench.grid.models import duration
from bench.grid.plan import Plan


class GridProgress:
    """Jobs done / total and an ETA.

    Jobs of one grid differ in cost by a thousand times (a calibration in a second, a training
    run or a model's corruptions in minutes; an attack on an adversarially trained model ten
    times the same attack on a standard one), so one pace for all of them says "2 minutes" after
    the cheap jobs and "25 hours" after a training run. A job the stores have done before
    (``prices``: seconds at the stores' own pace, bench/grid/estimate.py) is priced at that,
    scaled by this run's pace against those prices (the median over its finished priced jobs; a
    job that may be copied from a twin checkpoint at the odds that it is, its pace taken against
    its price if measured; once its run is trained, ``reprice`` prices the run's jobs again, as
    a copy or not);
    any other at the mean of its kind's finished jobs (training, or an evaluation family), an
    evaluation of a family not yet seen at the mean of the finished evaluations. Before any
    evaluation has finished, such a job has no price: the training runs say nothing about it (a
    ResNet-18 trained in 265 s priced its attacks and calibration at 8m50s; they took 26 s), so
    the line counts it instead ("ETA 2m10s and 2 jobs not yet timed"); so is a training run before
    any has finished (a new model's first, after evaluations of 1.5 s each, was priced at 1.5 s).
    The sum is scaled by the wall clock against the jobs' own times, which is how many ran at once
    (Ray)."""

    # a priced job done in under this fraction of its price was not measured here (its records
    # were copied from a twin with the same weights, or another process stored them first): no
    # machine is twenty times faster than the stores' own, so it says nothing about the pace
    SKIPPED = 0.05

    def __init__(self, total: int, done: int, log: Callable[[str], None], todo: Iterable[Job] = (),
                 prices: Optional[Dict[str, Price]] = None,
                 reprice: Optional[Callable[[Job], Dict[str, Price]]] = None):
        self.total, self.done, self.log, self.reprice = total, done, log, reprice
        self.start = time.perf_counter()
        self.left = {j.key: _kind(j) for j in todo}
        self.prices = prices or {}
        self.spent: Dict[str, List[float]] = {}
        self.pace: List[float] = []  # wall / price of the finished priced jobs

    def eta(self) -> Tuple[float, int]:
        """Seconds left for the jobs with a price, and how many jobs left have none."""
        walls = [w for ws in self.spent.values() for w in ws]
        elapsed = time.perf_counter() - self.start
        if not walls or sum(walls) <= 0:
            return elapsed / max(len(walls), 1) * len(self.left), 0
        evals = [w for kind, ws in self.spent.items() if not kind.startswith("train/") for w in ws]
        pace = median(self.pace) if self.pace else 1.0

        def price(key: str, kind: str) -> Optional[float]:
            if key in self.prices:
                return self.prices[key].expected * pace
            if kind in self.spent:
                return sum(self.spent[kind]) / len(self.spent[kind])
            if kind.startswith("train/"):  # no training run has finished: the evaluations say nothing of one
                return None
            return sum(evals) / len(evals) if evals else None
        prices = [price(key, kind) for key, kind in self.left.items()]
        work = sum(p for p in prices if p is not None)
        return work * elapsed / sum(walls), sum(p is None for p in prices)

    def finished(self, job: Job, wall_s: float, summary: str):
        self.done += 1
        self.spent.setdefault(_kind(job), []).append(wall_s)
        self.left.pop(job.key, None)
        price = self.prices[job.key].measured if job.key in self.prices else None
        if price and wall_s >= self.SKIPPED * price:
            self.pace.append(wall_s / price)
        if job.kind == "train" and self.reprice:
            self.prices.update(self.reprice(job))
        eta = ""
        if self.total > self.done:
            seconds, untimed = self.eta()
            jobs = f"{untimed} job{'s' * (untimed > 1)} not yet timed"
            if not untimed:
                eta = f"; ETA {duration(seconds)}"
            elif untimed < len(self.left):
                eta = f"; ETA {duration(seconds)} and {jobs}"
            else:
                eta = f"; ETA unknown: {jobs}"
        self.log(f"[{self.done}/{self.total}] {job.key} ({wall_s:.0f}s): {summary}{eta}")


def _kind(job: Job) -> str:
    return f"{job.kind}/{job.family}"


class LocalExecutor:
    def run(self, jobs: List[Job], ctx: Context, progress: GridProgress, log_dir: Path,
            log: Callable[[str], None]):
        for job in ordered(jobs):
            t0 = time.perf_counter()
            summary = execute(job, ctx, JobLog(log_dir, job, echo=log))
            progress.finished(job, time.perf_counter() - t0, summary)


# The contexts a Ray worker process has built, by run: a worker that runs several jobs of a run
# loads the data once.
_WORKER_CONTEXTS: Dict[str, Context] = {}


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def plan_for_workers(plan: Plan) -> Plan:
    """The plan as the driver sends it to Ray tasks. Every folder absolute: a task resolves a
    relative one against its node's working folder (where `ray start` ran), so its records,
    checkpoints and logs landed where the driver's reports never looked. Its precision pinned to
    the driver's (``accel_device``, and the flags the driver's environment set), which neither a
    worker's GPU (``on_worker``) nor its own environment changes. The
    driver itself keeps the paths as typed, which its messages quote."""
    root = plan.data_root  # "" or None: downloads into the cache, as bench.data reads it
    return replace(plan, results_dir=_absolute(plan.results_dir), cache_dir=_absolute(plan.cache_dir),
                   store_dir=None if plan.store_dir is None else _absolute(plan.store_dir),
                   pace_dirs=tuple(_absolute(d) for d in plan.pace_dirs),
                   data_root=os.path.abspath(os.path.expanduser(root)) if root else root,
                   accel_device=plan.precision_device,
                   accel_flags=flags_of(os.environ) if plan.accel_flags is None else plan.accel_flags)


def on_worker(plan: Plan, gpu: bool) -> Plan:
    """The plan a Ray task runs: on the GPU Ray gave it, if any, at the precision the driver
    planned. Where the driver could not know the jobs would get a GPU (--device auto joining a
    cluster), they run on it with the CPU's precision defaults (no bf16, no compile): a key of
    their own would make every resume train and measure them again."""
    import torch
    if not gpu:
        return plan
    return replace(plan, device=torch.device("cuda"), accel_device=plan.precision_device)


def run_token(log_dir: Path, run_id: str) -> Path:
    """The file the driver writes for a run where its jobs write (their log folder), which each
    task checks it sees: a node that does not share the driver's folders would write every record
    where the driver never reads, and the run would end showing "(no results)"."""
    return log_dir / f".ray-run-{run_id}"


def check_token(token: str):
    if not os.path.exists(token):
        raise BenchError(f"this Ray node ({socket.gethostname()}) does not see {Path(token).parent} that the driver "
                         f"writes: give --store a folder on a shared file system that every node mounts at the same "
                         f"path")


def token_folders(plan: Plan, log_dir: Path) -> List[Path]:
    """The folders every node must share with the driver: the job logs, and the checkpoints
    (without --store, the cache's: each node's own disk on a cluster, where an evaluation would
    train its own copy of a model another node trained, and every resume again)."""
    folders = [_absolute(log_dir)]
    ckpt = _absolute(plan.checkpoint_dir)
    return folders + ([ckpt] if ckpt != folders[0] else [])


def _ray_job(run_id: str, plan, job: Job, log_dir: str, tokens: Tuple[str, ...], *_deps):
    """A job on a Ray worker. ``_deps`` are the results of the jobs it needs: Ray passes them
    only once those jobs are done, which is all they are here for."""
    import ray
    import torch
    for token in tokens:  # before JobLog, which would make the log folder on this node's own disk
        check_token(token)
    res = ray.get_runtime_context().get_assigned_resources()
    torch.set_num_threads(max(1, int(res.get("CPU", 1))))
    plan = on_worker(plan, bool(res.get("GPU")))
    log = JobLog(Path(log_dir), job)
    t0 = time.perf_counter()

    def run():
        ctx = _WORKER_CONTEXTS.get(run_id)
        if ctx is None:
            _WORKER_CONTEXTS.clear()  # one run's data at a time
            ctx = _WORKER_CONTEXTS[run_id] = Context(plan, log)
        return execute(job, ctx, log)
    return logging_failures(log, run), time.perf_counter() - t0


def logging_failures(log: Callable[[str], None], run: Callable[[], object]):
    """``run()``, its traceback written to the job's log if it raises: a worker's stderr stays in
    its node's Ray session folder (log_to_driver=False), and the driver's error line sends the
    user to this log."""
    try:
        return run()
    except BaseException:
        log(traceback.format_exc().rstrip())
        raise


def _probe(address: str, timeout_s: float = 5.0):
    """ray.init waits for an unreachable cluster for minutes: fail fast instead."""
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except ValueError:
        raise BenchError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto") from None
    except OSError as e:
        raise BenchError(f"no Ray cluster answers at {address} ({e.strerror or e}): start one with "
                         f"`ray start --head` there, or leave out --address for a local one") from None


def _auto_address() -> Optional[str]:
    """The cluster ``--address auto`` joins, looked up as ray.init does (RAY_ADDRESS, the last
    `ray start` on this machine, a running GCS process), none of it over the network; None where
    this Ray's lookup is not the one known here (ray.init then says what is wrong, at run time)."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env == "local":  # ray.init starts a local instance for it: nothing to probe
        return None
    if env and env != "auto":  # "auto" there means what --address auto does: the lookup below
        return env
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:  # a private function: another Ray may not have it
        return None
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError:
        raise BenchError("--address auto found no running Ray cluster on this machine (nor RAY_ADDRESS): start "
                         "one with `ray start --head`, pass --address HOST:PORT, or leave out --address for a "
                         "local one") from None
    except Exception:  # noqa: BLE001 - anything else: leave the verdict to ray.init
        return None


@contextlib.contextmanager
def equal_share_workers():
    """Around ray.init of a new local instance: Ray starts its workers at nice 15, so beside any
    other work on the machine they get what it leaves (the fault tests, beside two busy test
    workers, ran 60 times slower). A local instance started for a run is that run's: its workers
    take an equal share of the cores, unless RAY_worker_niceness says otherwise. A cluster that
    is joined keeps the niceness it was started with (README: `RAY_worker_niceness=0 ray start`)."""
    set_here = "RAY_worker_niceness" not in os.environ
    if set_here:
        os.environ["RAY_worker_niceness"] = "0"
    try:
        yield
    finally:
        if set_here:
            os.environ.pop("RAY_worker_niceness", None)


class RayExecutor:
    """Jobs as Ray tasks. ``address``: None starts a local Ray instance for this run (and stops
    it after); "auto" or "ray://host:port" or "host:port" joins a running cluster."""

    def __init__(self, address: Optional[str] = None, cpus_per_job: float = 1, gpus_per_job: Optional[float] = 0,
                 max_retries: int = 3):
        self.address, self.cpus, self.gpus, self.max_retries = address, cpus_per_job, gpus_per_job, max_retries

    def check(self):
        """Fail now, in one line, where the cluster cannot be reached (before anything runs)."""
        if self.address == "auto":
            address = _auto_address()
            if address is not None:
                _probe(address)
        elif self.address not in (None, "local"):
            _probe(self.address)

    def _init(self, log):
        try:
            import ray
        except ImportError:
            raise BenchError("--executor ray needs Ray: pip install -e '.[ray]'") from None
        if ray.is_initialized():
            return ray, False
        self.check()
        # ray.init installs its own SIGTERM handler (sys.exit(15), no line): the run's own is put
        # back, so that a SIGTERM stops a Ray run as it does a local one (bench.run: one line, 143)
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            with equal_share_workers() if self.address is None else contextlib.nullcontext():
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = self.address or "a new local instance"
            raise BenchError(f"cannot reach a Ray cluster at {where} ({str(e).splitlines()[0]}): start one with "
                             f"`ray start --head` or leave out --address") from None
        finally:
            if sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, sigterm)
        res = ray.cluster_resources()
        if self.gpus is None:  # --device auto: a GPU per job where the cluster has them
            self.gpus = 1 if res.get("GPU") else 0
        log(f"ray: {ray.get_runtime_context().gcs_address}, {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs "
            f"in the cluster; each job asks for {self.cpus:g} CPU{'s' * (self.cpus != 1)}"
            f"{f' and {self.gpus:g} GPU' if self.gpus else ''}")
        try:
            self._check_fits(ray, res)
        except BenchError:
            ray.shutdown()
            raise
        return ray, True

    def _check_fits(self, ray, res):
        """A job that no node can hold waits forever, without a word (Ray's warning goes to its own
        log): refused here, where the cluster's nodes are known."""
        if self.gpus and not res.get("GPU"):
            raise BenchError("jobs ask for a GPU but the Ray cluster has none: use --device cpu")
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        for what, flag, asked in (("CPU", "--cpus-per-job", self.cpus), ("GPU", "--gpus-per-job", self.gpus)):
            most = max((n.get(what, 0) for n in nodes), default=0)
            if asked and asked > most:
                raise BenchError(f"{flag} {asked:g}: the largest node of the Ray cluster has {most:g} {what}s, so "
                                 f"no job could start: ask for at most {most:g}")

    def run(self, jobs: List[Job], ctx: Context, progress: GridProgress, log_dir: Path,
            log: Callable[[str], None]):
        if not jobs:
            return
        ray, started = self._init(log)
        try:
            self._run(ray, jobs, ctx, progress, log_dir)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray, jobs, ctx, progress, log_dir):
        run_id, log_dir = uuid.uuid4().hex, _absolute(log_dir)
        tokens = tuple(run_token(folder, run_id) for folder in token_folders(ctx.plan, log_dir))
        try:
            for token in tokens:
                write_bytes_atomic(token, f"{socket.gethostname()} {os.getpid()}\n".encode())
            self._dispatch(ray, jobs, ctx, progress, log_dir, run_id, tuple(map(str, tokens)))
        finally:
            for token in tokens:
                token.unlink(missing_ok=True)

    def _dispatch(self, ray, jobs, ctx, progress, log_dir, run_id, tokens):
        task = ray.remote(_ray_job)
        plan_ref = ray.put(plan_for_workers(ctx.plan))
        refs: Dict[str, object] = {}
        for job in ordered(jobs):
            deps = [refs[d] for d in job.deps if d in refs]
            refs[job.key] = task.options(name=job.key, num_cpus=self.cpus, num_gpus=self.gpus,
                                         max_retries=self.max_retries, retry_exceptions=False).remote(
                run_id, plan_ref, job, str(log_dir), tokens, *deps)
        by_key = {j.key: j for j in jobs}
        pending = {ref: by_key[key] for key, ref in refs.items()}
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready)
            try:
                summary, wall_s = ray.get(ready)
            except Exception as e:  # noqa: BLE001 - a task error, a worker lost for good, a dependency's
                for ref in pending:
                    ray.cancel(ref, force=True)
                cause = getattr(e, "cause", None) or e
                first = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
                raise BenchError(f"job {job.key} failed on Ray ({first}); its log: "
                                 f"{log_dir / job.log_name}; finished jobs are kept: rerun to resume") from None
            progress.finished(job, wall_s, summary)
