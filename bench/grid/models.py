"""Where a grid's models come from: a checkpoint of the store (trained and saved first when it is
missing) or a RobustBench zoo model. One place decides "load or train", for every executor."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from bench.atomic import sha256_files
from bench.checkpoints import CheckpointStore, checkpoint_key
from bench.data import Dataset, to_float
from bench.errors import BenchError
from bench.grid.plan import Plan
from bench.provenance import provenance
from bench.train import CannotResume, train
from models import ModelSpec
from models.registry import format_temperature
from models.external import ExternalSpec
from models.zoo import ZooSpec, checkpoint_paths, load_zoo_model, zoo_run_key


@torch.no_grad()
def _accuracy(model, split, batch_size) -> float:
    correct = 0
    for a in range(0, len(split), batch_size):
        correct += int((model(to_float(split.images[a:a + batch_size])).argmax(1) ==
                        split.labels[a:a + batch_size]).sum())
    return correct / len(split)


def _on_data(key: str, data_fingerprint: str) -> str:
    """The run key of a network from outside the grid, on this data: a record's dataset is the data
    folder's name alone, so another tree of that name is told apart here, as a grid run's key does
    with the data's fingerprint in its checkpoint key."""
    return f"{key}:{data_fingerprint[:8]}"


def external_run_key(name: str, weights_sha256: str, data_fingerprint: str, T: Optional[float] = None) -> str:
    """A caller's own network (a file, audit()'s): two networks of one name never share records,
    nor one network audited at two given temperatures (the scaled view and its calibration are
    other measurements: the second audit found the first's and reported its T). ``T``: the one the
    caller gave; None where the harness estimates it from the weights and data."""
    given = "" if T is None else f":T{format_temperature(T)}"
    return _on_data(f"{name}:{weights_sha256[:16]}{given}", data_fingerprint)


def get_zoo_model(spec: ZooSpec, plan: Plan, data: Dataset, log: Callable[[str], None]):
    """A RobustBench model through models/zoo.py: (key, model, meta, the spec columns of its records)."""
    model, info = load_zoo_model(spec.name, model_dir=plan.cache_dir / "robustbench", device=plan.device)
    if info.get("num_classes") not in (None, data.num_classes):
        raise BenchError(f"{spec.name} has {info['num_classes']} classes; {data.name} has {data.num_classes}")
    log(f"  loaded {info['architecture']} from {', '.join(info['checkpoint_paths'])} ({info['source']})")
    cols = {k: info[k] for k in ("model", "arch", "T", "head", "regime", "lr_scale", "seed", "feature_dim",
                                 "checkpoint")}
    return _on_data(info["run_key"], data.fingerprint), model, {"weights_sha256": info["weights_sha256"]}, cols


def zoo_weights(spec: ZooSpec, plan: Plan, data: Dataset) -> Optional[Tuple[str, str]]:
    """(key, sha256) of a zoo model's weights from its checkpoint files alone, as get_zoo_model
    would give them once loaded; None where a file is not here yet (the run downloads it)."""
    paths = checkpoint_paths(spec.name, plan.cache_dir / "robustbench")
    if not all(p.is_file() for p in paths):
        return None
    sha = sha256_files(paths)
    return _on_data(zoo_run_key(sha), data.fingerprint), sha


def zoo_downloads(plan: Plan) -> List[str]:
    """--dry-run's word on each zoo model whose checkpoint the run would download first (the run
    loads them when it starts: Context.load_zoo_models)."""
    lines = []
    for spec in (s for s in plan.models if isinstance(s, ZooSpec)):
        missing = [str(p) for p in checkpoint_paths(spec.name, plan.cache_dir / "robustbench") if not p.is_file()]
        if missing:
            lines.append(f"{spec.name}: no checkpoint at {', '.join(missing)}: the run downloads it first (offline, "
                         f"put RobustBench's file there)")
    return lines


def get_external_model(spec: ExternalSpec, key: str, plan: Plan):
    """A caller's own network (bench/api.py), in eval mode: (key, model, meta, the spec columns)."""
    cols = {"model": spec.name, "arch": spec.arch, "T": spec.T, "head": "", "regime": spec.regime,
            "lr_scale": False, "seed": None, "feature_dim": None, "checkpoint": "", "T_source": spec.T_source,
            "weights_source": spec.source}
    return key, spec.model.eval(), {"weights_sha256": spec.weights_sha256}, cols


def run_key(spec: ModelSpec, plan: Plan, data: Dataset) -> str:
    """The checkpoint key of ``spec``'s training run under this plan: its recipe, the data, and
    bf16 where the plan's precision trains in it (bench.checkpoints.checkpoint_key)."""
    return checkpoint_key(spec, plan.profile.recipe_for(spec), data.fingerprint, data.num_classes, plan.accel().bf16)


