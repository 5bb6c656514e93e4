"""The adversarial attacks' registry, over torchattacks (inputs in [0,1], eps in pixel units).

Each entry says its threat model, its parameters with their CIFAR defaults (science.md), how to
build the attack on a view of the model (attacks/views.py), and the facts a reader of the results
needs to judge it against gradient masking:

* ``loss``: what the attack optimises ("ce", "margin", "dlr", "dlr_targeted", "mixed" for an
  ensemble, "none" for a geometric attack such as FAB);
* ``view_invariant``: True when dividing the logits by a positive constant (the scaled view is the
  raw one divided by T) cannot change the result, up to float rounding. Margin and DLR losses are
  scale-free, FAB works on ratios of logit differences, Square compares margins, and sign steps
  drop the gradient's scale. CE is not (the softmax saturates on the raw view of a high-T model);
  nor is CW-L2 (c trades the margin against the distance) nor AutoAttack (it starts with APGD-CE).
  An invariant attack reports the same robustness on both views: a gap between the views under a
  non-invariant attack is the masking signal;
* ``targeted``: False, "random" / "least_likely" (one target per image), or "multi" (every one of
  the top wrong classes in turn, AutoAttack style; still an untargeted success criterion);
* ``black_box``: the attack only queries outputs (Square): it cannot be masked by gradients;
* ``seeding``: "none" (draws no random numbers), "global" (draws from torch's global generator,
  which the caller seeds: the evaluator does, per batch) or "own" (torchattacks/AutoAttack call
  ``torch.manual_seed(seed)`` with the ``seed`` given to ``build`` on every call: whatever the
  caller seeded is overridden, and the global generator is left reseeded, so callers fork it).

The PGD family (pgd, pgd_l2, pgd_margin, pgd_target_*) stops early by default (``early_stop``,
see adversarial.LossPGD): a point is robust only if no iterate broke it, so its robust accuracy is
at most that of the same attack judged at its last iterate, and most points of a non-robust model
cost 1-3 steps.
A single-target attack (pgd_target_*) is judged twice: robust accuracy counts any misclassification,
the record's target_hit_rate the target class, which its early stop waits for.
``early_stop = false`` gives torchattacks' PGD loop, judged at its last iterate. The CE attacks
(FGSM, the PGDs) sum their loss over the batch where torchattacks averages it, so that a result
does not depend on the batch size (adversarial.LossPGD says why).
APGD-CE, APGD-DLR and APGD-T, alone or inside ``autoattack``, always stop early (attacks/apgd.py):
torchattacks' APGD already counts a point broken at any iterate, so there the early stop changes
the passes spent, not the result.

Where torchattacks' defaults differ from the standard (CIFAR) settings, the builders set the
standard ones, and say so. A new attack is one entry here (and, where torchattacks lacks it, a
class in adversarial.py); the evaluator needs nothing else.

The registry imports no attack: each builder imports its implementation (torchattacks, the classes
of adversarial.py and apgd.py) when it is called, as timm's registry imports no model file. What
reads the registry alone (the reports, a profile's checks, ``--list-attacks``) does not load
torchattacks and scipy (0.6-0.7 s of each such process on a 2-core Xeon).
"""
from __future__ import annotations

import contextlib
import difflib
import io
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Dict, Tuple, Union

from attacks.views import model_device
from bench.errors import BenchError


