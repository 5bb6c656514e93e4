"""The training loop: CE(z / T, y) on in-memory data, augmentation on the device (after airbench).

One function, no framework. The temperature lives here, in the loss, never in the model.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from attacks.registry import make_attack, parse_eps
from attacks.views import make_view
from bench.accel import Accel
from bench.data import Dataset, augment, stratified_indices, to_float
from bench.errors import BenchError
from bench.measure.adversarial import clean_pass, run_attack
from bench.measure.base import frac
from bench.profiles import Recipe
from models import ModelSpec, build_model


def temperature_loss(logits: torch.Tensor, labels: torch.Tensor, T: float, *, lr_scale: bool = False,
                     label_smoothing: float = 0.0) -> torch.Tensor:
    """CE(z / T, y). Its gradient in z is (softmax(z/T) - onehot(y)) / T.

    ``lr_scale`` multiplies the loss by T, which cancels that 1/T: the logit-space step matches
    T=1 and only the direction changes (the control arm of science.md that separates the two
    mechanisms). Unlike multiplying the learning rate by T, it leaves weight decay alone.
    """
    loss = F.cross_entropy(logits.float() / T, labels, label_smoothing=label_smoothing)
    return loss * T if lr_scale else loss


def standard_step(model, x, y, T, lr_scale: bool, label_smoothing: float, bf16: bool):
    """The forward half of a standard training step: (loss, logits). A module-level function
    taking the temperature as an argument, so that one torch.compile of it serves every training
    run of an architecture (bench/accel.py). The model runs under bf16 autocast when asked; the
    loss takes float32 logits."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    return temperature_loss(logits, y, T, lr_scale=lr_scale, label_smoothing=label_smoothing), logits


# Bump when a change to this file changes the weights a recipe produces: it is part of the
# checkpoint key, so old checkpoints are not silently reused. 4: the adversarial runs' held-out
# check uses the early-stopped margin PGD (never weaker, so @best may pick another epoch), and a
# store's records of the PGD before early stop fall under the older run key, out of the leaderboard.
TRAINER_VERSION = 4


def make_schedule(optimizer, recipe: Recipe, total_steps: int):
    """One-cycle: linear from lr/10 up to lr over the warm-up, then linear down to lr/1000; or
    cosine after a linear warm-up. Written as one LambdaLR because torch's OneCycleLR divides by
    zero when a tiny recipe has a one-step warm-up."""
    warm = max(1, round(recipe.warmup * total_steps))
    rest = max(1, total_steps - warm)

    def onecycle(s):
        if s < warm:
            return 0.1 + 0.9 * s / warm
        return max(1e-3, 1 - (1 - 1e-3) * (s - warm) / rest)

    def cosine(s):
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / rest)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, onecycle if recipe.schedule == "onecycle" else cosine)


@dataclass
class TrainResult:
    model: torch.nn.Module
    final_train_loss: float
    final_train_acc: float
    train_n: int
    wall_s: float
    # adversarial runs: the weights best on the held-out check, and the check after each epoch
    best_state: Optional[dict] = None
    best_epoch: Optional[int] = None
    history: List[dict] = field(default_factory=list)
    catastrophic_overfitting_epoch: Optional[int] = None


@dataclass
class TrainState:
    """A training run at the end of an epoch, enough to go on from there bit for bit: the
    weights, the optimizer's momentum, the schedule's step, both generators (the batch order and
    augmentation's, and the global one adversarial training's random starts draw from) and an
    adversarial run's held-out history and best weights. ``tensors`` go to safetensors, ``info``
    to JSON (bench/checkpoints.py): nothing of it is pickled."""
    epoch: int  # epochs done
    tensors: Dict[str, torch.Tensor]
    info: dict


def _snapshot(epoch: int, model, optimizer, schedule, gen, result: TrainResult, wall_s: float) -> TrainState:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars = {}
    for i, state in opt["state"].items():
        for name, v in state.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{name}"] = v
            else:
                scalars[f"{i}.{name}"] = v
    tensors["rng.batches"] = gen.get_state()
    tensors["rng.global"] = torch.get_rng_state()
    if gen.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(gen.device)
    for k, v in (result.best_state or {}).items():
        tensors[f"best.{k}"] = v
    info = {"epoch": epoch, "param_groups": opt["param_groups"], "opt_scalars": scalars,
            "schedule": {k: v for k, v in schedule.state_dict().items() if k != "lr_lambdas"},
            "history": result.history, "best_epoch": result.best_epoch, "wall_s": wall_s}
    return TrainState(epoch, tensors, info)


class CannotResume(Exception):
    """A saved state that does not fit this run: saved on another kind of device (its generator's
    state another size) or before an architecture changed (the key names the recipe, not the code)."""


