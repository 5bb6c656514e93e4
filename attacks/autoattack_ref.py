"""AutoAttack as its authors wrote it (the PyPI package ``pyautoattack``, a packaging of
github.com/fra31/auto-attack), behind the torchattacks call convention ``atk(x, y) -> x_adv``.

It exists to check the torchattacks AutoAttack (registry name ``autoattack``) against the
reference on the same images. pyautoattack is imported only when this attack is built, so the
rest of the harness runs without it.

What the adapter changes, and why:
* ``steps`` and ``n_queries`` are applied to APGD-CE, APGD-T, FAB-T (iterations) and Square
  (queries), so that the two implementations can be compared at any budget; the defaults are
  the reference's own (100, 5000). APGD fixes its checkpoint schedule from ``n_iter`` in its
  constructor, so that schedule is recomputed here.
* its logger ('auto-attack') is silenced during each call: its records of level WARNING and above
  (the authors' own flags: "there are N points with zero gradient", Square beating the gradient
  attacks, a randomized or dynamic defense) are kept in ``last_warnings`` instead, and handed to
  every ``collect_warnings()`` block the call runs in (the evaluator builds one attack per batch,
  so a caller never holds the instance). Its sub-attacks print nothing with verbose off.
* the model is put in eval mode for the call and given back in the mode it was in, as
  torchattacks does.
Side effects of the reference that the adapter does not change: each sub-attack calls
``torch.manual_seed(seed)`` (the global generator is left reseeded), and its check for dynamic
defenses runs the model once under ``sys.settrace`` and then calls ``sys.settrace(None)``, which
switches off any tracer that was installed (a debugger, coverage's Python tracer).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, List

import torch

from attacks.views import model_device
from bench.errors import BenchError


def _pyautoattack():
    try:
        import pyautoattack
    except ImportError:
        raise BenchError("autoattack_ref needs the AutoAttack authors' package: pip install pyautoattack") from None
    return pyautoattack


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


_SINKS: List[List[str]] = []  # the lists of the open collect_warnings() blocks


@contextmanager
def collect_warnings() -> Iterator[List[str]]:
    """A list that receives the warnings of every ReferenceAutoAttack call made inside the block,
    in order."""
    sink: List[str] = []
    _SINKS.append(sink)
    try:
        yield sink
    finally:
        _SINKS[:] = [s for s in _SINKS if s is not sink]  # by identity: two empty lists are equal


class _Quiet:
    """Route the 'auto-attack' logger into a list for the duration of a block."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.handler = _Collect()

    def __enter__(self):
        self.saved = (self.logger.handlers[:], self.logger.propagate, self.logger.level)
        self.logger.handlers = [self.handler]
        self.logger.propagate = False
        self.logger.setLevel(logging.WARNING)  # its debug/info lines are built but dropped
        return self.handler.messages

    def __exit__(self, *exc):
        self.logger.handlers, self.logger.propagate, level = self.saved
        self.logger.setLevel(level)
        return False


class ReferenceAutoAttack:
    """``pyautoattack.AutoAttack(...).run_standard_evaluation`` as ``atk(x, y) -> x_adv``."""

    def __init__(self, model: torch.nn.Module, *, eps: float, version: str = "standard", steps: int = 100,
                 n_queries: int = 5000, n_classes: int = 10, seed: int = 0, norm: str = "Linf"):
        aa = _pyautoattack()
        self.model = model
        self.device = model_device(model)
        logger = logging.getLogger("auto-attack")
        with _Quiet(logger):
            self.aa = aa.AutoAttack(model, device=self.device, eps=eps, norm=norm, seed=seed, version=version)
        self.aa.verbose = False
        for apgd in (self.aa.apgd, self.aa.apgd_targeted):
            apgd.n_iter = apgd.n_iter_orig = steps
            apgd.n_iter_2 = max(int(0.22 * steps), 1)
            apgd.n_iter_min = max(int(0.06 * steps), 1)
            apgd.size_decr = max(int(0.03 * steps), 1)
        self.aa.fab.n_iter = steps
        self.aa.square.n_queries = n_queries
        # the reference fixes 9 targets, which assumes 10+ classes
        targets = min(9, n_classes - 1)
        self.aa.apgd_targeted.n_target_classes = targets
        self.aa.fab.n_target_classes = targets
        self.last_warnings: List[str] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if len(x) == 0:
            return x.clone()
        was_training = self.model.training
        self.model.eval()
        try:
            with _Quiet(self.aa.logger) as messages:
                x_adv, _ = self.aa.run_standard_evaluation(x, y, batch_size=len(x))
            self.last_warnings = list(messages)
            for sink in _SINKS:
                sink.extend(self.last_warnings)
        finally:
            if was_training:
                self.model.train()
        return x_adv

    def __repr__(self):
        return (f"ReferenceAutoAttack(version={self.aa.version}, eps={self.aa.epsilon}, "
                f"attacks={self.aa.attacks_to_run}, seed={self.aa.seed})")
