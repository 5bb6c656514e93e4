"""The training loop: CE(z / T, y) on in-memory data, augmentation on the device (after airbench).

One function, no framework. The temperature lives here, in the loss, never in the model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from bench.data import Dataset, augment, stratified_indices, to_float
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


# Bump when a change to this file changes the weights a recipe produces: it is part of the
# checkpoint key, so old checkpoints are not silently reused.
TRAINER_VERSION = 3


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


def train(spec: ModelSpec, recipe: Recipe, data: Dataset, device: torch.device,
          progress: bool = False) -> TrainResult:
    """Train ``spec`` with ``recipe``; seeded by spec.seed, so a CPU rerun gives the same weights."""
    # At high T the softmax of the scaled logits holds probabilities below float32's normal
    # range; CPU arithmetic on such subnormals is microcoded and made high-T training 3.5x slower
    # (fastnet at T=50). Flushing them to zero changed no printed loss or accuracy. Training
    # only: the evaluator keeps them, since a flushed gradient is exactly the zero that the
    # masking diagnostics count.
    flushing = torch.set_flush_denormal(True)  # False where the CPU cannot
    try:
        return _train(spec, recipe, data, device, progress)
    finally:
        if flushing:
            torch.set_flush_denormal(False)  # torch's default (it has no getter to restore from)


def _train(spec: ModelSpec, recipe: Recipe, data: Dataset, device: torch.device, progress: bool) -> TrainResult:
    start = time.perf_counter()
    cuda = device.type == "cuda"
    torch.manual_seed(spec.seed)
    # channels_last pays on CPU too (oneDNN convolutions: ~1.8x for fastnet on 2 cores)
    model = build_model(spec, data.num_classes).to(device, memory_format=torch.channels_last)
    idx = stratified_indices(data.train.labels, recipe.train_subset, recipe.subset_seed)
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
    model.train()
    bar = tqdm(total=recipe.epochs * steps_per_epoch, disable=not progress, desc=f"train {spec.name}",
               unit="step", leave=False, dynamic_ncols=True)
    loss_sum = correct = seen = 0
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=gen, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for step in range(steps_per_epoch):
            batch = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = augment(to_float(train.images[batch]), gen).contiguous(memory_format=torch.channels_last)
            y = train.labels[batch]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = model(x)
            loss = temperature_loss(logits, y, T, lr_scale=spec.lr_scale, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            # accumulate on the device: a .item() per step would sync the GPU every step
            loss_sum += loss.detach() / (T if spec.lr_scale else 1.0) * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            bar.update()
        if progress:
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum.item() / seen:.3f}")
    bar.close()
    final_loss = loss_sum.item() / seen
    if not math.isfinite(final_loss):
        raise FloatingPointError(f"{spec.name}: training diverged (loss {final_loss}); lower the learning rate")
    model.eval()
    return TrainResult(model, final_loss, correct.item() / seen, n, time.perf_counter() - start)