def parse_eps(value) -> float:
    """'8/255' -> 0.0313..., '0.5/255' -> 0.00196..., '0.03' -> 0.03; a float passes through."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = float(value)
    else:
        text = str(value).strip()
        try:
            if "/" not in text:
                out = float(text)
            else:
                try:
                    out = float(Fraction(text))  # exact: 8/255 rounded once
                except ValueError:  # Fraction reads whole numbers only: 0.5/255
                    top, bottom = text.split("/")
                    out = float(top) / float(bottom)
        except (ValueError, ZeroDivisionError):
            raise BenchError(f"cannot read {value!r} as a number: write e.g. 8/255, 0.5/255 or 0.031") from None
    return out


def format_eps(eps: float) -> str:
    """0.0313... -> '8/255' when eps is a whole number of 1/255 steps, else the decimal."""
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:g}"


@dataclass(frozen=True)
class Param:
    default: Any
    # "eps" (a pixel distance >= 0), "steps" and "int" (whole numbers >= 1), "bool",
    # "float" (> 0, or >= 0 with zero_ok), "choice" (one of choices)
    kind: str
    help: str
    choices: Tuple[str, ...] = ()
    zero_ok: bool = False


@dataclass(frozen=True)
class AttackInfo:
    name: str
    description: str
    norm: str  # "linf" or "l2": the bound the tests check
    params: Dict[str, Param]
    build: Callable  # build(model_view, *, n_classes, seed, **params) -> callable atk(x, y) -> x_adv
    loss: str = "ce"
    view_invariant: bool = False
    targeted: Union[bool, str] = False  # False, "random", "least_likely", "multi"
    black_box: bool = False
    seeding: str = "none"  # "none", "global", "own" (see the module docstring)
    # bumped with a change to the attack that alters its numbers: the grid measures its records
    # again (2: the CE attacks sum the loss over the batch instead of averaging it, see
    # adversarial.LossPGD; pgd_l2's 3: a tiny but non-zero gradient takes a full step, see
    # adversarial.PGDL2; pgd_target_*'s 3: the early stop waits for the target class and the
    # record counts its hits)
    revision: int = 1

    @property
    def min_classes(self) -> int:
        """Classes the attack's loss needs: DLR divides by z_pi1 - z_pi3 (three), its targeted form
        by z_pi1 - (z_pi3 + z_pi4) / 2 (four), and AutoAttack runs the targeted form."""
        return {"dlr": 3, "dlr_targeted": 4, "mixed": 4}.get(self.loss, 2)

    @property
    def single_target(self) -> bool:
        """One target class per point (random or least-likely): its hits can be counted, unlike
        a multi-target attack's, whose success is any misclassification."""
        return self.targeted in ("random", "least_likely")


ATTACKS: Dict[str, AttackInfo] = {}

_NORMS = ("linf", "l2")
_TARGETED = (False, "random", "least_likely", "multi")
_SEEDING = ("none", "global", "own")


def register_attack(name: str, *, description: str, norm: str, params: Dict[str, Param], loss: str,
                    view_invariant: bool, seeding: str, targeted: Union[bool, str] = False,
                    black_box: bool = False, revision: int = 1):
    assert norm in _NORMS and targeted in _TARGETED and seeding in _SEEDING, name

    def deco(build):
        ATTACKS[name] = AttackInfo(name, description, norm, params, build, loss=loss,
                                   view_invariant=view_invariant, targeted=targeted, black_box=black_box,
                                   seeding=seeding, revision=revision)
        return build
    return deco


def _whole(name: str, key: str, value) -> int:
    if isinstance(value, bool):
        raise BenchError(f"{name}: {key} must be a whole number >= 1, got {value!r}")
    try:
        v = int(str(value).strip())
    except ValueError:
        raise BenchError(f"{name}: {key} must be a whole number >= 1, got {value!r}") from None
    if v < 1:
        raise BenchError(f"{name}: {key} must be >= 1, got {value!r}")
    return v


def _check(name: str, key: str, p: Param, value):
    if p.kind == "eps" or p.kind == "float":
        if isinstance(value, bool):
            raise BenchError(f"{name}: {key} must be a number, got {value!r}")
        v = parse_eps(value)
        non_negative = p.kind == "eps" or p.zero_ok
        if not math.isfinite(v) or v < 0 or (not non_negative and v == 0):
            raise BenchError(f"{name}: {key} must be a {'non-negative' if non_negative else 'positive'} "
                             f"finite number, got {value!r}")
        return v
    if p.kind in ("steps", "int"):
        return _whole(name, key, value)
    if p.kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes"):
            return True
        if str(value).lower() in ("0", "false", "no"):
            return False
        raise BenchError(f"{name}: {key} must be true or false, got {value!r}")
    if p.kind == "choice":
        if isinstance(value, str) and value.strip().lower() in p.choices:
            return value.strip().lower()
        raise BenchError(f"{name}: {key} must be one of {', '.join(p.choices)}, got {value!r}")
    raise AssertionError(p.kind)


@dataclass(frozen=True)
class AttackConfig:
    """An attack with every parameter resolved: the identity of a measurement."""
    name: str
    params: Tuple[Tuple[str, Any], ...] = field(default=())

    @property
    def info(self) -> AttackInfo:
        return ATTACKS[self.name]

    @property
    def kwargs(self) -> Dict[str, Any]:
        return dict(self.params)

    @property
    def eps(self) -> float:
        return float(self.kwargs.get("eps", 0.0))

    @property
    def steps(self) -> int:
        return int(self.kwargs.get("steps", 1))

    def build(self, model_view, n_classes: int = 10, seed: int = 0):
        """The attack on ``model_view`` (in eval mode), called as ``atk(x, y) -> x_adv``.

        ``n_classes`` sets the number of target classes of the multi-targeted attacks; ``seed``
        is the seed of the attacks that seed themselves (seeding "own")."""
        if int(n_classes) < 2:
            raise BenchError(f"{self.name}: a classifier needs at least 2 classes, got n_classes={n_classes}")
        # torchattacks takes its device from the first parameter and, finding none, says so on
        # stdout, in the middle of the run's table: it is told the device instead
        bare = next(model_view.parameters(), None) is None
        with contextlib.redirect_stdout(io.StringIO()) if bare else contextlib.nullcontext():
            atk = self.info.build(model_view, n_classes=int(n_classes), seed=int(seed), **self.kwargs)
        if bare and hasattr(atk, "set_device"):
            atk.set_device(model_device(model_view))
        return atk


