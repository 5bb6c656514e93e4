"""Model names, specs and the architecture registry.

A model name encodes everything needed to build and train it (timm style):

    <arch>[w<width>][_bn]_T<temperature>[_<regime>][_lrT][_s<seed>][@best|@last]

    resnet18_T5          ResNet-18, trained with CE(z/5, y)
    resnet18_bn_T11.7    ... with a BatchNorm1d on the features before the classifier
    resnet18w32_Tauto    ResNet-18 at base width 32 (M=256), T from the feature dimension
    fastnet_T50_lrT_s2   fastnet at T=50, loss scaled by T (step-size control arm), seed 2
    resnet18_T5_at@best  ResNet-18, PGD-AT at T=5, the checkpoint best on held-out PGD accuracy

Parsing gives a frozen ``ModelSpec``; ``spec.name`` is the canonical spelling
(``resnet18_T5.0`` -> ``resnet18_T5``), so names round-trip.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional, Union

import numpy as np

from bench.errors import BenchError

# Claim B (Hasegawa & Sakai 2025): T* = alpha*sqrt(M) + beta, clipped below.
TAUTO_ALPHA = 0.7239
TAUTO_BETA = -4.706
TAUTO_MIN = 0.1

# Training regimes: the suffix after the temperature. "std" is plain CE(z/T) training and is
# left out of canonical names; the trainer dispatches on spec.regime.
REGIMES: Dict[str, str] = {
    "std": "standard training with CE(z/T, y)",
    "at": "PGD-AT (Madry et al. 2018): CE(z/T) on PGD examples that maximise CE(z/T)",
    "atT1": "PGD-AT whose inner attack maximises CE(z) (T=1); the outer loss is CE(z/T)",
    "trades": "TRADES (Zhang et al. 2019), beta 6: CE(z/T) + beta KL(p(x) || p(x')) on z/T",
    "fat": "fast AT (Wong et al. 2020): FGSM from a random start, step 1.25 eps; catastrophic "
           "overfitting is detected and reported",
}
# Adversarially trained models keep two checkpoints of one training run: the best by PGD
# accuracy on a held-out part of the training set, and the last (robust overfitting is the usual
# way AT results mislead). A name addresses one with @best / @last.
CHECKPOINTS = ("best", "last")
# Seeds go to torch's and numpy's generators (numpy takes at most 2**32 - 1).
MAX_SEED = 2 ** 32 - 1
# A name becomes part of file names (checkpoints, locks, job logs) that carry up to ~50 more
# characters; most file systems stop at 255 bytes. Only a temperature spelt with many digits
# (T1e-300 is written out as 0.000...1) comes near.
MAX_NAME_LEN = 100


@dataclass(frozen=True)
class ArchInfo:
    name: str
    build: Callable  # build(width, num_classes) -> (features module, feature_dim)
    default_width: Optional[int]  # None: the architecture has no width knob
    feature_dim: Callable[[int], int]  # width -> M
    description: str
    width_multiple: int = 1  # a width the architecture can build is a multiple of this (a ViT's heads)


ARCHS: Dict[str, ArchInfo] = {}


def register_arch(name: str, *, description: str, feature_dim: Callable[[int], int],
                  default_width: Optional[int] = None, width_multiple: int = 1):
    """Decorator: register ``build(width, num_classes)`` under ``name``."""

    def deco(build):
        if name in ARCHS:
            raise ValueError(f"architecture {name!r} registered twice")
        ARCHS[name] = ArchInfo(name, build, default_width, feature_dim, description, width_multiple)
        return build

    return deco


def format_temperature(t: Union[float, str]) -> str:
    """Shortest positional spelling: 5.0 -> '5', 0.50 -> '0.5', 1e-3 -> '0.001'."""
    if t == "auto":
        return "auto"
    return np.format_float_positional(float(t), trim="-")


@dataclass(frozen=True)
class TautoFormula:
    """T* = alpha sqrt(M) + beta + gamma ln(CSG) + delta ln(num_classes), clipped below at floor
    (claim B). gamma and delta are unpublished: 0 unless a profile's [tauto] gives fitted values
    (python -m bench.tools.fit_temperature fits them from sweeps)."""
    alpha: float = TAUTO_ALPHA
    beta: float = TAUTO_BETA
    gamma: float = 0.0
    delta: float = 0.0
    floor: float = TAUTO_MIN

    def resolve(self, feature_dim: int, csg: Optional[float] = None, num_classes: Optional[int] = None) -> float:
        t = self.alpha * math.sqrt(feature_dim) + self.beta
        if self.gamma:
            if not csg or csg <= 0:
                raise BenchError("the T* correction gamma*ln(CSG) needs the dataset's CSG ([tauto] csg)")
            t += self.gamma * math.log(csg)
        if self.delta:
            t += self.delta * math.log(num_classes)
        return float(format_temperature(max(self.floor, round(t, 4))))

    @property
    def published(self) -> bool:
        return self == TautoFormula()


@dataclass(frozen=True)
class LoadedSpec:
    """A model the grid loads and never trains, beside the ModelSpecs of the harness's own models
    (a RobustBench zoo model, a caller's own network): no training run, no temperature sweep, no
    transfer surrogate; what the runner and the evaluators read of a spec."""
    name: str
    T: float = 1.0
    regime: str = "zoo"
    adversarial: bool = False
    checkpoint: str = ""

    @property
    def temperature(self) -> float:
        return self.T

    def checkpoints(self) -> list:
        return [self]


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    temperature: Union[float, str]  # a positive float, or "auto" (resolved from M)
    width: Optional[int] = None  # None: the architecture's default
    bn_head: bool = False
    regime: str = "std"
    lr_scale: bool = False  # multiply the loss by T, so logit-space steps match T=1
    seed: int = 0
    checkpoint: str = ""  # adversarial regimes: "best" or "last" ("" = the training run, both)
    # _Tauto with a profile's own coefficients or corrections (TautoFormula.resolve): the T they
    # give; None = the published formula of M alone. Not part of the name.
    resolved_T: Optional[float] = None
    info: ArchInfo = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise BenchError(f"unknown architecture {self.arch!r}; known: {', '.join(sorted(ARCHS))}")
        object.__setattr__(self, "info", ARCHS[self.arch])
        if self.width is not None:
            if self.info.default_width is None:
                raise BenchError(f"{self.arch} has no width variants; drop the 'w{self.width}'")
            if self.width < 1:
                raise BenchError(f"width must be a positive integer, got {self.width}")
            if self.width % self.info.width_multiple:  # else an AssertionError when training starts
                k = self.info.width_multiple
                raise BenchError(f"{self.arch} widths are multiples of {k}, got w{self.width}: e.g. "
                                 f"w{self.width - self.width % k or k} or w{self.width - self.width % k + k}")
            if self.width == self.info.default_width:
                object.__setattr__(self, "width", None)
        if self.temperature != "auto":
            try:
                t = float(self.temperature)
            except (TypeError, ValueError):
                t = float("nan")
            if isinstance(self.temperature, bool) or not math.isfinite(t) or t <= 0:
                raise BenchError(f"temperature must be a positive finite number, got {self.temperature!r}")
            object.__setattr__(self, "temperature", float(format_temperature(t)))
        if self.regime not in REGIMES:
            raise BenchError(f"unknown regime {self.regime!r}; known: {', '.join(sorted(REGIMES))}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise BenchError(f"seed must be a whole number in 0..{MAX_SEED}, got {self.seed!r}")
        if self.checkpoint and (self.checkpoint not in CHECKPOINTS or self.regime == "std"):
            raise BenchError(f"@{self.checkpoint}: only adversarially trained models (regimes "
                             f"{', '.join(r for r in REGIMES if r != 'std')}) have @best and @last checkpoints")
        if len(self.name) > MAX_NAME_LEN:
            raise BenchError(f"{self.name[:24]}...{self.name[-12:]} is {len(self.name)} characters long; "
                             f"names become file names, which allow {MAX_NAME_LEN}: write the temperature with "
                             f"fewer digits")

    @property
    def adversarial(self) -> bool:
        return self.regime != "std"

    @property
    def run(self) -> "ModelSpec":
        """The training run behind this model: the spec without its @best/@last."""
        return replace(self, checkpoint="") if self.checkpoint else self

    def checkpoints(self) -> list:
        """The models a name stands for: an adversarial run without @ is both of its checkpoints."""
        if self.adversarial and not self.checkpoint:
            return [replace(self, checkpoint=c) for c in CHECKPOINTS]
        return [self]

    @property
    def arch_name(self) -> str:
        return self.arch + (f"w{self.width}" if self.width is not None else "")

    @property
    def feature_dim(self) -> int:
        """M, the dimension of the vector the final linear layer sees."""
        return self.info.feature_dim(self.width or self.info.default_width or 0)

    @property
    def T(self) -> float:
        """The training temperature, with ``auto`` resolved from the feature dimension."""
        if self.temperature == "auto":
            if self.resolved_T is not None:
                return self.resolved_T
            return TautoFormula().resolve(self.feature_dim)
        return float(self.temperature)

    @property
    def head(self) -> str:
        return "bn" if self.bn_head else "plain"

    @property
    def name(self) -> str:
        parts = [self.arch_name]
        if self.bn_head:
            parts.append("bn")
        parts.append("T" + format_temperature(self.temperature))
        if self.regime != "std":
            parts.append(self.regime)
        if self.lr_scale:
            parts.append("lrT")
        if self.seed:
            parts.append(f"s{self.seed}")
        return "_".join(parts) + (f"@{self.checkpoint}" if self.checkpoint else "")

    def to_dict(self) -> dict:
        """Everything that identifies the model (the key of its checkpoint builds on this)."""
        return {"name": self.name, "arch": self.arch_name, "width": self.width or self.info.default_width,
                "feature_dim": self.feature_dim, "bn_head": self.bn_head, "temperature": self.T,
                "temperature_spec": format_temperature(self.temperature), "regime": self.regime,
                "lr_scale": self.lr_scale, "seed": self.seed,
                **({"checkpoint": self.checkpoint} if self.checkpoint else {})}

    def __str__(self):
        return self.name


_TEMP_RE = re.compile(r"T(auto|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")


def _suggest(name: str) -> str:
    """' (nearest valid: a, b)' built by trying each architecture with the name's tail."""
    tail = name[name.find("_T"):] if "_T" in name else "_T1"
    if not _TEMP_RE.fullmatch(tail.split("_")[1] if tail.count("_") >= 1 else ""):
        tail = "_T1"
    candidates = list(dict.fromkeys([a + tail for a in ARCHS] + [a + "_T1" for a in ARCHS]))
    near = difflib.get_close_matches(name, candidates, n=3, cutoff=0.4)
    return f" (nearest valid: {', '.join(near)})" if near else f" (e.g. {next(iter(ARCHS))}_T1)"


def parse_name(name: str) -> ModelSpec:
    """Parse a model name into a spec; a malformed name raises BenchError with suggestions."""
    name = name.strip()
    checkpoint = ""
    if "@" in name:
        name, checkpoint = name.split("@", 1)
        if checkpoint not in CHECKPOINTS:
            raise BenchError(f"malformed model name {name}@{checkpoint!r}: after @ comes best or last")
    arch = max((a for a in ARCHS if name.startswith(a)), key=len, default=None)
    if arch is None:
        raise BenchError(f"unknown model {name!r}: no architecture matches{_suggest(name)}; "
                         f"see --list-models")
    rest = name[len(arch):]
    width = None
    m = re.match(r"w([0-9]+)", rest)
    if m:
        width, rest = int(m.group(1)), rest[m.end():]
    tokens = rest.split("_")
    if tokens[0] != "" or len(tokens) < 2:
        raise BenchError(f"malformed model name {name!r}: expected <arch>[w<width>][_bn]_T<temp>"
                         f"[_<regime>][_lrT][_s<seed>]{_suggest(name)}")
    tokens = tokens[1:]
    bn_head = False
    if tokens and tokens[0] == "bn":
        bn_head, tokens = True, tokens[1:]
    if not tokens or not _TEMP_RE.fullmatch(tokens[0]):
        got = tokens[0] if tokens else "nothing"
        raise BenchError(f"malformed model name {name!r}: expected _T<temperature> (e.g. _T5, _T0.5, _Tauto), "
                         f"got {got!r}{_suggest(name)}")
    temp: Union[float, str] = _TEMP_RE.fullmatch(tokens[0]).group(1)
    if re.match(r"0[0-9]", temp):  # T05: 0.5 in many naming schemes, 5 as a number
        raise BenchError(f"ambiguous temperature in {name!r}: {tokens[0]!r} has a leading zero; write "
                         f"T{float(temp):g} or T0.{temp.lstrip('0').split('.')[0] or '0'} as meant")
    temp = temp if temp == "auto" else float(temp)
    tokens = tokens[1:]
    regime, lr_scale, seed = "std", False, 0
    if tokens and tokens[0] in REGIMES:
        regime, tokens = tokens[0], tokens[1:]
    if tokens and tokens[0] == "lrT":
        lr_scale, tokens = True, tokens[1:]
    if tokens and re.fullmatch(r"s[0-9]+", tokens[0]):
        seed, tokens = int(tokens[0][1:]), tokens[1:]
    if tokens:
        raise BenchError(f"malformed model name {name!r}: unexpected {'_'.join(tokens)!r} "
                         f"(known regimes: {', '.join(sorted(REGIMES))}; then optional _lrT, _s<seed>)")
    try:
        return ModelSpec(arch=arch, temperature=temp, width=width, bn_head=bn_head, regime=regime,
                         lr_scale=lr_scale, seed=seed, checkpoint=checkpoint)
    except BenchError as e:
        raise BenchError(f"bad model name {name!r}: {e}") from None
