"""The precision the attacks' forward passes run in: a bf16-autocast view of a model.

An attack spends nearly all its time in forward and input-gradient passes; on CUDA, bf16 runs
them on tensor cores. ``AutocastView`` runs the model under bf16 autocast and hands back
float32 logits, so the attack's loss, the gradient of that loss in the logits and the sign step
stay float32 (torchattacks computes its loss on what the model returns). bfloat16 has float32's
exponent range, so a softmax saturates at the same logit gap in both: the masking signals the
harness counts (a top probability of exactly 1.0, an all-zero input gradient) keep their
meaning, which float16 (max 65504, underflow below 6e-8) would not. The verdict on each
adversarial example stays with the caller's float32 model: bf16 only crafts.

That is unbiased only for attacks that return their last iterate (plain PGD: within 0.2 pp of
float32 here). An attack that decides on the view's own predictions (early-stopped PGD, APGD's
best iterate, AutoAttack's hand-over) decides in bf16, and came out up to 1.6 pp weaker; so
bench/accel.py leaves it off unless BENCH_ATTACK_BF16=1.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from attacks.views import model_device
from bench.accel import Accel


class AutocastView(nn.Module):
    def __init__(self, model: nn.Module, device_type: str):
        super().__init__()
        self.model = model
        self.device_type = device_type
        # as TemperatureView: torchattacks reads and puts back the mode of the module it is given
        self.train(model.training)

    def forward(self, x):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            logits = self.model(x)
        return logits.float()


def autocast_view(model: nn.Module, bf16: Optional[bool] = None) -> nn.Module:
    """``model`` as the attacks' forward passes should run it: under bf16 autocast on its
    device when ``bf16`` (default: bench.accel's choice, off unless BENCH_ATTACK_BF16=1), else
    itself."""
    device = model_device(model)
    if bf16 is None:
        bf16 = Accel.for_device(device).attack_bf16
    return AutocastView(model, device.type) if bf16 else model