def check_attack_name(name: str, where: str = "") -> None:
    """The one unknown-attack error, with suggestions; ``where`` says which setting named it."""
    if name not in ATTACKS:
        near = difflib.get_close_matches(name, ATTACKS, n=2, cutoff=0.3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise BenchError(f"{where}unknown attack {name!r}{hint}; known: {', '.join(ATTACKS)}; see --list-attacks")


def make_attack(name: str, overrides: Dict[str, Any] | None = None) -> AttackConfig:
    """Resolve an attack name and parameter overrides (profile, then CLI) into a config.

    Only the attack's own parameters are read from ``overrides``: shared settings such as the
    CLI's --steps apply to the attacks that have them. ``check_overrides`` rejects strays.
    """
    check_attack_name(name)
    info = ATTACKS[name]
    values = {}
    for key, p in info.params.items():
        raw = (overrides or {}).get(key, p.default)
        values[key] = _check(name, key, p, raw)
    return AttackConfig(name, tuple(sorted(values.items())))


def check_overrides(name: str, overrides: Dict[str, Any]):
    """A profile's [attack.<name>] table may only name parameters the attack has."""
    unknown = set(overrides) - set(ATTACKS[name].params)
    if unknown:
        raise BenchError(f"attack {name} has no parameter {', '.join(sorted(unknown))}; "
                         f"it takes {', '.join(ATTACKS[name].params)}")




def _target_classes(name: str, n_target_classes: int, n_classes: int) -> int:
    # AutoAttack's 9 targets assume 10+ classes; fewer classes have fewer wrong ones
    if n_classes < 4:
        raise BenchError(f"{name}: the targeted DLR loss needs at least 4 classes, got {n_classes}")
    return min(n_target_classes, n_classes - 1)


# ---------------------------------------------------------------------------------------------
# The registry

# the standard CIFAR Linf radius: every Linf attack's default, and the radius of the leaderboard's
# robust_min (the only number the reports call robustness)
HEADLINE_EPS = 8 / 255
EPS = Param("8/255", "eps", "Linf radius in pixel units")
EPS_L2 = Param("0.5", "eps", "L2 radius in pixel units (per image, over all 3x32x32 values)")
ALPHA = Param("2/255", "float", "step size in pixel units")
STEPS_PGD = Param(20, "steps", "number of steps")
RANDOM_START = Param(True, "bool", "start from a uniform point in the eps ball")
STEPS_AA = Param(100, "steps", "iterations (AutoAttack's 100)")
RESTARTS = Param(1, "int", "random restarts (AutoAttack standard: 1)")
TARGETS = Param(9, "int", "target classes: the top wrong classes, one after another (at most n_classes - 1)")
QUERIES = Param(5000, "int", "queries per image and restart (AutoAttack's 5000)")
VERSION = Param("standard", "choice", "AutoAttack version: standard (APGD-CE, APGD-T, FAB-T, Square) or plus "
                "(adds APGD-DLR and untargeted FAB, 5 restarts)", choices=("standard", "plus"))

EARLY_STOP = Param(True, "bool", "stop attacking a point at its first misclassified iterate and keep that iterate "
                   "(robust only if no iterate broke it; off: the plain PGD loop, judged at the last iterate)")
PGD_PARAMS = {"eps": EPS, "alpha": ALPHA, "steps": STEPS_PGD, "random_start": RANDOM_START, "early_stop": EARLY_STOP}


@register_attack("fgsm", norm="linf", loss="ce", view_invariant=False, seeding="none", revision=2,
                 description="FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps",
                 params={"eps": EPS})
def _fgsm(model, *, n_classes, seed, eps):
    from attacks.adversarial import LossPGD
    # one PGD step of size eps from the clean point: torchattacks.FGSM with the loss summed (LossPGD)
    return LossPGD(model, eps=eps, alpha=eps, steps=1, random_start=False)


@register_attack("pgd", norm="linf", loss="ce", view_invariant=False, seeding="global", revision=2,
                 description="PGD-Linf with CE loss and random start (Madry et al. 2018); PGD-20",
                 params=PGD_PARAMS)
def _pgd(model, *, n_classes, seed, eps, alpha, steps, random_start, early_stop):
    from attacks.adversarial import LossPGD
    return LossPGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, early_stop=early_stop)


