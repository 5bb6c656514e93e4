"""What a run measures, chosen by name: ``--attack`` takes adversarial attacks and the names of
the other threats alike, so ``--attack pgd,corruptions,rotate,cifar10.1`` is one list.

  <attack>        an adversarial attack of the registry (attacks/registry.py)
  corruptions     the CIFAR-10-C corruptions (all 19, or those of --corruptions) at --severities
  natural         every natural transform and the rotation/translation worst case
  <transform>     one of them, e.g. rotate, or worst_grid
  cifar10.1       the CIFAR-10.1 v6 test set (downloaded when asked for and missing; named, it
                  stops the run when the download fails, brought in by 'all' it is skipped)
  transfer        PGD crafted on a surrogate (default: the same architecture at T=1)
  eps_sweep       PGD (CE) and PGD (margin) at eps 1/255 .. 128/255 (or the profile's sweep)
  fp64            CE-PGD recomputed in float64 on a few images (is float32 underflow masking?)
  crosscheck      torchattacks' AutoAttack against the authors' pyautoattack on the same images
  suite           every attack of the registry but autoattack_ref, and the four above: the audit
  <family>        a measurement family without settings of its own (bench/measure/families.py)
  all             everything above
  none            nothing more than clean accuracy and calibration, which every run measures

Single corruptions are named with ``--corruptions`` (which also switches corruptions on), not in
``--attack``: brightness and contrast are both a corruption and a natural transform. Without
``--attack`` the profile's [eval] decides. The selection is written into the profile's
EvalSetup, which is what the runner reads.
"""
from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Optional, Sequence

from attacks.corruptions import CORRUPTIONS
from attacks.natural import NATURAL
from attacks.registry import ATTACKS
from bench.errors import BenchError
from bench.measure import families
from bench.profiles import EvalSetup

NATURAL_ALL = (*NATURAL, "worst_grid")
SHIFT_SETS = ("cifar10.1",)
AUDIT = ("transfer", "eps_sweep", "fp64", "crosscheck")
GROUPS = ("corruptions", "natural", "suite", "all", "none")
DEFAULT_SWEEP = tuple(f"{k}/255" for k in (1, 2, 4, 8, 16, 32, 64, 128))
DEFAULT_FP64_N = 100
DEFAULT_CROSSCHECK_N = 100


def suite_attacks() -> list:
    """The registry's attacks but the reference AutoAttack, which the crosscheck runs."""
    return [a for a in ATTACKS if a != "autoattack_ref"]


def known_threats() -> list:
    return [*ATTACKS, *GROUPS, *AUDIT, *NATURAL_ALL, *SHIFT_SETS, *families.by_name()]


def parse_severities(text: str) -> tuple:
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise BenchError(f"--severities takes whole numbers in 1..5 like 3,5, got {text!r}") from None
    if not values:
        raise BenchError("--severities is empty: give e.g. 3,5")
    return values


def select(ev: EvalSetup, tokens: Optional[Sequence[str]], corruptions: Optional[Sequence[str]] = None,
           severities: Optional[Sequence[int]] = None) -> EvalSetup:
    """The profile's evaluation with the threats named on the command line. ``tokens`` None keeps
    the profile's threats; ``corruptions``/``severities`` narrow (or switch on) the corruptions."""
    overrides = {}
    if corruptions is not None:
        overrides["corruption_names"] = tuple(corruptions)
    if severities is not None:
        overrides["severities"] = tuple(severities)
    if tokens is None:
        if overrides and ev.corruptions == "none":
            overrides["corruptions"] = "auto"
        return replace(ev, **overrides)  # __post_init__ checks the names and severities

    attacks, natural, shifts, audit, measure = [], [], [], set(), []
    want_corruptions = corruptions is not None or severities is not None
    if "none" in tokens and len(set(tokens)) > 1:
        raise BenchError(f"--attack none measures nothing beyond clean accuracy and calibration: "
                         f"leave it out to run {', '.join(t for t in tokens if t != 'none')}")
    for t in tokens:
        if t in ("suite", "all"):
            attacks += suite_attacks()
            audit.update(AUDIT)
        if t == "all":
            natural += list(NATURAL_ALL)
            shifts += list(SHIFT_SETS)
            measure += list(families.by_name())
            want_corruptions = True
        elif t in ("suite", "none"):
            pass
        elif t in AUDIT:
            audit.add(t)
        elif t in ATTACKS:
            attacks.append(t)
        elif t == "corruptions":
            want_corruptions = True
        elif t == "natural":
            natural += list(NATURAL_ALL)
        elif t in NATURAL_ALL:
            natural.append(t)
        elif t in SHIFT_SETS:
            shifts.append(t)
        elif t in families.by_name():
            measure.append(t)
        else:
            near = difflib.get_close_matches(t, known_threats(), n=2, cutoff=0.5)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            if t in CORRUPTIONS:
                hint = f" (a corruption: --attack corruptions --corruptions {t})"
            raise BenchError(f"unknown attack {t!r}{hint}; attacks: {', '.join(ATTACKS)}; audit: "
                             f"{', '.join(AUDIT)}, suite; shifts: corruptions, natural or a transform "
                             f"({', '.join(NATURAL_ALL)}), {', '.join(SHIFT_SETS)}; see --list-attacks")
    mode = (ev.corruptions if ev.corruptions != "none" else "auto") if want_corruptions else "none"
    # the audit's parts keep the profile's settings when it has them, else the defaults
    overrides.update(
        transfer="transfer" in audit,
        eps_sweep=(ev.eps_sweep or DEFAULT_SWEEP) if "eps_sweep" in audit else (),
        fp64_n=(ev.fp64_n or DEFAULT_FP64_N) if "fp64" in audit else 0,
        crosscheck_n=(ev.crosscheck_n or DEFAULT_CROSSCHECK_N) if "crosscheck" in audit else 0)
    return replace(ev, attacks=tuple(dict.fromkeys(attacks)), natural=tuple(dict.fromkeys(natural)),
                   shifts=tuple(dict.fromkeys(shifts)), measure=tuple(dict.fromkeys(measure)), corruptions=mode,
                   **overrides)
