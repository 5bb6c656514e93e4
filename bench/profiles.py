"""Profiles: a training recipe, an evaluation setup and a grid of models, read from TOML.

A profile is data, not code: ``bench/profiles/<name>.toml`` or any TOML file path. Unknown keys
are errors, so a typo cannot silently fall back to a default.
"""
from __future__ import annotations

import difflib
import itertools
import math
import os
import re
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from attacks.corruptions import CORRUPTIONS
from attacks.natural import check_natural
from attacks.registry import ATTACKS, AttackConfig, check_attack_name, check_overrides, make_attack, parse_eps
from attacks.views import VIEWS
from bench.measure import families
from bench.errors import BenchError
from models import ModelSpec, parse_name
from models.registry import CHECKPOINTS, MAX_SEED, TAUTO_ALPHA, TAUTO_BETA, TAUTO_MIN, TautoFormula

PROFILE_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. Every field enters the checkpoint key."""
    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True
    schedule: str = "onecycle"  # "onecycle" (linear up, linear down) or "cosine" (linear warm-up)
    warmup: float = 0.2  # fraction of steps spent warming up
    label_smoothing: float = 0.0
    train_subset: Optional[int] = None  # a seeded class-stratified subset; None: the whole split
    subset_seed: int = 0
    # Adversarial training (regimes at, atT1, trades, fat): the inner attack (Madry et al.: Linf
    # 8/255, 10 steps of 2/255, random start), TRADES' beta, the fast-AT FGSM step in units of
    # eps (Wong et al.: 1.25), and the check after each epoch that picks the best checkpoint:
    # margin-loss PGD (immune to the softmax saturation of high T) on at_holdout training images
    # that are not trained on.
    at_eps: Any = "8/255"
    at_alpha: Any = "2/255"
    at_steps: int = 10
    trades_beta: float = 6.0
    fat_step: float = 1.25
    at_holdout: int = 1000
    at_eval_steps: int = 10

    def __post_init__(self):
        _check_types(self)
        for key in ("epochs", "batch_size", "at_steps", "at_eval_steps"):
            if getattr(self, key) < 1:
                raise BenchError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.train_subset is not None and self.train_subset < 1:
            raise BenchError(f"train_subset must be >= 1 (leave it out for the whole split), got {self.train_subset}")
        _check_seed("subset_seed", self.subset_seed)
        for key in ("at_eps", "at_alpha"):
            v = parse_eps(getattr(self, key))
            if not 0 < v <= 1:
                raise BenchError(f"{key} must lie in (0, 1] (pixels lie in [0, 1]; e.g. 8/255), "
                                 f"got {getattr(self, key)!r}")
        if self.at_holdout < 10:
            raise BenchError(f"at_holdout must be >= 10, got {self.at_holdout}")
        if not self.trades_beta >= 0 or not self.fat_step > 0:
            raise BenchError("trades_beta must be >= 0 and fat_step > 0")
        if not self.lr > 0:
            raise BenchError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1 or not self.weight_decay >= 0:
            raise BenchError("momentum must lie in [0, 1) and weight_decay be >= 0")
        if self.nesterov and self.momentum == 0:  # torch's SGD refuses it, after the grid has started
            raise BenchError("nesterov = true needs momentum > 0: set nesterov = false for plain SGD")
        if self.schedule not in ("onecycle", "cosine"):
            raise BenchError(f"schedule must be onecycle or cosine, got {self.schedule!r}")
        if not 0 <= self.warmup < 1 or not 0 <= self.label_smoothing < 1:
            raise BenchError("warmup and label_smoothing must lie in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    def key_dict(self, adversarial: bool) -> dict:
        """What identifies the training: the adversarial settings only for adversarial runs,
        so that changing them does not invalidate standard checkpoints. A float field written as a
        whole number (lr = 1, label_smoothing = 0) is the same recipe as its float spelling, and one key."""
        floats = {f.name for f in fields(self) if f.type == "float"}
        d = {k: float(v) if k in floats and not isinstance(v, bool) else v for k, v in self.to_dict().items()}
        return d if adversarial else {k: v for k, v in d.items() if not k.startswith(AT_PREFIXES)}


AT_PREFIXES = ("at_", "trades_", "fat_")

# What a profile value of each field type must be, as a user reads it
_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
          "Optional[int]": "a whole number", "Tuple[str, ...]": 'a list of strings, e.g. ["a", "b"]',
          "Tuple[int, ...]": "a list of whole numbers, e.g. [3, 5]", "Tuple[Any, ...]": "a list",
          "Dict[str, int]": "a table of whole numbers, e.g. {square = 500}"}


def _is_kind(kind: str, v) -> bool:
    if kind == "Any":
        return True
    if kind.startswith("Optional["):
        return v is None or _is_kind(kind[len("Optional["):-1], v)
    if kind.startswith("Tuple["):
        return isinstance(v, (tuple, list)) and all(_is_kind(kind[len("Tuple["):-len(", ...]")], x) for x in v)
    if kind == "Dict[str, int]":
        return isinstance(v, dict) and all(isinstance(k, str) and _is_kind("int", x) for k, x in v.items())
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "str":
        return isinstance(v, str)
    raise AssertionError(kind)


def _check_types(obj):
    """Each field against its annotation: a TOML value of the wrong type (epochs = 1.5,
    views = "raw") stops here, named, instead of failing somewhere mid-run."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        if not _is_kind(f.type, v):
            raise BenchError(f"{f.name} must be {_KINDS[f.type]}, got {v!r}")


