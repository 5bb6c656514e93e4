"""The transfer attack: PGD crafted on a surrogate (by default the same architecture, width, head
and seed trained plainly at T=1) and replayed on the model. A black box, blind to whatever the
model does to its own gradients: the audit's check that a high robust accuracy is not masking."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Dict, Optional

import torch

from attacks import AttackConfig
from attacks.views import PassCount, PassCounter
from bench.data import Split, to_float
from bench.measure.adversarial import adversarial_batches, attack_metrics, clean_pass, predict
from bench.measure.attack_suite import record_version
from bench.measure.base import Family, Measurement, pct
from bench.store import pack_bits
from models import ModelSpec, parse_name
from models.registry import LoadedSpec


def default_surrogate(spec: ModelSpec) -> ModelSpec:
    """The same architecture, width, head and seed, trained plainly at T=1."""
    return replace(spec, temperature=1.0, regime="std", lr_scale=False, checkpoint="", resolved_T=None)


def surrogate_of(spec: ModelSpec, ev) -> Optional[ModelSpec]:
    """The model a transfer attack on ``spec`` is crafted on (None: none, or itself). A zoo model
    or a caller's own has no T=1 twin in the grid."""
    if not ev.transfer or isinstance(spec, LoadedSpec):
        return None
    sur = parse_name(ev.surrogate) if ev.surrogate else default_surrogate(spec)
    return None if sur.name == spec.name else sur


def craft(surrogate, split: Split, attack: AttackConfig, batch_size: int, seed: int, n_classes: int,
          temperature: float = 1.0) -> torch.Tensor:
    """Adversarial versions of every image of ``split``, crafted on ``surrogate`` seen as z/T at its
    training ``temperature`` (the T=1 default surrogate: its raw logits), for a transfer attack on
    other models: a high-T surrogate's raw logits saturate, and CE-PGD on them stalls (crafted on
    fastnet_T50_lrT's raw logits, the transfer left 58% of fastnet_T1's images robust; on z/T, 11%).
    ``attack`` should run to its last iterate (Transfer turns the early stop off): an
    early-stopped example barely crosses the surrogate's boundary."""
    surrogate.eval()
    out = torch.empty(split.images.shape, dtype=torch.float32, device=split.labels.device)
    everything = torch.ones(len(split), dtype=torch.bool, device=split.labels.device)
    for todo, _, x_adv, _ in adversarial_batches(surrogate, temperature, split, everything, attack, "scaled",
                                                 batch_size, seed, n_classes):
        out[todo] = x_adv
    return out


@torch.no_grad()
def evaluate_transfer(model, temperature: float, split: Split, x_adv: torch.Tensor, attack: AttackConfig,
                      params: dict, batch_size: int) -> Measurement:
    """Robust accuracy of ``model`` on examples crafted on another model: a black-box attack,
    blind to whatever the target does to its own gradients."""
    t0 = time.perf_counter()
    model.eval()
    cost = PassCount()  # on this model; the crafting's passes were spent once, on the surrogate
    clean_ok, _, _ = clean_pass(model, split, batch_size, [], temperature, cost=cost)
    robust_ok = torch.zeros_like(clean_ok)
    check = PassCounter(model, cost)
    for a in range(0, len(split), batch_size):
        robust_ok[a:a + batch_size] = clean_ok[a:a + batch_size] & (
            predict(check, x_adv[a:a + batch_size]) == split.labels[a:a + batch_size])
    delta = (x_adv - to_float(split.images)).flatten(1)
    metrics = attack_metrics(clean_ok, robust_ok, delta.abs().max().item(), delta.norm(dim=1).max().item())
    return Measurement("transfer", "any", attack.eps, attack.steps, params, len(split),
                       dict(metrics, **cost.metrics(len(split))), time.perf_counter() - t0, bits=pack_bits(robust_ok))


class Transfer(Family):
    name = "transfer"
    batch_seeded = True

    def __init__(self, attack: AttackConfig):
        self.attack = attack
        self._crafted: Dict[str, torch.Tensor] = {}  # per surrogate key: crafted once per process

    @classmethod
    def version_of(cls, identity):  # the crafting PGD's revisions (2: its loss summed over the batch)
        return record_version(cls.version, identity[3]["attack"])

    @classmethod
    def attacks_of(cls, ev):
        return ("pgd",) if ev.transfer else ()

    @classmethod
    def prepare(cls, ctx, log):
        ev = ctx.plan.profile.eval
        if not ev.transfer:
            return None
        # the run's table would show an empty transfer column with no word of why
        own = [s.name for s in ctx.plan.models if not isinstance(s, LoadedSpec) and surrogate_of(s, ev) is None]
        outside = [s.name for s in ctx.plan.models if isinstance(s, LoadedSpec)]
        why = []
        if own:
            why.append(f"{', '.join(own)} (the surrogate would be the model itself)")
        if outside:
            why.append(f"{', '.join(outside)} (from outside the grid: no surrogate of its kind)")
        if why:
            log(f"transfer: not measured on {'; '.join(why)}")
        # crafted to the last iterate: an early-stopped example sits just past the surrogate's
        # boundary and transfers far worse (fastnet_T1 -> fastnet_T1_s1, PGD-10: 41% robust, not 27%)
        return cls(ctx.plan.profile.attack("pgd", {"early_stop": False}))

    def needs(self, spec, ctx):
        sur = surrogate_of(spec, ctx.plan.profile.eval)
        return [] if sur is None else [sur]

    def _params(self, sur: ModelSpec, ctx) -> dict:
        return dict(self.attack.kwargs, attack=self.attack.name, surrogate=sur.name, surrogate_key=ctx.ckpt_key(sur))

    def planned(self, spec, ctx):
        return [(len(ctx.eval_split), "transfer", "any", self._params(sur, ctx)) for sur in self.needs(spec, ctx)]

    def run(self, model, spec, ctx, log):
        ev = ctx.plan.profile.eval
        out = []
        for sur in self.needs(spec, ctx):
            params = self._params(sur, ctx)
            key = params["surrogate_key"]
            if key not in self._crafted:
                log(f"  surrogate {sur.name} for the transfer attack:")
                self._crafted[key] = craft(ctx.load(sur, log), ctx.eval_split, self.attack, ev.batch_size,
                                           ev.attack_seed, ctx.data.num_classes, temperature=sur.T)
            m = evaluate_transfer(model, spec.T, ctx.eval_split, self._crafted[key], self.attack, params,
                                  ev.batch_size)
            # the key names the surrogate's recipe, not its weights: retrained on another CPU or
            # thread count it is other weights, and its examples other examples (stale)
            m.extra["surrogate_weights_sha256"] = ctx.verified(sur, key)["weights_sha256"]
            out.append(m)
        return out

    def stale(self, record, identity, ctx):
        made_on = record.get("surrogate_weights_sha256")  # None: made before it was recorded
        params = identity[3]
        meta = None if made_on is None else ctx.verified(parse_name(params["surrogate"]), params["surrogate_key"])
        return meta is not None and meta["weights_sha256"] != made_on

    def summary(self, ms):
        return ", ".join(f"transfer from {m.params['surrogate']} {pct(m.metrics['robust_acc'])}" for m in ms)