@register_attack("pgd_l2", norm="l2", loss="ce", view_invariant=False, seeding="global", revision=3,
                 description="PGD-L2 with CE loss and random start (Madry et al. 2018)",
                 params={"eps": EPS_L2, "alpha": Param("0.1", "float", "step length in pixel units (L2)"),
                         "steps": STEPS_PGD, "random_start": RANDOM_START, "early_stop": EARLY_STOP})
def _pgd_l2(model, *, n_classes, seed, eps, alpha, steps, random_start, early_stop):
    from attacks.adversarial import PGDL2
    return PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, early_stop=early_stop)


@register_attack("cw_l2", norm="l2", loss="margin", view_invariant=False, seeding="none",
                 description="Carlini-Wagner L2 (fixed c, no binary search); a perturbation longer than eps "
                             "counts as a failure (CW has no radius of its own); torchattacks stops a whole "
                             "batch when its summed loss rises, so a result depends on the batch (records "
                             "keep eval_batch_size)",
                 params={"eps": EPS_L2,
                         "c": Param(1.0, "float", "weight of the margin term against the squared L2 distance"),
                         "kappa": Param(0.0, "float", "confidence margin", zero_ok=True),
                         "steps": Param(100, "steps", "Adam steps"),
                         "lr": Param(0.01, "float", "Adam learning rate (in tanh space)")})
def _cw_l2(model, *, n_classes, seed, eps, c, kappa, steps, lr):
    from attacks.adversarial import RadiusCW
    return RadiusCW(model, eps=eps, c=c, kappa=kappa, steps=steps, lr=lr)


@register_attack("pgd_margin", norm="linf", loss="margin", view_invariant=True, seeding="global",
                 description="PGD-Linf on the CW margin loss max_{i!=y} z_i - z_y (scale-free: immune to "
                             "softmax saturation)",
                 params=PGD_PARAMS)
def _pgd_margin(model, *, n_classes, seed, eps, alpha, steps, random_start, early_stop):
    from attacks.adversarial import MarginPGD
    return MarginPGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, early_stop=early_stop)


def _apgd(loss):
    def build(model, *, n_classes, seed, eps, steps, n_restarts):
        from attacks import apgd
        return apgd.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=n_restarts, seed=seed, loss=loss,
                         verbose=False)
    return build


register_attack("apgd_ce", norm="linf", loss="ce", view_invariant=False, seeding="own",
                description="APGD with CE loss (Croce and Hein 2020; AutoAttack's first attack)",
                params={"eps": EPS, "steps": STEPS_AA, "n_restarts": RESTARTS})(_apgd("ce"))
register_attack("apgd_dlr", norm="linf", loss="dlr", view_invariant=True, seeding="own",
                description="APGD with the scale-free DLR loss (Croce and Hein 2020)",
                params={"eps": EPS, "steps": STEPS_AA, "n_restarts": RESTARTS})(_apgd("dlr"))


@register_attack("apgd_t", norm="linf", loss="dlr_targeted", view_invariant=True, seeding="own", targeted="multi",
                 description="APGD-T: APGD on the targeted DLR loss toward each of the top wrong classes "
                             "(AutoAttack's second attack)",
                 params={"eps": EPS, "steps": STEPS_AA, "n_restarts": RESTARTS, "n_target_classes": TARGETS})
def _apgd_t(model, *, n_classes, seed, eps, steps, n_restarts, n_target_classes):
    from attacks import apgd
    atk = apgd.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=n_restarts, seed=seed,
                     n_classes=n_classes, verbose=False)
    atk.n_target_classes = _target_classes("apgd_t", n_target_classes, n_classes)  # torchattacks: n_classes-1
    return atk


@register_attack("fab_t", norm="linf", loss="none", view_invariant=True, seeding="own", targeted="multi",
                 description="FAB-T: minimal-Linf boundary attack toward each of the top wrong classes, kept "
                             "where within eps (AutoAttack's third attack)",
                 params={"eps": EPS, "steps": STEPS_AA, "n_restarts": RESTARTS, "n_target_classes": TARGETS})
def _fab_t(model, *, n_classes, seed, eps, steps, n_restarts, n_target_classes):
    import torchattacks
    atk = torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=n_restarts, seed=seed,
                           multi_targeted=True, n_classes=n_classes, verbose=False)
    atk.n_target_classes = _target_classes("fab_t", n_target_classes, n_classes)
    return atk


