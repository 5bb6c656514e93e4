"""What every measurement family shares: the ``Measurement`` it returns, a measurement's identity,
and the ``Family`` contract (after lm-evaluation-harness, where a task is one file, and
torchattacks, where an attack is one ``forward``).

A family is prepared once per run, from the plan (``prepare`` returns None when the plan does not
ask for it). For each model it says which measurements it will make (``planned``: their
identities, which is all the planner and the resume check read) and makes them (``run``). The
grid writes ``run``'s measurements only if they are exactly the ones ``planned`` named, so a
family whose two halves drift apart fails loudly instead of re-measuring on every resume.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch

from attacks.views import PassCount, PassCounter
from bench.data import Split, resolve_data_root, stratified_indices, to_float
from bench.shift_data import search_roots

# (n, threat, view, params): with the weights, data, split and seeds of the run, what a record is
# keyed by in the results store (bench/store.py IDENTITY)
Identity = Tuple[int, str, str, dict]


@dataclass
class Measurement:
    threat: str  # "clean", an attack, "corruption", a natural transform or a shifted test set
    view: str  # "raw", "scaled", "any" (a view-invariant attack), or "none" where no attack looks at logits
    eps: float
    steps: int
    params: Dict[str, object]
    n: int
    metrics: Dict[str, float]
    wall_s: float
    family: str = "attack"  # clean, attack, corruption, natural, shift, calibration, diagnostic
    source: str = ""  # the images measured when they are not the dataset's own split
    corruption: str = ""  # threat "corruption": which one ("none" at severity 0: the same images clean)
    severity: float = float("nan")  # threat "corruption": 0..5
    magnitude: float = float("nan")  # natural transforms: the point of the sweep (degrees, pixels, factor)
    bits: str = ""  # per image of the split (hex): robust (attacks) or correct (clean)
    extra: Dict[str, object] = field(default_factory=dict)  # more fields for the record (e.g. reliability bins)

    @property
    def identity(self) -> Identity:
        return (self.n, self.threat, self.view, self.params)


def identity_text(ident: Identity) -> str:
    """An identity as canonical text: two identities are one measurement when these are equal."""
    return json.dumps(list(ident), sort_keys=True, default=str)


def check_planned(family: str, planned: Sequence[Identity], measured: Sequence[Measurement],
                  needed: Optional[Sequence[Identity]] = None) -> None:
    """``run`` made the measurements ``planned`` named: all of them, or (``run_missing``) at
    least the ``needed`` ones and nothing unplanned (a programming error otherwise: the resume
    check would look for records that are never written)."""
    want, got = set(map(identity_text, planned)), set(identity_text(m.identity) for m in measured)
    need = want if needed is None else set(map(identity_text, needed))
    if not got <= want or not need <= got:
        extra, missing = sorted(got - want), sorted(need - got)
        raise RuntimeError(f"measurement family {family!r} measured other things than it planned: "
                           f"unplanned {extra[:3]}, not measured {missing[:3]}")


def frac(mask: torch.Tensor) -> float:
    """An exact fraction (a float32 mean would print 0.23 as 0.23000000417)."""
    return int(mask.sum()) / mask.numel()


def counted(model) -> Tuple[PassCounter, PassCount]:
    """``model`` counting its passes, and the count: every measurement records what it spent."""
    cost = PassCount()
    return PassCounter(model, cost), cost


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


@torch.no_grad()
def correct_mask(model, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """Per image: classified correctly (after ``transform``, if any)."""
    model.eval()  # BatchNorm on its running statistics, whatever ran on the model before
    out = torch.empty(len(labels), dtype=torch.bool, device=labels.device)
    for a in range(0, len(labels), batch_size):
        x = to_float(images_u8[a:a + batch_size])
        if transform is not None:
            x = transform(x)
        out[a:a + batch_size] = model(x).argmax(1) == labels[a:a + batch_size]
    return out


def shift_subset(ctx) -> Tuple[torch.Tensor, Split]:
    """The images the corruptions and natural transforms use: a stratified ``shift_n`` (default:
    ``n``) of the evaluation split, the same for every model. (indices into the split, subset)"""
    ev = ctx.plan.profile.eval
    idx = stratified_indices(ctx.split.labels, ev.shift_n or ev.n, ev.subset_seed)
    return idx, ctx.split.subset(idx)


def shift_roots(plan) -> list:
    """Where the real shifted test sets (CIFAR-10-C, CIFAR-10.1) are looked for."""
    return search_roots(resolve_data_root(plan.data_root, plan.cache_dir), plan.cache_dir)


class Family:
    """One family of measurements. ``ctx`` (bench/grid/jobs.py Context) gives a family the plan
    (``ctx.plan``), the data (``ctx.data``), the evaluation split (``ctx.split``) and its
    subset (``ctx.eval_split``), and other models of the grid (``ctx.ckpt_key(spec)``,
    ``ctx.load(spec, log)``)."""

    name: ClassVar[str] = ""  # the job's family, in job keys and logs
    # What resume compares (with the weights and the record schema): a record of another version
    # is measured again. Bump it with any change that alters this family's numbers, as
    # TRAINER_VERSION for checkpoints; a change of layout, wording or speed keeps the records. A
    # change to one attack bumps that attack's ``revision`` instead (attacks/registry.py), which
    # the attack families add to this (``version_of``).
    version: ClassVar[int] = 1
    # Whether the numbers depend on how the images fall into batches: a random start is drawn per
    # batch (bench/measure/adversarial.py), so a record made at another [eval] batch_size is of
    # other starts, and resume measures it again rather than call it done (its eval_batch_size says)
    batch_seeded: ClassVar[bool] = False

    @classmethod
    def version_of(cls, identity: Identity) -> int:
        """The version of one planned measurement's record: the family's, or finer where a
        family's parts change alone (an attack's ``revision``: one attack re-measured, not all).
        From the identity alone, so that a stored record can be judged without a run's plan."""
        return cls.version

    describe: ClassVar[str] = ""  # one line for --list-attacks
    # Whether a measurement of fewer images than the evaluation's is a draw from the evaluation's
    # own images (the cross-check, [eval] attack_n, the float64 check), so that the evaluation's n is
    # part of what it measured (bench/store.py record_id); the shifts' subsets are drawn from the
    # whole split, whatever the evaluation's n
    parts_of_evaluation: ClassVar[bool] = False


    @classmethod
    def attacks_of(cls, ev) -> Tuple[str, ...]:
        """The registry attacks this family builds under the ``[eval]`` settings ``ev`` (beside the
        chosen ones): the plan checks a command-line --eps/--alpha/--steps against them."""
        return ()

    @classmethod
    def check(cls, profile) -> None:
        """Raise BenchError on settings of ``profile`` (its attacks with the command line's
        parameters in) this family cannot measure as its records would say: before a file is written."""

    @classmethod
    def prepare(cls, ctx, log: Callable[[str], None]) -> Optional["Family"]:
        """This run's family, with whatever it shares across models, or None when not asked for.
        By default: on when named in the profile's ``[eval] measure`` or by ``--attack``; a
        family with settings of its own overrides this."""
        return cls() if cls.name in ctx.plan.profile.eval.measure else None

    def planned(self, spec, ctx) -> List[Identity]:
        """The measurements ``run`` will make on ``spec`` (none: the family skips this model)."""
        raise NotImplementedError

    def run(self, model, spec, ctx, log: Callable[[str], None]) -> List[Measurement]:
        raise NotImplementedError

    def stale(self, record: dict, identity: Identity, ctx) -> bool:
        """Whether a stored record of this identity, at this version and of these weights, was made
        from something else that has changed since (a transfer attack's surrogate, retrained to
        other weights): then it is measured again."""
        return False

    def run_missing(self, model, spec, ctx, log: Callable[[str], None], missing: Sequence[Identity]) -> List[Measurement]:
        """The measurements ``missing`` (those of ``planned`` the store lacks) and whatever else a
        family measures with them; by default all of ``run``. A family whose parts cost much
        alone (the attack suite) measures only what is missing."""
        return self.run(model, spec, ctx, log)

    def remeasures(self, planned: Sequence[Identity], missing: Sequence[Identity]) -> List[Identity]:
        """What ``run_missing(missing)`` measures of ``planned``: all of it, as ``run`` does, by
        default; a family that measures only what is missing says so here, so that a grid's
        estimate prices what its run will do."""
        return list(planned)

    def needs(self, spec, ctx) -> List:
        """Other models ``run`` uses (trained first): a transfer attack's surrogate."""
        return []

    def summary(self, ms: Sequence[Measurement]) -> str:
        """One log line: mean accuracy per threat."""
        groups: Dict[str, List[float]] = {}
        for m in ms:
            groups.setdefault(m.threat, []).append(m.metrics["accuracy"])
        return ", ".join(f"{k} {pct(sum(v) / len(v))}" for k, v in groups.items())