def _restore(state: TrainState, model, optimizer, schedule, gen, result: TrainResult) -> None:
    try:
        _load_state(state, model, optimizer, schedule, gen, result)
    except torch.OutOfMemoryError:  # a full device, not a state that does not fit: the state is kept
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        if "CUDA" in str(e):  # the device failing (a RuntimeError too), not the state
            raise
        raise CannotResume(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None


def _load_state(state: TrainState, model, optimizer, schedule, gen, result: TrainResult) -> None:
    t, info = state.tensors, state.info
    model.load_state_dict({k[len("model."):]: v for k, v in t.items() if k.startswith("model.")}, strict=True)
    opt: dict = {"state": {}, "param_groups": info["param_groups"]}
    for k, v in t.items():
        if k.startswith("opt."):
            i, name = k[len("opt."):].split(".", 1)
            opt["state"].setdefault(int(i), {})[name] = v
    for k, v in info["opt_scalars"].items():
        i, name = k.split(".", 1)
        opt["state"].setdefault(int(i), {})[name] = v
    optimizer.load_state_dict(opt)
    schedule.load_state_dict({**schedule.state_dict(), **info["schedule"]})
    gen.set_state(t["rng.batches"])
    torch.set_rng_state(t["rng.global"])
    if "rng.cuda" in t:
        torch.cuda.set_rng_state(t["rng.cuda"], gen.device)
    best = {k[len("best."):]: v for k, v in t.items() if k.startswith("best.")}
    result.best_state = best or None
    result.history, result.best_epoch = list(info["history"]), info["best_epoch"]
    result.catastrophic_overfitting_epoch = catastrophic_epoch(result.history)


class AdversarialStep:
    """The inner maximisation and outer loss of an adversarial regime, on a batch.

    The inner attacks are torchattacks' own: PGD (Madry et al. 2018) for at and atT1, TPGD (the
    KL attack of TRADES, Zhang et al. 2019) for trades, FFGSM (FGSM from a uniform random start,
    Wong et al. 2020) for fat. The temperature enters the inner loss through the scaled view
    z/T (atT1: T=1, to separate the inner attack's temperature from the outer loss's). Mode
    during the attack follows each method's reference code: training mode (batch statistics) for
    PGD-AT and fast AT, eval mode for TRADES."""

    def __init__(self, spec: ModelSpec, recipe: Recipe, model: torch.nn.Module):
        import torchattacks  # here: the checkpoint store and the reports import this module
        self.regime, self.T = spec.regime, spec.T
        self.beta = recipe.trades_beta
        eps, alpha = parse_eps(recipe.at_eps), parse_eps(recipe.at_alpha)
        view = make_view(model, "raw" if spec.regime == "atT1" else "scaled", spec.T)
        if spec.regime in ("at", "atT1"):
            self.attack = torchattacks.PGD(view, eps=eps, alpha=alpha, steps=recipe.at_steps, random_start=True)
        elif spec.regime == "trades":
            self.attack = torchattacks.TPGD(view, eps=eps, alpha=alpha, steps=recipe.at_steps)
        elif spec.regime == "fat":
            self.attack = torchattacks.FFGSM(view, eps=eps, alpha=recipe.fat_step * eps)
        else:
            raise ValueError(spec.regime)
        if spec.regime != "trades":
            self.attack.set_model_training_mode(model_training=True, batchnorm_training=True)

    def loss(self, model, x, y, lr_scale: bool, label_smoothing: float, autocast):
        """(loss, logits on the adversarial batch) for one training step."""
        with autocast():  # the attack's forward passes too (bf16 on CUDA)
            x_adv = self.attack(x, y).detach()  # random starts from the global generator, seeded per run
            logits_adv = model(x_adv)
        if self.regime != "trades":
            return temperature_loss(logits_adv, y, self.T, lr_scale=lr_scale,
                                    label_smoothing=label_smoothing), logits_adv
        with autocast():
            logits = model(x)
        natural = F.cross_entropy(logits.float() / self.T, y, label_smoothing=label_smoothing)
        robust = F.kl_div(F.log_softmax(logits_adv.float() / self.T, 1), F.softmax(logits.float() / self.T, 1),
                          reduction="batchmean")
        loss = natural + self.beta * robust
        return (loss * self.T if lr_scale else loss), logits_adv


def holdout_check(model, spec: ModelSpec, recipe: Recipe, holdout, num_classes: int) -> dict:
    """Clean and margin-PGD accuracy on the held-out images, in eval mode. The margin loss is
    scale-free, so the saturated softmax of a high-T model cannot fake robustness here."""
    was_training = model.training
    model.eval()
    pgd = make_attack("pgd_margin", {"eps": recipe.at_eps, "alpha": recipe.at_alpha, "steps": recipe.at_eval_steps})
    ok, _, _ = clean_pass(model, holdout, 500, [], spec.T)
    robust = run_attack(model, spec.T, holdout, ok, pgd, "any", 500, seed=0, n_classes=num_classes).robust_ok
    model.train(was_training)
    return {"clean_acc": frac(ok), "pgd_acc": frac(robust)}


# A run overfits catastrophically (Wong et al. 2020) when its held-out PGD accuracy collapses:
# below this fraction of its best so far (once that best is worth the name).
CATASTROPHIC_DROP = 0.3


def catastrophic_epoch(history: List[dict]) -> Optional[int]:
    """The first epoch whose held-out PGD accuracy fell below CATASTROPHIC_DROP x the best of
    the epochs before it, or None."""
    best = 0.0
    for h in history:
        if best >= 0.05 and h["pgd_acc"] < CATASTROPHIC_DROP * best:
            return h["epoch"]
        best = max(best, h["pgd_acc"])
    return None


def train(spec: ModelSpec, recipe: Recipe, data: Dataset, device: torch.device,
          progress: bool = False, accel: Optional[Accel] = None,
          on_epoch: Optional[Callable[[dict], None]] = None,
          snapshot: Optional[Callable[[TrainState], None]] = None,
          resume: Optional[TrainState] = None) -> TrainResult:
    """Train ``spec`` with ``recipe``; seeded by spec.seed, so a CPU rerun gives the same weights.
    ``accel``: bf16 autocast and torch.compile (default: Accel.for_device, on for CUDA only).
    ``on_epoch``: called after each epoch with its figures (epoch, epochs, train_loss, train_acc,
    wall_s since the start, and an adversarial run's held-out clean_acc and pgd_acc).
    ``snapshot``: called with the run's TrainState after each epoch but the last; ``resume``: such
    a state, to go on from (the weights come out as the uninterrupted run's)."""
    accel = accel or Accel.for_device(device)
    stop = threading.Event()

    def run():
        with accel.training(device):
            return _train(spec, recipe, data, device, progress, accel, on_epoch, snapshot, resume, stop)
    return _flushing_subnormals(run, stop)


class _Stopped(Exception):
    """The caller's thread was interrupted: the training thread ends at its next step."""


def _flushing_subnormals(run: Callable[[], TrainResult], stop: threading.Event) -> TrainResult:
    """``run()`` on a thread of its own that flushes subnormal floats to zero.

    At high T the softmax of the scaled logits holds probabilities below float32's normal range;
    CPU arithmetic on such subnormals is microcoded and made high-T training 3.5x slower (fastnet
    at T=50). Flushing them changed no printed loss or accuracy. Training only: the evaluator keeps
    them, since a flushed gradient is exactly the zero that the masking diagnostics count. The flag
    is a thread's, and OpenMP's pool threads take it, for good, from the thread that makes them:
    set and cleared on the caller's thread, it stayed on in the pool a first training run made, and
    a later evaluation in the process counted half of the subnormal CE gradients as exact zeros.
    A thread of its own gets a pool of its own, made with the flag and ended with the thread."""
    threads, out, finished = torch.get_num_threads(), {}, threading.Event()

    def target():
        torch.set_num_threads(threads)  # a new thread starts at OpenMP's default count, not the caller's
        torch.set_flush_denormal(True)  # False where the CPU cannot: then nothing is flushed
        try:
            out["result"] = run()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, which raises it
            out["error"] = e
        finally:
            finished.set()

    worker = threading.Thread(target=target, name="train", daemon=True)
    worker.start()
    # waited for on an Event, not by join(): Python 3.11's join, interrupted by a signal, marks the
    # thread stopped while it runs on, so a second join returned at once and the process could end
    # in the middle of the thread's save_partial (rc 134, the epoch's state lost)
    try:
        finished.wait()
    except BaseException:  # Ctrl-C or SIGTERM arrive on the caller's thread: stop the run at its next step
        stop.set()
        finished.wait()  # a second interrupt ends the wait, as one would expect of it
        worker.join()  # the thread past its last line: this join is not interrupted mid-run
        raise
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["result"]


def _train(spec: ModelSpec, recipe: Recipe, data: Dataset, device: torch.device, progress: bool,
           accel: Accel, on_epoch: Optional[Callable[[dict], None]], snapshot: Optional[Callable[[TrainState], None]],
           resume: Optional[TrainState], stop: threading.Event) -> TrainResult:
    start = time.perf_counter()
    torch.manual_seed(spec.seed)
    # channels_last pays on CPU too (oneDNN convolutions: ~1.8x for fastnet on 2 cores)
    model = build_model(spec, data.num_classes).to(device, memory_format=torch.channels_last)
    idx = stratified_indices(data.train.labels, recipe.train_subset, recipe.subset_seed)
    holdout = None
    if spec.adversarial:  # held out from training, to pick the best checkpoint
        pos = stratified_indices(data.train.labels[idx], recipe.at_holdout, recipe.subset_seed + 1)
        keep = torch.ones(len(idx), dtype=torch.bool)
        keep[pos] = False
        holdout, idx = data.train.subset(idx[pos]).to(device), idx[keep]
    train = data.train.subset(idx).to(device)
    n = len(train)
    steps_per_epoch = n // recipe.batch_size  # drop the ragged last batch: BN needs full batches
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {recipe.batch_size} exceeds the {n} training images")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if (p.ndim <= 1 and not recipe.decay_norm_and_bias) else decay).append(p)
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    schedule = make_schedule(optimizer, recipe, recipe.epochs * steps_per_epoch)
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    T = spec.T
    adversarial = AdversarialStep(spec, recipe, model) if spec.adversarial else None
    autocast = partial(accel.autocast, device)
    forward_loss = accel.compiled(standard_step)
    # compiled: a tensor, so that a new T is a new input rather than a recompile; eager: the
    # float, as ever, so that CPU runs keep their bit-exact weights
    T_step = torch.tensor(T, device=device) if accel.compile else T
    result = TrainResult(model, float("nan"), float("nan"), len(idx), 0.0)
    first, before = 0, 0.0  # epochs done and seconds spent before this process: a resumed run's
    if resume is not None:
        _restore(resume, model, optimizer, schedule, gen, result)
        first, before = resume.epoch, resume.info["wall_s"]
    model.train()
    bar = tqdm(total=recipe.epochs * steps_per_epoch, initial=first * steps_per_epoch, disable=not progress,
               desc=f"train {spec.name}", unit="step", leave=False, dynamic_ncols=True)
    loss_sum = correct = seen = 0
    for epoch in range(first, recipe.epochs):
        order = torch.randperm(n, generator=gen, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for step in range(steps_per_epoch):
            if stop.is_set():
                raise _Stopped
            batch = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = to_float(augment(train.images[batch], gen))  # channels_last, as the model is
            y = train.labels[batch]
            if adversarial is not None:
                loss, logits = adversarial.loss(model, x, y, spec.lr_scale, recipe.label_smoothing, autocast)
            else:
                loss, logits = forward_loss(model, x, y, T_step, spec.lr_scale, recipe.label_smoothing, accel.bf16)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            # accumulate on the device: a .item() per step would sync the GPU every step
            loss_sum += loss.detach() / (T if spec.lr_scale else 1.0) * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            bar.update()
        # checked once an epoch (a sync, not one per step): a diverged run stops here, unsaved. The
        # weights too: the loss can stay finite (1e27 at lr 1e6) up to the step that makes them NaN,
        # and a model of NaN weights was saved and then stopped the grid in its calibration
        epoch_loss = loss_sum.item() / seen
        finite = torch.stack([torch.isfinite(v).all() for v in model.state_dict().values()
                              if v.is_floating_point()]).all().item()
        if not (math.isfinite(epoch_loss) and finite):
            raise BenchError(f"{spec.name}: training diverged at epoch {epoch + 1} (mean loss {epoch_loss:.4g}"
                             f"{'' if finite else '; its weights are not finite'}); no checkpoint was saved: lower the "
                             f"recipe's lr or use a larger T")
        if holdout is not None:
            check = dict(holdout_check(model, spec, recipe, holdout, data.num_classes), epoch=epoch + 1,
                         train_loss=epoch_loss)
            if check["pgd_acc"] > max((h["pgd_acc"] for h in result.history), default=-1.0):
                result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                result.best_epoch = epoch + 1
            result.history.append(check)
            # reported, not hidden: training goes on, and @best keeps the epoch before the collapse
            result.catastrophic_overfitting_epoch = catastrophic_epoch(result.history)
        if progress:
            bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_loss:.3f}")
        if on_epoch is not None:
            figures = dict(epoch=epoch + 1, epochs=recipe.epochs, train_loss=epoch_loss,
                           train_acc=correct.item() / seen, wall_s=before + time.perf_counter() - start)
            on_epoch({**figures, **(result.history[-1] if holdout is not None else {})})
        if snapshot is not None and epoch + 1 < recipe.epochs:
            snapshot(_snapshot(epoch + 1, model, optimizer, schedule, gen, result,
                               before + time.perf_counter() - start))
    bar.close()
    model.eval()
    result.final_train_loss, result.final_train_acc = epoch_loss, correct.item() / seen
    result.wall_s = before + time.perf_counter() - start
    return result