def _check_seed(key: str, v: int):
    if not 0 <= v <= MAX_SEED:
        raise BenchError(f"{key} must lie in 0..{MAX_SEED}, got {v}")


# The fewest images an evaluation can have: calibration's post-hoc T is fitted on one half of them
# and scored on the other
MIN_EVAL_N = 2


@dataclass(frozen=True)
class EvalSetup:
    split: str = "test"
    n: Optional[int] = None  # a seeded class-stratified subset; None: the whole split
    subset_seed: int = 0
    batch_size: int = 500
    attack_seed: int = 0  # seeds the attacks' random starts, batch by batch
    attacks: Tuple[str, ...] = ("fgsm", "pgd")
    views: Tuple[str, ...] = ("raw", "scaled")
    # Common corruptions: "auto" (the real CIFAR-10-C when found and the data is cifar10, else
    # generated), "generated", "real" or "none"; which ones (default all 19) and severities.
    corruptions: str = "none"
    corruption_names: Tuple[str, ...] = ()
    severities: Tuple[int, ...] = (1, 2, 3, 4, 5)
    shift_n: Optional[int] = None  # subset for corruptions and natural transforms; None: n
    natural: Tuple[str, ...] = ()  # natural transforms, "worst_grid" included
    shifts: Tuple[str, ...] = ()  # shifted test sets: "cifar10.1" (measured when found)
    # The masking audit. An eps sweep of sweep_attacks (alpha scaled with eps); a transfer attack
    # (the pgd config crafted on a surrogate: `surrogate`, by default the same architecture at
    # T=1); CE-PGD recomputed in float64 on fp64_n images; torchattacks' AutoAttack against the
    # authors' pyautoattack on crosscheck_n images (0: off).
    eps_sweep: Tuple[Any, ...] = ()
    sweep_attacks: Tuple[str, ...] = ("pgd", "pgd_margin")
    sweep_views: Tuple[str, ...] = ()  # () = the views of the attacks
    transfer: bool = False
    surrogate: str = ""
    fp64_n: int = 0
    crosscheck_n: int = 0
    # the grid models the cross-check runs on (empty: every model); models from outside the grid
    # (--model file:, a zoo name, bench.audit) always get it
    crosscheck_models: Tuple[str, ...] = ()
    # attacks run on fewer images than n: {attack: images}, a stratified subset of the evaluation
    # subset (a black box whose queries dominate the suite's cost, e.g. square = 500); its
    # records carry their n and which images they were
    attack_n: Dict[str, int] = field(default_factory=dict)
    # further measurement families, by name: those of bench/measure/families.py that have no
    # setting of their own above
    measure: Tuple[str, ...] = ()

    def __post_init__(self):
        _check_types(self)
        if self.split not in ("train", "test"):
            raise BenchError(f"split must be train or test, got {self.split!r}")
        # n and shift_n: left out means the whole split, as without --n-test; 0 is not a size
        for key, least in (("n", MIN_EVAL_N), ("shift_n", 1)):
            if getattr(self, key) is not None and getattr(self, key) < least:
                raise BenchError(f"{key} must be >= {least} (leave it out for the whole split), got "
                                 f"{getattr(self, key)}")
        if self.batch_size < 1:
            raise BenchError(f"batch_size must be >= 1, got {self.batch_size}")
        _check_seed("subset_seed", self.subset_seed)
        _check_seed("attack_seed", self.attack_seed)
        if self.corruptions not in ("auto", "generated", "real", "none"):
            raise BenchError(f"[eval] corruptions must be auto, generated, real or none, got {self.corruptions!r}")
        # an empty list where its feature is on measured nothing of it, without a word (as --view , would)
        if not self.views and (self.attacks or (self.eps_sweep and not self.sweep_views)):
            raise BenchError("[eval] views = [] leaves the attacks no view to run on: name one or more of "
                             f"{', '.join(VIEWS)}, or leave views out for the default")
        if not self.severities and self.corruptions != "none":
            raise BenchError("[eval] severities = [] measures no corruption: give severities in 1..5, e.g. [3, 5] "
                             "(or --severities 3,5), or leave severities out for all five")
        if not self.sweep_attacks and self.eps_sweep:
            raise BenchError("[eval] sweep_attacks = [] leaves the eps sweep no attack to sweep: name one, e.g. "
                             "[\"pgd\"], or leave sweep_attacks out for the default")
        bad = [s for s in self.severities if s not in (1, 2, 3, 4, 5)]
        if bad:
            raise BenchError(f"severities must lie in 1..5, got {bad} (--severities or [eval] severities)")
        unknown = set(self.shifts) - {"cifar10.1"}
        if unknown:
            raise BenchError(f"[eval] unknown shift {', '.join(sorted(unknown))}; known: cifar10.1")
        for name in self.corruption_names:
            if name not in CORRUPTIONS:
                near = difflib.get_close_matches(name, CORRUPTIONS, n=1, cutoff=0.5)
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise BenchError(f"unknown corruption {name!r}{hint}; known: {', '.join(CORRUPTIONS)}")
        check_natural(self.natural)
        for e in self.eps_sweep:
            if not 0 < parse_eps(e) <= 1:
                raise BenchError(f"eps sweep values must lie in (0, 1] (pixels lie in [0, 1]; e.g. 8/255), "
                                 f"got {e!r}")
        for a in self.sweep_attacks:
            check_attack_name(a, "[eval] sweep_attacks: ")
            if "eps" not in ATTACKS[a].params:
                raise BenchError(f"[eval] sweep_attacks: {a!r} has no eps to sweep")
            if ATTACKS[a].norm != "linf":  # one radius list for all: 8/255 as an L2 radius is 16x under 0.5
                raise BenchError(f"[eval] sweep_attacks: {a!r} is an {ATTACKS[a].norm.upper()} attack; the eps sweep's "
                                 f"radii are Linf ones (measure an L2 attack at its radius with --eps)")
        bad_views = set(self.sweep_views) - set(VIEWS)
        if bad_views:
            raise BenchError(f"[eval] sweep_views: unknown view {', '.join(sorted(bad_views))}; "
                             f"known: {', '.join(VIEWS)}")
        for a, k in self.attack_n.items():
            check_attack_name(a, "[eval] attack_n: ")
            if k < 1:
                raise BenchError(f"[eval] attack_n: {a} = {k}: an image count must be >= 1")
        if self.fp64_n < 0 or self.crosscheck_n < 0:

            raise BenchError("[eval] fp64_n and crosscheck_n must be >= 0 (0: off)")
        if self.surrogate:
            parse_name(self.surrogate)
        unknown = set(self.measure) - set(families.by_name())
        if unknown:
            raise BenchError(f"[eval] measure: unknown measurement family {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(families.by_name()) or 'none'}")

    @property
    def sweep_eps(self) -> Tuple[float, ...]:
        return tuple(sorted({parse_eps(e) for e in self.eps_sweep}))


