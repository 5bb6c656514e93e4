"""The attack suite: clean accuracy, then every attack of the plan on every view it depends on
(``--attack``, the profile's ``attacks`` and ``views``), on the evaluation subset."""
from __future__ import annotations

from attacks import ATTACKS, HEADLINE_EPS, format_eps
from bench.data import stratified_indices
from bench.measure.adversarial import attack_view, evaluate
from bench.measure.base import Family, pct


def attack_identities(n: int, configs, views) -> list:
    return [(n, a.name, v, a.kwargs) for a in configs for v in attack_view(a, views)]


def record_version(version: int, attack: str) -> int:
    """The version of a record of ``attack`` (or the clean pass) in a family of ``version``: the
    family's plus the attack's revisions since its first, so that a change to one attack
    re-measures that attack's records alone, and either bump moves the number (both only grow)."""
    return version + (ATTACKS[attack].revision - 1 if attack in ATTACKS else 0)


def attack_summary(ms) -> str:
    """clean and each attack's robust accuracy, its eps when not the headline one."""
    clean = [f"clean {pct(m.metrics['accuracy'])}" for m in ms if m.threat == "clean"]
    attacked = [f"{m.threat}/{m.view}" + ("" if abs(m.eps - HEADLINE_EPS) < 1e-9 else f"@{format_eps(m.eps)}") +
                f" {pct(m.metrics['robust_acc'])}" for m in ms if m.threat != "clean"]
    return "; ".join(filter(None, [", ".join(clean), ", ".join(attacked)]))


class AttackSuite(Family):
    name = "attacks"
    batch_seeded = True
    parts_of_evaluation = True

    def __init__(self, attacks, views):
        self.attacks, self.views = list(attacks), list(views)

    @classmethod
    def version_of(cls, identity):
        return record_version(cls.version, identity[1])

    @classmethod
    def prepare(cls, ctx, log):
        return cls(ctx.plan.attacks, ctx.plan.views)  # always: the clean accuracy is every report's base

    def attacks_for(self, spec, ctx) -> list:
        """The attacks, or none where the model's [[grid]] entry measures "clean" without "attacks"."""
        return self.attacks if ctx.plan.profile.measures(spec, "attacks") else []

    @staticmethod
    def subsets(ctx) -> dict:
        """{attack: positions in the evaluation subset} for the attacks [eval] attack_n runs on
        fewer images: a stratified subset of its size (seed 3; the cross-check's is seed 2)."""
        split, ev = ctx.eval_split, ctx.plan.profile.eval
        return {a: stratified_indices(split.labels, k, 3) for a, k in ev.attack_n.items() if k < len(split)}

    def planned(self, spec, ctx):
        n = len(ctx.eval_split)
        sub = self.subsets(ctx)
        return [(n, "clean", "none", {})] + [
            (len(sub[a.name]) if a.name in sub else n, a.name, v, a.kwargs)
            for a in self.attacks_for(spec, ctx) for v in attack_view(a, self.views)]

    def run(self, model, spec, ctx, log):
        return self._run(model, spec, ctx, self.attacks_for(spec, ctx))

    def run_missing(self, model, spec, ctx, log, missing):
        """The clean pass (its correctness picks the attacked points) and the attacks with a
        measurement missing: an attack added to a profile costs that attack alone."""
        names = {p[1] for p in missing}
        return self._run(model, spec, ctx, [a for a in self.attacks_for(spec, ctx) if a.name in names])

    def remeasures(self, planned, missing):
        """The clean pass (it picks the attacked points) and the missing attacks' measurements on
        every view (run_missing runs an attack on all its views)."""
        names = {p[1] for p in missing}
        return [p for p in planned if p[1] == "clean" or p[1] in names]

    def _run(self, model, spec, ctx, attacks):
        ev = ctx.plan.profile.eval
        return evaluate(model, spec.T, ctx.eval_split, attacks, self.views, batch_size=ev.batch_size,
                        seed=ev.attack_seed, progress=ctx.plan.progress, desc=f"attack {spec.name}",
                        n_classes=ctx.data.num_classes, subsets=self.subsets(ctx))

    summary = staticmethod(attack_summary)
