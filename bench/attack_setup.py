"""Which adversarial measurements a run makes for each model, decided once per run from the plan:
the attacks on their views, the eps sweep, the transfer attack from a surrogate, and the audit's
diagnostics (float64 recomputation, AutoAttack cross-check). The runner asks it for each model's
jobs; a job is (name, planned measurement identities, run), so that finished ones are skipped."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch

from attacks import AttackConfig
from bench.data import Split, stratified_indices
from bench.diagnostics import autoattack_crosscheck, fp64_check
from bench.evaluate import attack_view, craft, evaluate, evaluate_transfer
from models import ModelSpec, parse_name

Job = Tuple[str, List[tuple], Callable[[], list]]  # (name, planned (n, threat, view, params), run)


def default_surrogate(spec: ModelSpec) -> ModelSpec:
    """The same architecture, width, head and seed, trained plainly at T=1."""
    return replace(spec, temperature=1.0, regime="std", lr_scale=False, checkpoint="", resolved_T=None)


def sweep_configs(plan) -> List[AttackConfig]:
    """Each sweep attack at each eps, its step size scaled with eps (2/255 at 8/255 stays the
    ratio), so a large eps is reachable in the same number of steps."""
    ev = plan.profile.eval
    out = []
    for name in ev.sweep_attacks:
        base = plan.profile.attack(name)
        for eps in ev.sweep_eps:
            if abs(eps - base.eps) < 1e-9:
                out.append(base)  # the very config of the attack list: one record, not two
                continue
            params = {"eps": eps}
            if "alpha" in base.kwargs:
                params["alpha"] = base.kwargs["alpha"] * eps / base.eps
            out.append(plan.profile.attack(name, params))
    return out


@dataclass
class AttackSetup:
    split: Split  # the evaluation subset, on the device
    attacks: List[AttackConfig]
    views: List[str]
    sweep: List[AttackConfig] = field(default_factory=list)
    transfer: Optional[AttackConfig] = None
    fp64_split: Optional[Split] = None
    crosscheck_split: Optional[Split] = None
    crosscheck_positions: Optional[torch.Tensor] = None  # its images' places in `split`
    _crafted: Dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def prepare(cls, plan, split: Split) -> "AttackSetup":
        ev = plan.profile.eval
        setup = cls(split, list(plan.attacks), list(plan.views), sweep=sweep_configs(plan) if ev.eps_sweep else [])
        if ev.transfer:
            # crafted to the last iterate: an early-stopped example sits just past the surrogate's
            # boundary and transfers far worse (fastnet_T1 -> fastnet_T1_s1, PGD-10: 41% robust, not 27%)
            setup.transfer = plan.profile.attack("pgd", {"early_stop": False})
        if ev.fp64_n:
            setup.fp64_split = split.subset(stratified_indices(split.labels, min(ev.fp64_n, len(split)), 1))
        if ev.crosscheck_n:
            setup.crosscheck_positions = stratified_indices(split.labels, min(ev.crosscheck_n, len(split)), 2)
            setup.crosscheck_split = split.subset(setup.crosscheck_positions)
        return setup

    def surrogate(self, spec: ModelSpec, plan) -> Optional[ModelSpec]:
        if self.transfer is None or spec.regime == "zoo":  # a zoo model has no T=1 twin in the grid
            return None
        sur = parse_name(plan.profile.eval.surrogate) if plan.profile.eval.surrogate else default_surrogate(spec)
        return None if sur.name == spec.name else sur

    def jobs(self, model, spec: ModelSpec, plan, num_classes: int,
             get_surrogate: Callable[[ModelSpec], Tuple[str, torch.nn.Module]]) -> List[Job]:
        ev = plan.profile.eval
        n, bs, seed = len(self.split), ev.batch_size, ev.attack_seed
        kw = dict(batch_size=bs, seed=seed, progress=plan.progress, n_classes=num_classes)

        def planned(configs):
            return [(n, a.name, v, a.kwargs) for a in configs for v in attack_view(a, self.views)]

        out: List[Job] = [("attacks", [(n, "clean", "none", {})] + planned(self.attacks), lambda: evaluate(
            model, spec.T, self.split, self.attacks, self.views, desc=f"attack {spec.name}", **kw))]
        if self.sweep:
            views = list(ev.sweep_views or self.views)
            planned_sweep = [(n, a.name, v, a.kwargs) for a in self.sweep for v in attack_view(a, views)]
            out.append(("eps sweep", planned_sweep, lambda: evaluate(
                model, spec.T, self.split, self.sweep, views, desc=f"sweep {spec.name}", **kw)[1:]))
        sur = self.surrogate(spec, plan)
        if sur is not None:
            sur_key = get_surrogate(sur, load=False)[0]
            params = dict(self.transfer.kwargs, attack=self.transfer.name, surrogate=sur.name, surrogate_key=sur_key)

            def run_transfer():
                if sur_key not in self._crafted:
                    _, sur_model = get_surrogate(sur, load=True)
                    self._crafted[sur_key] = craft(sur_model, self.split, self.transfer, bs, seed, num_classes)
                return [evaluate_transfer(model, spec.T, self.split, self._crafted[sur_key], self.transfer, sur.name,
                                          sur_key, bs)]
            out.append(("transfer", [(n, "transfer", "any", params)], run_transfer))
        if self.fp64_split is not None:
            pgd = plan.profile.attack("pgd")
            out.append(("fp64 check", [(len(self.fp64_split), "pgd_fp64", "raw", dict(pgd.kwargs, attack="pgd"))],
                        lambda: [fp64_check(model, spec.T, self.fp64_split, pgd, bs, seed, num_classes)]))
        if self.crosscheck_split is not None:
            ours, ref = plan.profile.attack("autoattack"), plan.profile.attack("autoattack_ref")
            out.append(("autoattack crosscheck",
                        [(len(self.crosscheck_split), "autoattack_crosscheck", "raw",
                          dict(ours.kwargs, attacks=[ours.name, ref.name]))],
                        lambda: [autoattack_crosscheck(model, spec.T, self.crosscheck_split, ours, ref, bs, seed,
                                                       num_classes, self.crosscheck_positions, n)]))
        return out