@register_attack("square", norm="linf", loss="margin", view_invariant=True, seeding="own", black_box=True,
                 description="Square Attack: query-only random search on the margin loss (Andriushchenko et "
                             "al. 2020; AutoAttack's fourth attack)",
                 params={"eps": EPS, "n_queries": QUERIES, "n_restarts": RESTARTS,
                         "p_init": Param(0.8, "float", "initial fraction of pixels in a square"),
                         "rescale_schedule": Param(False, "bool", "fit the square-size schedule to n_queries "
                                                   "(AutoAttack standard: off; torchattacks' default: on)")})
def _square(model, *, n_classes, seed, eps, n_queries, n_restarts, p_init, rescale_schedule):
    if p_init > 1:
        raise BenchError(f"square: p_init is a fraction of the image, at most 1, got {p_init}")
    import torchattacks
    return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=n_queries, n_restarts=n_restarts,
                               p_init=p_init, loss="margin", resc_schedule=rescale_schedule, seed=seed,
                               verbose=False)


AA_PARAMS = {"eps": EPS, "version": VERSION, "steps": STEPS_AA, "n_queries": QUERIES}


@register_attack("autoattack", norm="linf", loss="mixed", view_invariant=False, seeding="own",
                 description="AutoAttack through torchattacks, set to the reference's iterations: the worst "
                             "case over APGD-CE, APGD-T, FAB-T and Square",
                 params=AA_PARAMS)
def _autoattack(model, *, n_classes, seed, eps, version, steps, n_queries):
    import torchattacks

    from attacks import apgd
    atk = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version=version, n_classes=n_classes, seed=seed,
                                  verbose=False)
    # torchattacks builds its members with its own defaults: 10 iterations for APGD, APGD-T and FAB
    # (the reference runs 100), n_classes - 1 targets (the reference: 9), and Square with the
    # schedule rescaled to n_queries (the reference: not). Set the reference's values.
    targets = _target_classes("autoattack", 9, n_classes)
    for member in atk._autoattack.attacks:
        # APGD-CE and APGD-T stop attacking a broken point (attacks/apgd.py: same results, a
        # fraction of the passes). The subclass adds no state, so the member keeps every setting
        # torchattacks gave it; the cross-check then holds the early stop to the authors' code.
        if type(member) is torchattacks.APGD:
            member.__class__ = apgd.APGD
        elif type(member) is torchattacks.APGDT:
            member.__class__ = apgd.APGDT
        if isinstance(member, (torchattacks.APGD, torchattacks.APGDT, torchattacks.FAB)):
            member.steps = steps
        if isinstance(member, (torchattacks.APGDT, torchattacks.FAB)):
            member.n_target_classes = targets
        if isinstance(member, torchattacks.Square):
            member.n_queries = n_queries
            member.rescale_schedule = False
    return atk


@register_attack("autoattack_ref", norm="linf", loss="mixed", view_invariant=False, seeding="own",
                 description="AutoAttack as its authors wrote it (PyPI pyautoattack), to check the torchattacks one",
                 params=AA_PARAMS)
def _autoattack_ref(model, *, n_classes, seed, eps, version, steps, n_queries):
    from attacks.autoattack_ref import ReferenceAutoAttack
    return ReferenceAutoAttack(model, eps=eps, version=version, steps=steps, n_queries=n_queries,
                               n_classes=n_classes, seed=seed)


def _targeted_pgd(mode):
    def build(model, *, n_classes, seed, eps, alpha, steps, random_start, early_stop):
        atk = _pgd(model, n_classes=n_classes, seed=seed, eps=eps, alpha=alpha, steps=steps,
                   random_start=random_start, early_stop=early_stop)
        if mode == "random":
            atk.set_mode_targeted_random(quiet=True)
        else:
            atk.set_mode_targeted_least_likely(quiet=True)
        return atk
    return build


register_attack("pgd_target_random", norm="linf", loss="ce", view_invariant=False, seeding="global",
                targeted="random", revision=3,
                description="targeted PGD-Linf (CE) toward a random wrong class per image; robust accuracy "
                            "counts any misclassification, target_hit_rate the target class",
                params=PGD_PARAMS)(_targeted_pgd("random"))
register_attack("pgd_target_ll", norm="linf", loss="ce", view_invariant=False, seeding="global",
                targeted="least_likely", revision=3,
                description="targeted PGD-Linf (CE) toward the least-likely class (the same on both views); "
                            "robust accuracy counts any misclassification, target_hit_rate the target class",
                params=PGD_PARAMS)(_targeted_pgd("least_likely"))
