"""The two views of a trained model that every attack runs on.

``raw`` is the logits z, what a deployed model outputs. ``scaled`` is z / T_train, the
distribution the model was trained to produce. A model trained at large T has logits about T
times larger, so CE on the raw view saturates its softmax and its input gradient can underflow
to exactly zero: an attack on that view alone can report robustness that is only gradient
masking (science.md). The temperature lives here and in the loss, never in the model.

``PassCounter`` wraps a view to count the forward and backward passes a measurement spends.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

VIEWS = {
    "raw": "attack the logits z",
    "scaled": "attack z / T_train (the training view)",
}


class TemperatureView(nn.Module):
    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        # A new Module starts in train mode. torchattacks reads the mode of the model it is given
        # and puts it back after each call, so a view in train mode would leave the wrapped model
        # in train mode: BatchNorm on batch statistics, and running statistics overwritten by
        # adversarial batches. The view takes the model's mode.
        self.train(model.training)

    def forward(self, x):
        return self.model(x) / self.temperature


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: its parameters' device, else its buffers' (a fixed function of its
    input has neither: the CPU). torchattacks and AutoAttack read the first parameter, and a
    model without one printed a line on stdout (torchattacks) or raised StopIteration (AutoAttack)."""
    for tensors in (model.parameters(), model.buffers()):
        first = next(tensors, None)
        if first is not None:
            return first.device
    return torch.device("cpu")


def view_divisor(view: str, temperature: float) -> float:
    if view not in VIEWS:
        raise KeyError(view)
    return temperature if view == "scaled" else 1.0


def make_view(model: nn.Module, view: str, temperature: float) -> nn.Module:
    """The model as an attack sees it under ``view``."""
    divisor = view_divisor(view, temperature)
    return model if divisor == 1.0 else TemperatureView(model, divisor)


@dataclass
class PassCount:
    """Image-passes through a model: each forward adds its batch's rows, each backward through
    that forward's output adds them again (FAB's one backward per class counts each)."""
    forward: int = 0
    backward: int = 0

    def add(self, other: "PassCount") -> None:
        self.forward += other.forward
        self.backward += other.backward

    def metrics(self, n: int) -> dict:
        """The record's cost fields: totals, and per image of the measurement's ``n``."""
        return {"forward_passes": self.forward, "backward_passes": self.backward,
                "forward_per_image": self.forward / n if n else float("nan"),
                "backward_per_image": self.backward / n if n else float("nan")}


class PassCounter(nn.Module):
    """``model`` unchanged, counting its passes into ``count``. Backward passes are counted by a
    hook on the output, so they are counted whatever the attack differentiates (its input, a
    tanh-space variable) and however it calls autograd; a forward that is never differentiated
    costs no backward."""

    def __init__(self, model: nn.Module, count: PassCount):
        super().__init__()
        self.model = model
        self.count = count
        self.train(model.training)  # as TemperatureView: torchattacks puts back this module's mode

    def forward(self, x):
        out = self.model(x)
        rows = out.shape[0]
        self.count.forward += rows
        if out.requires_grad:
            out.register_hook(self._backward(rows))
        return out

    def _backward(self, rows: int):
        def hook(grad):
            self.count.backward += rows
        return hook
