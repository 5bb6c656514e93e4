"""The eps sweep: the sweep attacks (default PGD) on the sweep views (default raw) at every radius
of the profile's ``eps_sweep``. Robust accuracy must fall to ~0 as eps grows; a curve that
plateaus is the audit's sign of masked gradients."""
from __future__ import annotations

from typing import List

from attacks import AttackConfig, make_attack
from bench.measure.adversarial import evaluate
from bench.measure.attack_suite import attack_identities, attack_summary, record_version
from bench.measure.base import Family


def sweep_configs(profile) -> List[AttackConfig]:
    """Each sweep attack at each eps, its step size scaled with eps (2/255 at 8/255 stays the
    ratio), so a large eps is reachable in the same number of steps. An attack set at eps 0 (a
    check that it leaves clean accuracy as it is) has no ratio: its defaults' is taken."""
    ev = profile.eval
    out = []
    for name in ev.sweep_attacks:
        base = profile.attack(name)
        for eps in ev.sweep_eps:
            if abs(eps - base.eps) < 1e-9:
                out.append(base)  # the very config of the attack list: one record, not two
                continue
            params = {"eps": eps}
            if "alpha" in base.kwargs:
                own = base if base.eps > 0 else make_attack(name)
                params["alpha"] = own.kwargs["alpha"] * eps / own.eps
            out.append(profile.attack(name, params))
    return out


class EpsSweep(Family):
    name = "eps sweep"
    batch_seeded = True

    def __init__(self, configs, views):
        self.configs, self.views = configs, views

    @classmethod
    def version_of(cls, identity):
        return record_version(cls.version, identity[1])

    @classmethod
    def attacks_of(cls, ev):
        return tuple(ev.sweep_attacks) if ev.eps_sweep else ()

    @classmethod
    def prepare(cls, ctx, log):
        ev = ctx.plan.profile.eval
        if not ev.eps_sweep:
            return None
        return cls(sweep_configs(ctx.plan.profile), list(ev.sweep_views or ctx.plan.views))

    def planned(self, spec, ctx):
        return attack_identities(len(ctx.eval_split), self.configs, self.views)

    def run(self, model, spec, ctx, log):
        return self._run(model, spec, ctx, self.configs)

    def run_missing(self, model, spec, ctx, log, missing):
        """The sweep's attacks at the radii with a record missing (or of an older version) alone:
        a revised attack costs its own curve, not the others'."""
        todo = [a for a in self.configs if any(p[1] == a.name and p[3] == a.kwargs for p in missing)]
        return self._run(model, spec, ctx, todo)

    def remeasures(self, planned, missing):
        """The radii with a record missing, on every view (as run_missing runs them)."""
        return [p for p in planned if any(p[1] == q[1] and p[3] == q[3] for q in missing)]

    def _run(self, model, spec, ctx, configs):
        ev = ctx.plan.profile.eval
        return evaluate(model, spec.T, ctx.eval_split, configs, self.views, batch_size=ev.batch_size,
                        seed=ev.attack_seed, progress=ctx.plan.progress, desc=f"sweep {spec.name}",
                        n_classes=ctx.data.num_classes)[1:]  # the clean pass is the attack suite's record

    summary = staticmethod(attack_summary)
