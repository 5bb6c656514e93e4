"""Adversarial attacks, one registry over torchattacks (inputs in [0,1], eps in pixel units).

Each entry says its threat model, its parameters with their CIFAR defaults (science.md) and how
to build the torchattacks object on a view of the model. The attack-suite issue adds entries
here; the evaluator needs nothing else.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Dict, Tuple

import torchattacks

from bench.errors import BenchError


def parse_eps(value) -> float:
    """'8/255' -> 0.0313..., '0.03' -> 0.03; a float passes through."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = float(value)
    else:
        text = str(value).strip()
        try:
            out = float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise BenchError(f"cannot read {value!r} as a number: write e.g. 8/255 or 0.031") from None
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
    kind: str  # "eps" (a pixel distance), "steps" (int >= 1), "bool", "float" (positive)
    help: str


@dataclass(frozen=True)
class AttackInfo:
    name: str
    description: str
    norm: str  # "linf" or "l2": the bound the tests check
    params: Dict[str, Param]
    build: Callable  # build(model_view, **params) -> torchattacks.Attack


ATTACKS: Dict[str, AttackInfo] = {}


def register_attack(name: str, *, description: str, norm: str, params: Dict[str, Param]):
    def deco(build):
        ATTACKS[name] = AttackInfo(name, description, norm, params, build)
        return build
    return deco


def _check(name: str, key: str, p: Param, value):
    if p.kind == "eps" or p.kind == "float":
        v = parse_eps(value)
        if not math.isfinite(v) or v < 0 or (p.kind == "float" and v == 0):
            raise BenchError(f"{name}: {key} must be a {'non-negative' if p.kind == 'eps' else 'positive'} "
                             f"finite number, got {value!r}")
        return v
    if p.kind == "steps":
        try:
            v = int(str(value))
        except ValueError:
            raise BenchError(f"{name}: {key} must be a whole number >= 1, got {value!r}") from None
        if v < 1:
            raise BenchError(f"{name}: {key} must be >= 1, got {value!r}")
        return v
    if p.kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes"):
            return True
        if str(value).lower() in ("0", "false", "no"):
            return False
        raise BenchError(f"{name}: {key} must be true or false, got {value!r}")
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

    def build(self, model_view):
        return self.info.build(model_view, **self.kwargs)


def make_attack(name: str, overrides: Dict[str, Any] | None = None) -> AttackConfig:
    """Resolve an attack name and parameter overrides (profile, then CLI) into a config.

    Only the attack's own parameters are read from ``overrides``: shared settings such as the
    CLI's --steps apply to the attacks that have them. ``check_overrides`` rejects strays.
    """
    if name not in ATTACKS:
        import difflib
        near = difflib.get_close_matches(name, ATTACKS, n=2, cutoff=0.3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise BenchError(f"unknown attack {name!r}{hint}; known: {', '.join(ATTACKS)}; see --list-attacks")
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


EPS = Param("8/255", "eps", "Linf radius in pixel units")


@register_attack("fgsm", norm="linf", description="FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps",
                 params={"eps": EPS})
def _fgsm(model, eps):
    return torchattacks.FGSM(model, eps=eps)


@register_attack("pgd", norm="linf", description="PGD-Linf with CE loss and random start (Madry et al. 2018)",
                 params={"eps": EPS,
                         "alpha": Param("2/255", "float", "step size in pixel units"),
                         "steps": Param(10, "steps", "number of steps"),
                         "random_start": Param(True, "bool", "start from a uniform point in the eps ball")})
def _pgd(model, eps, alpha, steps, random_start):
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
