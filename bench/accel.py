"""What runs differently on a GPU, in one place.

On by default on CUDA only (each one can be forced on a CPU, which is how tests/test_gpu_paths.py
runs these paths without a GPU):

* bf16 autocast of the training forward pass. The loss takes the logits cast up to float32.
  CUDA runs bf16 on tensor cores (on an H200 about twice tf32's rate, and half the activation
  memory); on a CPU it would change the numbers the CPU profiles are quoted with, for little
  speed.
* ``torch.compile`` of the standard training step (forward and loss; the backward through
  AOTAutograd). One compile serves every training run of an architecture: the temperature is
  a tensor argument, not a constant, and parameters are graph inputs, so a new model instance
  or a new T does not recompile (checked on the CPU). Inductor on this 2-core CPU took 257 s
  for fastnetw8's first step, far more than any CPU profile's training, so it is CUDA-only;
  the tests trace the same step with the ``aot_eager`` backend (Dynamo capture, guards and the
  forward/backward split, without Inductor's code generation). The attacks are not compiled:
  early-stopped attacks shrink their batch every step, and each new shape would recompile.
  Adversarial regimes are not compiled either (their inner attack is torchattacks' loop).
* ``cudnn.benchmark`` while a model trains: its batches have one shape, so picking the fastest
  convolution algorithm once pays. Not while attacks run: early-stopped attacks shrink their
  batch step by step, and each new shape would be benchmarked anew.

Off by default everywhere: bf16 in the attacks' forward passes (``attacks.precision``). Measured
here (tests/test_gpu_paths.py; fastnetw8 at T=1 and T=20, 1,000 images, PGD-10): plain PGD
crafted in bf16 and judged in float32 lands within 0.2 pp of float32 crafting, but early-stopped
PGD (the harness's default) came out 1.6 pp weaker at eps 1/255 and 2/255 (0.3 pp at 8/255):
its stop decisions are made on bf16 logits, which call borderline points misclassified that
float32 calls correct. APGD's best-iterate choice and AutoAttack's hand-over between its attacks
decide the same way. So the attacks run in float32 on CUDA too. attacks/precision.py holds the
bf16 view, which the evaluator does not call: a run with BENCH_ATTACK_BF16=1 stops (bench/cli.py)
rather than ignore it.

Not switched, but worth knowing when reading GPU numbers: PyTorch runs float32 convolutions on
CUDA as TF32 by default (``torch.backends.cudnn.allow_tf32``): a 10-bit mantissa (8 times finer
than bf16's) with float32's exponent range. The float64 recomputation of the audit is
unaffected; the provenance of a GPU run records the flag.

``BENCH_BF16`` and ``BENCH_COMPILE`` (``auto``, ``1`` or ``0``) override the defaults, e.g.
``BENCH_COMPILE=0`` if a device's compiler stack fails.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from bench.errors import BenchError

_CHOICES = {"auto": None, "1": True, "0": False}
FLAGS = ("BENCH_BF16", "BENCH_ATTACK_BF16", "BENCH_COMPILE")


def flags_of(env: Mapping[str, str]) -> dict:
    """The precision flags ``env`` sets: what a Ray driver hands its workers, whose own
    environment is the one `ray start` ran in, not the driver's."""
    return {k: env[k] for k in FLAGS if k in env}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "auto").strip().lower()
    if value not in _CHOICES:
        raise BenchError(f"{name}={value!r}: use auto, 1 or 0")
    chosen = _CHOICES[value]
    return default if chosen is None else chosen


@dataclass(frozen=True)
class Accel:
    bf16: bool = False
    attack_bf16: bool = False
    compile: bool = False
    compile_backend: str = "inductor"

    @classmethod
    def for_device(cls, device: torch.device, env: Optional[Mapping[str, str]] = None) -> "Accel":
        env = os.environ if env is None else env
        cuda = torch.device(device).type == "cuda"
        return cls(bf16=_flag(env, "BENCH_BF16", cuda), attack_bf16=_flag(env, "BENCH_ATTACK_BF16", False),
                   compile=_flag(env, "BENCH_COMPILE", cuda))

    def autocast(self, device: torch.device):
        """A context: bf16 autocast on ``device`` when bf16 is on, else nothing."""
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=self.bf16)

    @contextmanager
    def training(self, device: torch.device):
        """cudnn.benchmark on CUDA for the length of a training run, then as it was."""
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = before or torch.device(device).type == "cuda"
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = before

    def compiled(self, fn):
        """``fn`` through torch.compile when compile is on, else ``fn`` itself. Static shapes:
        a training step always sees the same batch shape (the ragged last batch is dropped)."""
        if not self.compile:
            return fn
        return torch.compile(fn, backend=self.compile_backend, dynamic=False)

    def describe(self) -> dict:
        return {"bf16": self.bf16, "attack_bf16": self.attack_bf16,
                "compile": self.compile_backend if self.compile else False}