@dataclass(frozen=True)
class TautoSetup:
    """[tauto]: the coefficients of _Tauto (TautoFormula; published alpha, beta by default) and
    the dataset's CSG for the gamma correction: a number, or "auto" (bench.csg on the training
    split, with csg_embedding)."""
    alpha: float = TAUTO_ALPHA
    beta: float = TAUTO_BETA
    gamma: float = 0.0
    delta: float = 0.0
    floor: float = TAUTO_MIN
    csg: Any = None
    csg_embedding: str = "pca32"

    def __post_init__(self):
        _check_types(self)
        if self.csg is not None and self.csg != "auto" and not (isinstance(self.csg, (int, float)) and self.csg > 0):
            raise BenchError(f"[tauto] csg must be a positive number or \"auto\", got {self.csg!r}")
        if self.gamma and self.csg is None:
            raise BenchError("[tauto] gamma needs the dataset's csg (a number, or \"auto\" to compute it)")
        if not self.floor > 0:
            raise BenchError(f"[tauto] floor must be positive, got {self.floor}")

    @property
    def formula(self) -> TautoFormula:
        return TautoFormula(self.alpha, self.beta, self.gamma, self.delta, self.floor)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    recipe: Recipe
    eval: EvalSetup
    attack_params: Dict[str, Dict[str, Any]]
    models: Tuple[str, ...]  # canonical names, in grid order
    source: str = ""
    # per training run (canonical name without @): [[grid]] recipe overrides, e.g. fewer epochs
    # for an adversarial-training arm
    recipe_overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    tauto: TautoSetup = field(default_factory=TautoSetup)
    # checkpoints in <results>/checkpoints instead of the cache: a profile whose weights are
    # committed beside its store (re-evaluated, audited or resumed elsewhere)
    keep_checkpoints: bool = False
    # per model (canonical name): the measurements a [[grid]] entry's `measure` narrowed it to
    measure: Dict[str, Tuple[str, ...]] = field(default_factory=dict)

    def recipe_for(self, spec: ModelSpec) -> Recipe:
        over = self.recipe_overrides.get(spec.run.name)
        return replace(self.recipe, **over) if over else self.recipe

    def measures(self, spec: ModelSpec, part: str) -> bool:
        """Whether ``spec`` gets measurement ``part`` (a MEASURE_PARTS name) as far as its grid
        entry says; the profile's [eval] and the CLI still decide whether the part runs at all."""
        parts = self.measure.get(spec.name)
        return parts is None or part in parts or (part == "clean" and "attacks" in parts)

    def attack(self, name: str, cli_overrides: Optional[Dict[str, Any]] = None) -> AttackConfig:
        merged = dict(self.attack_params.get(name, {}))
        merged.update({k: v for k, v in (cli_overrides or {}).items() if v is not None})
        return make_attack(name, merged)


