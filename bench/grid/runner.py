"""The runner: turn a plan into its grid of jobs (train a model; evaluate it on one family of
threats), skip those the stores already hold, run the rest on an executor, build the reports.
Data flows one way:

    registry spec -> trainer -> checkpoint store -> evaluator -> results store -> reports
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Callable, Dict, List

import pandas as pd

from bench.grid.estimate import Pricer, estimate
from bench.grid.executor import GridProgress, LocalExecutor
from bench.grid.jobs import Context, Job, build_jobs, check_model_names, held_evaluations, is_done
from bench.grid.models import zoo_downloads
from bench.grid.plan import Plan
from bench.provenance import DEVICE_SEP, avx2_cap_may_match, device_name
from bench.report.publish import write_reports


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def run(plan: Plan, log: Callable[[str], None] = _log, executor=None, pages: bool = True) -> pd.DataFrame:
    """Run the plan's grid as jobs (bench/grid/jobs.py) on an executor (default: this process), then
    build the reports (``pages=False``: the tables alone); returns the leaderboard. Every job
    stores what it measured as soon as it is done, so an interrupted run resumes where it stopped."""
    started = time.perf_counter()
    ctx = Context(plan, log)
    ctx.load_zoo_models(log)
    jobs, todo, held = _grid(ctx, log)
    executor = executor or LocalExecutor()
    pricer = Pricer(todo, ctx, held)
    progress = GridProgress(len(jobs), len(jobs) - len(todo), log, todo, pricer.prices(todo),
                            reprice=pricer.after_training)
    executor.run(todo, ctx, progress, plan.log_dir, log)
    board = write_reports(ctx.store, plan.results_dir, pages=pages, checkpoints=plan.kept_checkpoint_dir)
    log(f"done in {time.perf_counter() - started:.0f}s; {'reports' if pages else 'tables'} in {plan.results_dir}")
    return board


def preview(plan: Plan, log: Callable[[str], None] = _log) -> Dict[str, List[str]]:
    """What ``run`` would do with the plan, without doing it (``--dry-run``): the grid, what the
    stores already hold, per model the jobs still to run (``train`` or a family's name), and how
    long they would take at the pace of the stores' own records (bench/grid/estimate.py). Reads
    the stores; writes nothing but the decoded data, when the cache does not have it yet; fetches
    no shift set."""
    ctx = Context(replace(plan, fetch_shift_sets=False), log)
    for line in zoo_downloads(plan):
        log(line)
    _, todo, held = _grid(ctx, log)
    left: Dict[str, List[str]] = {}
    for job in todo:
        part = job.family
        if job.kind == "train":
            done = ctx.ckpts.partial_epoch(job.spec.run, ctx.ckpt_key(job.spec.run))
            part = "train" + (f" (from epoch {done}, an interrupted run's state)" if done else "")
        left.setdefault(job.spec.name, []).append(part)
    log("would run (--dry-run: nothing was run or written):" if left else "nothing to run")
    for name, parts in left.items():
        log(f"  {name}: {', '.join(parts)}")
    if todo:
        log(estimate(todo, ctx, held).line())
    return left


def _grid(ctx: Context, log: Callable[[str], None]):
    """The plan's jobs, those the stores do not hold yet, and of these the evaluations held for
    their run's retraining (job key -> the device their records name), announced in one line."""
    plan = ctx.plan
    # here, in the driver, not in Context: a Ray worker's Context would read the whole store again
    check_model_names(plan, ctx.store, ctx.data.name)
    jobs = build_jobs(ctx)
    # --force re-evaluates; it never retrains (delete a checkpoint to retrain it)
    todo: List[Job] = [j for j in jobs if (plan.force and j.kind == "eval") or not is_done(j, ctx)]
    n_train = sum(j.kind == "train" for j in jobs)
    n_eval = len(jobs) - n_train
    held = held_evaluations(todo, ctx)
    log(f"grid: {_count(len(jobs), 'job')} ({_count(n_train, 'training run')}, {_count(n_eval, 'evaluation')}); "
        f"{len(jobs) - len(todo)} already done" + (" (--force re-evaluates)" if not plan.force else "") +
        f"; {len(todo)} to run" + (_held_note(list(held.values()), ctx) if held else "") +
        f"; job logs in {plan.log_dir}")
    return jobs, todo, held


def _held_note(devices: List[str], ctx: Context) -> str:
    """The grid line's note on evaluations held for a training run to redo (jobs.held_evaluations):
    whether they come back depends on the machine, so it names the records' and this one."""
    n, here = len(devices), device_name(ctx.plan.device)
    cap = ("; capped at AVX2 (make ISA=avx2) this CPU may train their weights, as an AVX-512 AMD EPYC did"
           if avx2_cap_may_match(devices, here) else "")
    return (f" ({n} of them {'an evaluation' if n == 1 else 'evaluations'} the store holds from an earlier training "
            f"of the same run, on {DEVICE_SEP.join(sorted(set(devices)))}: found again if training here gives the same "
            f"weights, as on the same CPU capability and thread count; this machine: {here}{cap})")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"