def get_model(spec: ModelSpec, plan: Plan, data: Dataset, ckpts: CheckpointStore, eval_split,
              log: Callable[[str], None]):
    """Load the checkpoint for (spec, recipe, data), or train and save it. An adversarial run is
    trained once and saved with both its checkpoints; ``spec`` says which one comes back."""
    recipe = plan.profile.recipe_for(spec)
    key = run_key(spec, plan, data)
    found = ckpts.load(spec, key, data.num_classes, plan.device)
    if found is None:
        with ckpts.lock(spec, key):  # another process may be training it: wait, then load its result
            found = ckpts.load(spec, key, data.num_classes, plan.device)
            if found is None:
                return _train_and_save(spec, recipe, key, plan, data, ckpts, eval_split, log)
    # the sidecar's test accuracy is the run's last epoch's, @best's too (measured in its own records)
    of = "of @last " if spec.checkpoint == "best" else ""
    log(f"  loaded checkpoint {key}{f' @{spec.checkpoint}' if spec.checkpoint else ''} "
        f"(trained {found[1].get('wall_s', float('nan')):.0f}s, "
        f"test acc {of}{100 * found[1].get('test_acc', float('nan')):.1f}%)")
    return key, found[0], found[1]


def _epoch_line(e: dict) -> str:
    """One line an epoch where no progress bar shows it (a log file, a background run): a long
    training run is otherwise silent for its whole length, and the grid's estimate leaves out a run
    its stores have never seen (a new architecture): the line gives the run's own ETA at its pace
    so far."""
    held_out = (f", held-out clean {100 * e['clean_acc']:.1f}%, margin-PGD {100 * e['pgd_acc']:.1f}%"
                if "pgd_acc" in e else "")
    left = e["epochs"] - e["epoch"]
    eta = f"; ETA {duration(e['wall_s'] / e['epoch'] * left)}" if left else ""
    return (f"    epoch {e['epoch']}/{e['epochs']} ({e['wall_s']:.0f}s{eta}): train loss {e['train_loss']:.3f}, "
            f"train acc {100 * e['train_acc']:.1f}%{held_out}")


def duration(s: float) -> str:
    """An ETA as the grid's progress lines print it: 5m36s, 2h05m."""
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _train_and_save(spec, recipe, key, plan, data, ckpts, eval_split, log):
    n = min(recipe.train_subset or len(data.train), len(data.train))
    held = f" ({recipe.at_holdout} more held out to pick @best)" if spec.adversarial else ""
    n -= recipe.at_holdout if spec.adversarial else 0  # what it trains on (the sidecar's train_n)
    resume = ckpts.load_partial(spec, key)  # an interrupted run goes on from its last epoch
    earlier = []  # the processes that trained it before this one, each up to the epoch it saved last
    if resume is not None:
        prior = resume.info.get("made_by", {})
        earlier = [*resume.info.get("earlier", []),
                   {"device": prior.get("device"), "threads": prior.get("threads"), "to_epoch": resume.epoch}]
    log(f"  training {spec.run.name}: {recipe.epochs} epochs on {n} images{held}"
        + (f", from epoch {resume.epoch} (an interrupted run's state)" if resume is not None else ""))
    accel = plan.accel()  # the precision run_key named, which a Ray worker's GPU does not change

    def run(resume):
        return train(spec.run, recipe, data, plan.device, progress=plan.progress, accel=accel,
                     on_epoch=None if plan.progress else lambda e: log(_epoch_line(e)),
                     snapshot=lambda state: ckpts.save_partial(spec, key, state, provenance(plan.device), earlier),
                     resume=resume)
    try:
        result, why = run(resume), None
    except CannotResume as e:  # else every rerun stopped on it, until someone found in-progress/ and emptied it
        result, why = None, str(e)
    if result is None:  # out of the except block: its traceback would hold the failed run's model and data
        log(f"  cannot resume {spec.run.name} from the saved state of epoch {resume.epoch} ({why}): trained from "
            f"epoch 0 instead")
        ckpts.drop_partial(spec, key)
        resume, earlier = None, []
        result = run(None)
    test_acc = _accuracy(result.model, eval_split, plan.profile.eval.batch_size)
    meta = dict(provenance(plan.device), profile=plan.profile.name, recipe=recipe.to_dict(), dataset=data.name,
                data_fingerprint=data.fingerprint, num_classes=data.num_classes, epochs=recipe.epochs,
                train_n=result.train_n, final_train_loss=result.final_train_loss,
                final_train_acc=result.final_train_acc, test_acc=test_acc, test_n=len(eval_split),
                wall_s=result.wall_s, train_bf16=accel.bf16, train_compile=accel.compile)
    if resume is not None:  # the epochs before it ran in another process, maybe on another machine
        made_by = resume.info.get("made_by", {})
        meta.update(resumed_from_epoch=resume.epoch, resumed_from_device=made_by.get("device"),
                    resumed_from_threads=made_by.get("threads"), trained_before=earlier)
    if spec.adversarial:
        meta.update(best_epoch=result.best_epoch, holdout_history=result.history,
                    catastrophic_overfitting_epoch=result.catastrophic_overfitting_epoch)
    ckpts.save(spec, key, result.model, meta, best_state=result.best_state)
    ckpts.drop_partial(spec, key)
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