def _strict(cls, table, where: str):
    if not isinstance(table, dict):
        raise BenchError(f"{where} must be a table (key = value lines under a [section] header), got {table!r}")
    known = {f.name for f in fields(cls)}
    unknown = set(table) - known
    if unknown:
        raise BenchError(f"{where}: unknown key {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})
    except (TypeError, BenchError) as e:
        raise BenchError(f"{where}: {e}") from None


GRID_KEYS = {"arch", "T", "bn_head", "lr_scale", "regime", "seeds", "models", "recipe", "checkpoints", "measure"}
# What a [[grid]] entry's `measure` may name: the measurement families (bench/measure/families.py
# names them the same), and "clean" for the clean accuracy alone (the attack suite without its
# attacks). Left out, a model gets everything the profile's [eval] asks for.
MEASURE_PARTS = ("clean", "attacks", "eps sweep", "transfer", "fp64 check", "autoattack crosscheck", "calibration",
                 "corruptions", "natural", "cifar10.1")
# [[grid]] keys that take one value or a list of them: what each value must be
GRID_VALUES = {
    "arch": (lambda v: isinstance(v, str), 'an architecture name, e.g. "fastnet"'),
    "T": (lambda v: v == "auto" or _is_kind("float", v), 'a positive number or "auto"'),
    "bn_head": (lambda v: isinstance(v, bool), "true or false"),
    "lr_scale": (lambda v: isinstance(v, bool), "true or false"),
    "regime": (lambda v: isinstance(v, str), 'a regime name, e.g. "at"'),
    "seeds": (lambda v: _is_kind("int", v), "a whole number"),
    "checkpoints": (lambda v: v in CHECKPOINTS, " or ".join(f'"{c}"' for c in CHECKPOINTS)),
    "measure": (lambda v: v in MEASURE_PARTS, "one of " + ", ".join(f'"{c}"' for c in MEASURE_PARTS)),
}


def _check_grid_entry(entry, where: str):
    if not isinstance(entry, dict):
        raise BenchError(f"{where} must be a table ([[grid]] followed by key = value lines), got {entry!r}")
    unknown = set(entry) - GRID_KEYS
    if unknown:
        raise BenchError(f"{where} has unknown key {', '.join(sorted(unknown))}; known: {', '.join(sorted(GRID_KEYS))}")
    for key, (ok, what) in GRID_VALUES.items():
        if key in entry:
            values = entry[key] if isinstance(entry[key], list) else [entry[key]]
            bad = [v for v in values if not ok(v)]
            if bad or not values:
                raise BenchError(f"{where}: {key} must be {what} or a list of them, got {entry[key]!r}")
    if not _is_kind("Tuple[str, ...]", entry.get("models", [])):
        raise BenchError(f"{where}: models must be a list of model names, got {entry['models']!r}")
    loaded = [n for n in entry.get("models", []) if n.startswith(("file:", "robustbench:"))]
    if loaded:  # a grid is trained from its names: loaded networks are named on the command line
        raise BenchError(f"{where}: models lists {loaded[0]!r}, which a profile's grid cannot hold (it trains the "
                         f"registry's models): give it on the command line, --model {loaded[0]}"
                         f"{' --arch ARCH' if loaded[0].startswith('file:') else ''}, with the profile")
    if not isinstance(entry.get("recipe", {}), dict):
        raise BenchError(f"{where}: recipe must be a table, e.g. recipe = {{epochs = 2}}, got {entry['recipe']!r}")


def expand_grid(entries: List[dict], base: Recipe) -> Tuple[Tuple[str, ...], Dict[str, dict], Dict[str, tuple]]:
    """Each [[grid]] entry is a product of its lists (or an explicit list of model names), with
    optional recipe overrides for its models. An adversarial run stands for its @best and @last
    checkpoints, both evaluated unless the entry's `checkpoints` names one. Returns the model names,
    the recipe overrides per run and the measurements per model where an entry's `measure`
    narrows them."""
    names: Dict[str, None] = {}
    overrides: Dict[str, dict] = {}
    measure: Dict[str, tuple] = {}
    # per run and per model, the entry that first named it and what it gave: a run is one
    # training, so two entries that give it two recipes (or one and none) cannot both hold, and a
    # model's measurements likewise; which entry won was the order of the file, without a word
    given: Dict[Tuple[str, str], Tuple[int, object]] = {}

    def one(kind: str, name: str, value, i: int, what: str):
        first = given.setdefault((kind, name), (i, value))
        if first[1] != value:
            raise BenchError(f"[[grid]] entries {first[0] + 1} and {i + 1} both name {name}, with {what} "
                             f"{first[1] or 'none'} and {value or 'none'}: a {kind} is one {what}; "
                             f"give it in one entry")

    def add(spec: ModelSpec, over: dict, i: int, keep=CHECKPOINTS, parts=None):
        one("run", spec.run.name, over, i, "recipe")
        for s in spec.checkpoints():
            if not s.checkpoint or s.checkpoint in keep:
                names[s.name] = None
                one("model", s.name, parts, i, "measure")
                if parts is not None:
                    measure[s.name] = parts
        if over:
            overrides[spec.run.name] = over

    if not isinstance(entries, list):
        raise BenchError(f"grid must be [[grid]] tables, got grid = {entries!r}")
    for i, entry in enumerate(entries):
        _check_grid_entry(entry, f"[[grid]] entry {i + 1}")
        over = dict(entry.get("recipe", {}))
        if over:
            _strict(Recipe, {**base.to_dict(), **over}, f"[[grid]] entry {i + 1} recipe")
        parts = None if "measure" not in entry else tuple(
            entry["measure"] if isinstance(entry["measure"], list) else [entry["measure"]])
        as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
        keep = as_list(entry.get("checkpoints", list(CHECKPOINTS)))
        listed = [parse_name(n) for n in entry.get("models", [])]
        for spec in listed:
            add(spec, over, i, keep, parts)
        trained = "arch" in entry and any(r != "std" for r in as_list(entry.get("regime", "std")))
        if "checkpoints" in entry and not trained and not any(s.adversarial for s in listed):
            raise BenchError(f"[[grid]] entry {i + 1}: checkpoints = {entry['checkpoints']!r} picks @best or @last of "
                             f"adversarially trained models, and this entry has none (regime = \"at\", \"fat\", ...)")
        if "arch" not in entry:
            continue
        for arch, t, bn, lrs, regime, seed in itertools.product(
                as_list(entry["arch"]), as_list(entry.get("T", [1])), as_list(entry.get("bn_head", False)),
                as_list(entry.get("lr_scale", False)), as_list(entry.get("regime", "std")),
                as_list(entry.get("seeds", 0))):
            # parse the arch token as a name so that width variants (fastnetw32) work in grids
            arch_spec = parse_name(f"{arch}_T1")
            try:
                spec = ModelSpec(arch=arch_spec.arch, width=arch_spec.width, temperature=t, bn_head=bn,
                                 regime=regime, lr_scale=lrs, seed=seed)
            except BenchError as e:
                raise BenchError(f"[[grid]] entry {i + 1}: {e}") from None
            add(spec, over, i, keep, parts)
    return tuple(names), overrides, measure


# not a '.' first: "." and ".." name results/ itself and the working folder, not a folder of their own
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_radius(config: AttackConfig):
    """A Linf radius or step above 1 spans the whole pixel range [0, 1]: a unit mistake (2 for
    2/255), not a threat model."""
    if config.info.norm == "linf":
        for key in ("eps", "alpha"):
            v = config.kwargs.get(key)
            if v is not None and v > 1:
                raise BenchError(f"{config.name}: {key} = {v:g} is more than 1, the whole pixel range "
                                 f"[0, 1]: write it in pixel units, e.g. 8/255")


def resolve_profile_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    shipped = PROFILE_DIR / f"{name_or_path}.toml"
    # a bare name is the shipped profile's, whatever the working folder holds under that name
    if "/" not in name_or_path and os.sep not in name_or_path and path.suffix != ".toml" and shipped.is_file():
        return shipped
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise BenchError(f"profile {path} is a folder: give a profile name ({', '.join(available_profiles())}) "
                             f"or a .toml file")
        if not path.is_file():
            raise BenchError(f"profile file {path} not found")
        return path
    if not shipped.is_file():
        known = ", ".join(available_profiles())
        raise BenchError(f"unknown profile {name_or_path!r}; known: {known} (or give a .toml path)")
    return shipped


def available_profiles() -> List[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    path = resolve_profile_path(name_or_path)
    where = f"profile {path}"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (an editor's) read as "Invalid statement"
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"{where} is not valid TOML: {e}") from None
    unknown = set(doc) - {"name", "description", "keep_checkpoints", "recipe", "eval", "attack", "grid", "tauto"}
    if unknown:
        raise BenchError(f"{where}: unknown section or key {', '.join(sorted(unknown))}")
    if "recipe" not in doc:
        raise BenchError(f"{where}: missing [recipe]")
    for key in ("name", "description"):
        if not isinstance(doc.get(key, ""), str):
            raise BenchError(f"{where}: {key} must be a string, got {doc[key]!r}")
    if not isinstance(doc.get("keep_checkpoints", False), bool):
        raise BenchError(f"{where}: keep_checkpoints must be true or false, got {doc['keep_checkpoints']!r}")
    if "name" in doc and not _NAME_RE.fullmatch(doc["name"]):
        raise BenchError(f"{where}: name must be letters, digits, '.', '_' or '-', not starting with '.' (it names "
                         f"the results folder), got {doc['name']!r}")
    if "name" not in doc and path.stem.startswith("."):  # the stem names the results folder then
        raise BenchError(f"{where}: a profile without name = \"...\" is named by its file, and {path.name!r} starts "
                         f"with '.': rename the file, or give the profile a name")
    recipe = _strict(Recipe, doc["recipe"], f"{where} [recipe]")
    ev = _strict(EvalSetup, doc.get("eval", {}), f"{where} [eval]")
    for a in ev.attacks:
        check_attack_name(a, f"{where} [eval]: ")
    for v in ev.views:
        if v not in VIEWS:
            raise BenchError(f"{where} [eval]: unknown view {v!r}; known: {', '.join(VIEWS)}")
    attack_params = doc.get("attack", {})
    if not isinstance(attack_params, dict):
        raise BenchError(f"{where}: attack must be [attack.<name>] tables, got attack = {attack_params!r}")
    for a, table in attack_params.items():
        check_attack_name(a, f"{where}: [attack.{a}]: ")
        if not isinstance(table, dict):
            raise BenchError(f"{where}: [attack.{a}] must be a table of parameters, got {table!r}")
        try:
            check_overrides(a, table)
            check_radius(make_attack(a, table))  # validates the values now, not mid-run
        except BenchError as e:
            raise BenchError(f"{where} [attack.{a}]: {e}") from None
    try:
        models, overrides, measure = expand_grid(doc.get("grid", []), recipe)
    except BenchError as e:
        raise BenchError(f"{where}: {e}") from None
    stray = [m for m in ev.crosscheck_models if m not in models]
    if stray:
        raise BenchError(f"{where} [eval] crosscheck_models: {', '.join(stray)} not in the grid; its models: "
                         f"{', '.join(models) or 'none'}")
    tauto = _strict(TautoSetup, doc.get("tauto", {}), f"{where} [tauto]")
    return Profile(doc.get("name", path.stem), doc.get("description", ""), recipe, ev, attack_params, models,
                   str(path), overrides, tauto, doc.get("keep_checkpoints", False), measure)
