"""Claim-by-claim verdicts, computed from the results store (never written by hand).

Each claim of science.md is tested by one or more *comparisons*: within a model family
(architecture, head, regime, checkpoint, loss-x-T arm; seeds averaged), the T=1 model against
the best model at another temperature, on one metric. A loss-x-T family has no T=1 model of its
own; its baseline is the fixed-lr T=1 model of the same architecture (at T=1 the two losses are
the same loss).

  A1  moderate T improves clean accuracy       clean, T in (1, moderate_T_max]
  A2  elevated T improves corruption robustness mCA (mCE and the relative drop shown), T > 1
  A3  elevated T improves natural-shift robustness  cifar10.1, the mean of the nat_<transform>
                                                columns, nat_worst_grid; T > 1
  A4  elevated T improves PGD robustness        robust_min (the minimum over every Linf attack and
                                                view at 8/255) and PGD on the raw logits; T > 1
  A5  higher T helps adversarial training       as A4, in the families of regimes at/atT1/trades/fat
  A6  targeted attacks still succeed at high T  target-hit rate of the strongest single-target attack
                                                on the raw logits, at every T >= high_T_min, against T=1
  B   T* = 0.7239 sqrt(M) - 4.706 with a BN     clean accuracy of <arch>_bn_Tauto against the BN-head
      head is the best temperature              T=1 model, the plain T=1 model, and the best other
                                                T of the BN-head family

Uncertainty. Where both models carry per-image bits on the same images (clean accuracy and every
attack; the store's subsets are seeded by the profile, so models of one run share their images),
the standard error of the difference is the paired one, sd(b_cand - b_base) / sqrt(n) over the
images: what a paired bootstrap estimates, without its randomness. Otherwise (corruptions,
natural transforms, shifted test sets) it is the unpaired binomial one,
sqrt(p1 q1 / n1 + p2 q2 / n2), with p = (k+1)/(n+2) so that 0% and 100% do not give a zero error.
The binomial error ignores the pairing and, for a mean over many corrupted copies of the same
images, uses the number of images: both make it conservative. Seeds are evaluated on the same
images, so more seeds do not make more images: n is one seed's images (the number the tables
print), each image's result is averaged over a side's seeds before the paired difference is
taken (the seeds' per-image results correlate; sides with different numbers of seeds pair their
seed means too), and a binomial side is taken at its seed-averaged accuracy over n images, not
n x seeds (an image's mean over seeds lies in [0, 1], and a [0, 1] variable of mean p varies at
most p(1-p): the bound holds; dividing by sqrt(seeds) as if each seed saw other images did not).
The spread of the per-seed differences is added (sqrt(se_images^2 + se_seeds^2), which counts
their interaction twice). A standard error is never below one image (1/n). A side with one seed
(T=2 against three seeds of T=1) takes the seed-to-seed variance pooled over the family's
temperatures that have seeds, rather than none. With one seed a side and no seeds anywhere in
the family, no seed spread can be estimated: the difference is one training run's, so its
verdict is at most inconclusive (its effect and interval are still shown, and what the numbers
alone would say is in its note and the claim's reason). Per-seed values are counts of images, so
seeds that agree exactly agree to an image: a seed variance is never taken below that of two
values one image apart, 1/(2 n^2) (an estimated zero spread gave a normal interval to two seeds).
A spread from k seeds is itself a noisy estimate (k - 1 degrees of freedom: two seeds give one).
The critical value is Banerjee's (1961): the interval's half-width is sqrt((z se_images)^2 +
sum_i (t_i se_seeds_i)^2), each seed part held to Student's t at its own degrees of freedom
(k - 1 for seeds matched in order, each side's for unmatched ones, the pool's for a pooled
spread) and the images' part, whose variance is as good as known, to the normal. It is
conservative at any ratio of the two parts, where the Welch-Satterthwaite df used before, itself
estimated from the seeds, was not: simulated (the seeds' sd of the mean 0.25-10x the images'),
Welch-Satterthwaite covered 87-95% (2 seeds) and 92-95% (3 seeds) of its 95% intervals and down
to 92% and 97% of Bonferroni 99% ones; this rule covers 95-99% and 99-99.9% at 2 and 3 seeds.
The price is width where the two parts are alike: up to 2.7x Welch-Satterthwaite's at 2 seeds
(8x at 99%), 1.0-1.4x at 3 seeds (up to 2x at 99%); none where the seeds agree or dominate.
Comparison.df is the t's degrees of freedom whose quantile is that critical value at the
comparison's level (a way to print it; infinite without a seed part).

Verdicts, from a fixed vocabulary (VERDICTS). For one "improves" comparison, with
d = candidate - baseline and z the critical value:

  supported       d - z*se > 0 and d >= min_effect
  not supported   d + z*se < min_effect (an improvement of min_effect or more is ruled out)
  inconclusive    otherwise (the difference is within the noise)

"The best of k temperatures" is the largest of k noisy differences, so z is Bonferroni-corrected:
z = Phi^-1(1 - alpha / (2k)) (1.96 for k = 1, 2.58 for k = 5; with seeds, Banerjee's at that
level). "Not supported" says no temperature gains min_effect: the best one's bound alone would not
say it (another temperature, lower in mean but noisier, can still hold a gain), so it needs every
candidate's upper bound below min_effect at that z; otherwise inconclusive. A4/A5 run the test
twice, on robust_min and on CE-PGD against the raw logits (the attack the claim reports, the one
gradient masking fools): robust_min decides; when only PGD-raw supports the claim, the verdict is
"supported only under a weak attack". A robust_min on a model the masking audit calls "likely"
masked does not count as support (inconclusive, or the weak-attack verdict when PGD-raw supports
it). Resting on one training run, the weak-attack verdict is capped at inconclusive as the others
are, its story kept in the note and the reason. A6 is an equivalence test: targeted success (the
target class reached) at a high T counts as "still succeeds" when its drop from T=1 is below
targeted_margin. The claim is about every T >= high_T_min, an intersection-union test: each
temperature must pass, and with all of them required no correction for their number is owed (drop
+ z*se < margin at k = 1, z = 1.96: one-sided at alpha/2, conservative: supported). Its failure
needs only one temperature, so that side is the union and is Bonferroni-corrected over the claim's
temperatures (drop - z_K*se > margin: not supported; K temperatures of all families). One clear
failure makes the claim not supported, naming the temperature; all passing, supported; else
inconclusive, naming the temperatures left open. The hits are pooled over the seeds, their error
binomial over one seed's points with the seed spread added as above. B is supported when T* beats
both T=1 models (a family without a plain T=1 model is at most inconclusive) and every other
BN-head temperature's gain over T* of min_effect is ruled out (one within the noise of T* leaves
it inconclusive: "the best" is not shown); not supported when another temperature beats T*, or
when T* is ruled out to beat a T=1 model: three chances to fail, so, as A6's failure side, each is
Bonferroni-corrected over the family's ways to fail. Where T* is within a factor tstar_near_1 of 1
(M = 64: T* = 1.085), T=1 is T* to the resolution of the sweep and the claim predicts no gain over
it: the T=1 comparisons are shown, not voting, and the family stands on the other temperatures
against T* (supported when a gain of min_effect is ruled out at every one, not supported when one
is found). A claim's verdict combines its comparisons: "not measured" entries are left out; if
they all agree, that verdict; supported mixed with "supported only under a weak attack" gives the
latter; any other mix is "inconclusive" (the families disagree); A6 combines its temperatures as
above.

Beside the best temperature, A1-A3 show each family's worst one against T=1 (the cost side,
Bonferroni over the whole sweep, not voting: the claims ask about gains); and a fixed-lr family
is compared directly with its loss x T twin at the highest temperature both have, where the two
arms' steps on the logits differ most (1/T of T=1's against T=1's): the claim's reason says
whether the 1/T step costs accuracy there.
A2's mCA is a mean over (corruption, severity) cells: it is compared only between models with
the same cells, source and images (a temperature measured otherwise is named and left out, as
the fixed-lr/loss x T comparison is), and the mCE and relative drop beside it are each side's means
over the seeds its mCA averages. A3's nat_mean, a mean over the natural transforms' magnitude
sweeps, is held to the same rule: compared only between models measured on the same transforms at
the same magnitudes (a mean over rotations alone against one over seven transforms is the
transforms' difference); a temperature measured otherwise is named and left out. So are
robust_min (compared only between models attacked with the same attacks and views: a minimum
over fewer is an upper bound the others might lower; a transfer attack's surrogate counts as
having run it, the attack crafted on it being its own white-box PGD) and nat_worst_grid (only
over the same rotation/translation grid). A temperature one of whose seeds lacks the number is
named and left out (the mean of the seeds that have it is another sample's), as is a family
whose T=1 model lacks it. Per-image results pair only where every model's are on the same test
images (the same subset_seed), not merely as many of them; otherwise the error is binomial.
All thresholds are in THRESHOLDS. Accuracies are fractions in [0, 1]; pp = percentage points.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from attacks import ATTACKS
from attacks.corruptions import BENCHMARK
from bench.atomic import user_path
from bench.command import Parser, finish
from bench.report.columns import HEADLINE_EPS, ModelFamily, is_tauto, latest_runs, threat_norm
from bench.report.tables import leaderboard
from bench.report.worst_case import worst_case_bits
from bench.store import ResultStore, unpack_bits

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
WEAK_ONLY = "supported only under a weak attack"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, WEAK_ONLY, INCONCLUSIVE, NOT_MEASURED)

THRESHOLDS: Dict[str, float] = {
    "alpha": 0.05,  # two-sided error rate of one comparison (before the Bonferroni correction)
    "min_effect": 0.01,  # 1 pp: a smaller gain is not called an improvement at any n
    "moderate_T_max": 10.0,  # A1: "moderate" T is in (1, 10]
    "high_T_min": 5.0,  # A6: "high" T is T >= 5
    "targeted_margin": 0.10,  # A6: targeted success may drop up to 10 pp from T=1 and still "succeed"
    # B: a T* within this factor of 1 is T=1 to the sweep's resolution (its temperatures are 2-2.5x
    # apart), so "T* beats T=1" is not what the claim predicts there
    "tstar_near_1": 2 ** 0.5,
}
# The "detectable" effect of a comparison is found supported with this probability (not a verdict
# threshold: it says what an inconclusive verdict could have seen)
POWER = 0.80

AT_REGIMES = ("at", "atT1", "trades", "fat")
# why a comparison between one training run a side is at most inconclusive (_cap_one_run)
NOT_ESTIMATED = "seed-to-seed variation not estimated"
ONE_RUN = f"one training seed a side and none elsewhere in the family: {NOT_ESTIMATED}"

CLAIMS: Dict[str, Tuple[str, str]] = {
    "A1": ("Moderate T improves clean accuracy over T=1.",
           "Clean accuracy: T=1 against the best T in (1, {moderate_T_max:g}], per family; paired over images."),
    "A2": ("Elevated T improves robustness to common corruptions (mCA, mCE).",
           "mCA (mean accuracy over the 15 CIFAR-10-C benchmark corruptions at the severities measured: "
           "RobustBench's figure where all 5 were, the leaderboard's c_* columns say which): T=1 against the best "
           "T > 1, per family; mCE and the relative drop from clean are shown."),
    "A3": ("Elevated T improves robustness to natural shifts (CIFAR-10.1, small rotations and translations).",
           "CIFAR-10.1 accuracy, the mean accuracy over the natural-transform sweeps (nat_*) and the worst case "
           "over the rotation/translation grid: T=1 against the best T > 1, per family."),
    "A4": ("Elevated T improves robustness to untargeted attacks such as PGD.",
           "robust_min (minimum over every Linf attack and view at 8/255) decides; CE-PGD on the raw logits is "
           "the weak attack the claim reports: T=1 against the best T > 1, per family; paired over images."),
    "A5": ("Higher T helps adversarial training.",
           "As A4, in the adversarially trained families (regimes " + ", ".join(AT_REGIMES) + ")."),
    "A6": ("Targeted attacks still succeed against high-T models.",
           "Target-hit rate (the share of correctly classified points the attack takes into its target class) "
           "of the strongest single-target attack (pgd_target_ll, pgd_target_random) on the raw logits, at every "
           "T >= {high_T_min:g} against T=1 of the family; equivalence margin {targeted_margin_pp:g} pp."),
    "B": ("With a BN head, T* = 0.7239 sqrt(M) - 4.706 is the best training temperature.",
          "Clean accuracy of <arch>_bn_Tauto against the BN-head T=1 model, the plain T=1 model and the best "
          "other temperature of the BN-head family; paired over images."),
}


@dataclass
class Comparison:
    """One test of a claim: candidate against baseline on one metric, within one family."""
    family: str
    metric: str
    baseline: str  # model name (seeds: the first one's name, "+k seeds")
    baseline_T: float
    baseline_value: float
    candidate: str
    candidate_T: float
    candidate_value: float
    diff: float  # candidate - baseline
    se: float
    z: float  # the critical value the difference was held to
    n: int  # images (points) behind one model's number: seeds are evaluated on the same ones
    se_kind: str  # "paired" or "binomial"
    verdict: str
    note: str = ""
    decides: bool = True  # False: shown as evidence (a weak attack, a side test), not voting
    models: Tuple[str, ...] = ()  # every model behind the two numbers
    baseline_models: Tuple[str, ...] = ()  # the models baseline_value averages (where a side's seeds are needed)
    candidate_models: Tuple[str, ...] = ()
    df: float = math.inf  # t's degrees of freedom whose quantile is z (finite: a seed spread is in se)
    one_run: bool = False  # one training seed a side and none in the family: no seed spread estimated
    by_numbers: str = ""  # the verdict the numbers alone gave, where one_run capped it at inconclusive
    cost: bool = False  # the family's worst temperature against T=1 (worst_vs_t1), not the best
    arms: bool = False  # loss x T against the fixed lr at their highest shared temperature (arms_at_top)

    @property
    def is_loss(self) -> bool:
        """The candidate loses at least min_effect against the baseline, its interval clear of zero."""
        return improvement_verdict(-self.diff, self.se, self.z) == SUPPORTED

    @property
    def interval(self) -> Tuple[float, float]:
        """The confidence interval of diff at the comparison's z (Bonferroni-corrected)."""
        return self.diff - self.z * self.se, self.diff + self.z * self.se

    @property
    def critical(self) -> str:
        """The critical value and its distribution, e.g. "z 1.96" or "t 4.30 (df 2.0)"."""
        if not math.isfinite(self.df):
            return f"z {self.z:.2f}"
        if self.df >= 1000:  # the seed spread is a sliver of the error: t is the normal's here
            return f"t {self.z:.2f} (df > 1000)"
        return f"t {self.z:.2f} (df {self.df:.1f})" if self.df < 100 else f"t {self.z:.2f} (df {self.df:.0f})"

    @property
    def detectable(self) -> float:
        """The smallest true improvement this comparison calls supported with probability POWER.
        Supported needs d - z*se > 0 and d >= min_effect, i.e. d >= max(z*se, min_effect); the
        true effect must sit z_power*se above that bar."""
        return max(THRESHOLDS["min_effect"], self.z * self.se) + _quantile(POWER, self.df) * self.se


@dataclass
class ClaimResult:
    key: str
    claim: str
    measurement: str
    verdict: str
    reason: str
    comparisons: List[Comparison] = field(default_factory=list)
    models: List[str] = field(default_factory=list)  # the models whose numbers were used


@functools.lru_cache(maxsize=4096)
def _quantile(p: float, df: float = math.inf) -> float:
    # cached: the seed parts' degrees of freedom are a handful of whole numbers, asked for again
    # by every comparison, and scipy's t.ppf costs a third of a millisecond a call
    if not math.isfinite(df):
        return NormalDist().inv_cdf(p)
    from scipy.stats import t  # scipy comes with torchattacks; imported where a seed spread needs it
    return float(t.ppf(p, df))


def z_crit(k: int, df: float = math.inf) -> float:
    """Two-sided critical value for the best of k comparisons (Bonferroni): the normal's, or
    Student's t at ``df`` degrees of freedom."""
    return _quantile(1 - THRESHOLDS["alpha"] / (2 * max(1, k)), df)


class Noise(NamedTuple):
    """A difference's standard error in its parts: the images' (the normal's) and each seed
    part's variance with its degrees of freedom. ``estimated`` is False where there was no seed
    spread to be had (one training run a side, none in the family)."""
    img: float
    seeds: Tuple[Tuple[float, float], ...] = ()
    estimated: bool = True

    @property
    def se(self) -> float:
        return math.sqrt(self.img ** 2 + sum(v for v, _ in self.seeds))


def banerjee_z(k: int, noise: Noise) -> float:
    """The critical value for the best of k comparisons of a difference with ``noise``: the
    half-width sqrt((z se_img)^2 + sum (t_df se_seed)^2) over se (Banerjee 1961; the module's
    docstring says why not Welch-Satterthwaite). The normal's where no seed part is in se."""
    p = 1 - THRESHOLDS["alpha"] / (2 * max(1, k))
    z = _quantile(p)
    se = noise.se
    if not noise.seeds or not se > 0:
        return z
    return math.sqrt((z * noise.img) ** 2 + sum(_quantile(p, df) ** 2 * v for v, df in noise.seeds)) / se


def critical(k: int, noise: Noise) -> Tuple[float, float]:
    """(banerjee_z, the degrees of freedom at which Student's t has that quantile: how the
    critical value is printed and the power quantile taken; infinite at the normal's)."""
    z = banerjee_z(k, noise)
    p = 1 - THRESHOLDS["alpha"] / (2 * max(1, k))
    if not noise.seeds or z <= _quantile(p) * (1 + 1e-9):
        return z, math.inf
    from scipy.optimize import brentq
    from scipy.stats import t
    lo, hi = math.log(min(df for _, df in noise.seeds) / 2), math.log(1e9)
    if t.ppf(p, math.exp(hi)) >= z:  # within float noise of the normal's
        return z, 1e9
    return z, math.exp(brentq(lambda x: t.ppf(p, math.exp(x)) - z, lo, hi, xtol=1e-6))


def improvement_verdict(diff: float, se: float, z: float) -> str:
    # a hair under min_effect: accuracies are whole numbers of images, and their differences'
    # float means miss the threshold by rounding (0.85, 0.85, 1.30 pp average to 0.99999...)
    m = THRESHOLDS["min_effect"] - 1e-9
    if not (np.isfinite(diff) and np.isfinite(se)):
        return NOT_MEASURED
    if diff - z * se > 0 and diff >= m:
        return SUPPORTED
    if diff + z * se < m:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> Tuple[str, str]:
    """A claim's verdict from its comparisons' verdicts, and why."""
    measured = [v for v in verdicts if v != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED, "no model of the store measures it"
    kinds = sorted(set(measured), key=VERDICTS.index)
    if len(kinds) == 1:
        return kinds[0], "every difference is within the noise" if kinds[0] == INCONCLUSIVE else ""
    if set(kinds) == {SUPPORTED, WEAK_ONLY}:
        return WEAK_ONLY, "robust_min supports it in some families only"
    counts = ", ".join(f"{measured.count(k)} {k}" for k in kinds)
    return INCONCLUSIVE, f"the families/metrics disagree ({counts})"


# ---------------------------------------------------------------------------------------------
# The data the comparisons read


class Evidence:
    """The leaderboard, the tidy table and the per-image bits of the latest run of every model,
    indexed for the comparisons."""

    def __init__(self, tidy: pd.DataFrame, board: pd.DataFrame, bits: Optional[pd.DataFrame],
                 latest: Optional[pd.DataFrame] = None):
        self.board = board.set_index("model", drop=False) if len(board) else board
        self.tidy = latest_runs(tidy) if latest is None else latest
        self._bits: Dict[Tuple[str, str, str, float], np.ndarray] = {}
        # every budget of an attack for the worst case; its strongest for the attack's own bits
        self._bit_rows = latest_runs(bits, one_budget=False) if bits is not None and len(bits) else None
        if self._bit_rows is not None:
            for r in latest_runs(bits).itertuples():
                self._bits[(r.model, r.threat, r.view, round(float(r.eps), 6))] = unpack_bits(r.bits, int(r.n))
        self.several_datasets = len(board) > 0 and board["dataset"].nunique() > 1
        # the claims ask the same few questions of each model and family dozens of times: a
        # model's rows and a regime's families are looked up once (results/cpu's claims took
        # 7 s, most of it filtering the same tables again)
        self._tidy_of = _by_model(self.tidy)
        self._bit_rows_of = _by_model(self._bit_rows) if self._bit_rows is not None else {}
        self._families: Dict[Tuple[str, ...], Dict[ModelFamily, pd.DataFrame]] = {}
        transfer = self.tidy[(self.tidy.threat == "transfer") & (self.tidy.family == "attack")] \
            if len(self.tidy) else self.tidy
        self._surrogates = {json.loads(p).get("surrogate") for p in transfer.params.astype(str).unique()}
        self._transfer_cells = set(zip(transfer.threat.astype(str), transfer.view.astype(str)))

    def label(self, fam: ModelFamily) -> str:
        return fam.label(with_dataset=self.several_datasets)

    # --- per-model numbers

    def value(self, model: str, metric: str) -> float:
        if metric == "target_hits":  # A6's, not a leaderboard column
            return self.targeted_success(model)[0]
        if metric == "nat_mean":
            cols = [c for c in self.board.columns if c.startswith("nat_") and c != "nat_worst_grid"]
            if model not in self.board.index:
                return float("nan")
            vals = self.board.loc[model, cols].astype(float) if cols else pd.Series(dtype=float)
            return float(vals.mean()) if vals.notna().any() else float("nan")
        if metric not in self.board.columns or model not in self.board.index:
            return float("nan")
        v = self.board.loc[model, metric]
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")

    def n(self, model: str, metric: str) -> int:
        """Images behind a model's number."""
        t = self._tidy_of.get(model, self.tidy.iloc[:0])
        if metric in ("mCA", "mCE", "c_rel_drop"):
            t = t[t.threat == "corruption"]
        elif metric.startswith("nat_"):
            t = t[t.family == "natural"]
        elif metric == "cifar10.1":
            t = t[t.threat == "cifar10.1"]
        elif metric == "robust_min" and isinstance(self.board.loc[model].get("robust_min_by"), str):
            # the attack that set it may have run on part of the images (Square on attack_n of them)
            threat, _, view = self.board.loc[model, "robust_min_by"].partition("/")
            t = t[(t.family == "attack") & (t.threat == threat) & (t.view == view) & (t.metric == "robust_acc") &
                  np.isclose(t.eps.astype(float), HEADLINE_EPS)]
            return int(t.loc[t.value.idxmin(), "n"]) if len(t) else int(self.board.loc[model, "n"])
        else:
            return int(self.board.loc[model, "n"])
        return int(t.n.max()) if len(t) else int(self.board.loc[model, "n"])

    def corruption_cells(self, model: str) -> Tuple:
        """What a model's mCA is a mean over: its corruption source(s), images and (corruption,
        severity) cells of the benchmark corruptions."""
        t = self._tidy_of.get(model, self.tidy.iloc[:0])
        t = t[(t.threat == "corruption") & (t.metric == "accuracy") & t.corruption.isin(BENCHMARK)]
        if t.empty:
            return ()
        return (tuple(sorted(t.source.astype(str).unique())), int(t.n.max()),
                frozenset(zip(t.corruption, t.severity.astype(float))))

    def attack_cells(self, model: str) -> frozenset:
        """What a model's robust_min is the minimum over: its Linf attacks at 8/255, (threat, view).
        A transfer attack's surrogate has none of its own (crafted on it, the attack is its own
        white-box PGD, which it ran): it counts as run there."""
        t = self._tidy_of.get(model, self.tidy.iloc[:0])
        t = t[(t.family == "attack") & (t.metric == "robust_acc") & np.isclose(t.eps.astype(float), HEADLINE_EPS)]
        cells = {(str(a), str(v)) for a, v in zip(t.threat, t.view) if threat_norm(a) == "linf"}
        return frozenset(cells | (self._transfer_cells if model in self._surrogates else set()))

    def params_of(self, model: str, family: str, threat: str) -> str:
        """The params (JSON) of a model's ``family``/``threat`` measurement: what it ran over."""
        t = self._tidy_of.get(model, self.tidy.iloc[:0])
        return " | ".join(sorted(set(t.params[(t.family == family) & (t.threat == threat)].astype(str))))

    def natural_cells(self, model: str) -> frozenset:
        """What a model's nat_mean is a mean over: its (transform, magnitude) sweeps, of the
        nat_* columns value() averages."""
        cols = {c[4:] for c in self.board.columns if c.startswith("nat_") and c != "nat_worst_grid"}
        if model in self.board.index:
            cols = {c for c in cols if pd.notna(self.board.loc[model, f"nat_{c}"])}
        t = self._tidy_of.get(model, self.tidy.iloc[:0])
        t = t[(t.family == "natural") & (t.metric == "accuracy") & t.threat.isin(cols)]
        # a sweep without magnitudes (NaN, which equals nothing, not even another NaN) as None
        return frozenset((str(a), None if pd.isna(m) else float(m)) for a, m in zip(t.threat, t.magnitude))

    def bits(self, model: str, metric: str) -> Optional[np.ndarray]:
        """Per-image correctness behind clean, pgd_raw@8/255, robust_min and robust_worst."""
        eps = round(HEADLINE_EPS, 6)
        if metric == "clean":
            return self._bits.get((model, "clean", "none", 0.0))
        if metric == "pgd_raw@8/255":
            return self._bits.get((model, "pgd", "raw", eps))
        if metric == "robust_min":
            by = self.board.loc[model].get("robust_min_by") if "robust_min_by" in self.board.columns else None
            if not isinstance(by, str) or "/" not in by:
                return None
            threat, view = by.split("/", 1)
            return self._bits.get((model, threat, view, eps))
        if metric == "robust_worst":  # as the leaderboard's (bench.report.tables.worst_case)
            if self._bit_rows is None or model not in self.board.index:
                return None
            return worst_case_bits(self._bit_rows_of.get(model, self._bit_rows.iloc[:0]),
                                   int(self.board.loc[model, "n"]), HEADLINE_EPS)
        return None

    def images_of(self, model: str) -> Tuple[str, ...]:
        """Which test images a model's bits are on (its subset_seed; one a model, _one_subset):
        two models' bits pair image by image only on the same subset, not merely as many images."""
        rows = self._bit_rows_of.get(model)
        return () if rows is None else tuple(sorted(rows.subset_seed.astype(str).unique()))

    def targeted_success(self, model: str) -> Tuple[float, int, str]:
        """(target-hit rate among the correctly classified points, how many there were, attack/view)
        of the strongest single-target attack on the raw logits (or view-invariant) at 8/255. The
        multi-target ones (APGD-T) count any misclassification, not a target, and are not read."""
        t = self._tidy_of.get(model, self.tidy.iloc[:0])
        t = t[(t.family == "attack") & np.isclose(t.eps.astype(float), HEADLINE_EPS) & t.view.isin(["raw", "any"])]
        t = t[t.threat.map(lambda a: a in ATTACKS and ATTACKS[a].single_target)]
        if t.empty:
            return float("nan"), 0, ""
        wide = t.pivot_table(index=["threat", "view", "n"], columns="metric", values="value", aggfunc="mean")
        if "target_hit_rate" not in wide or "clean_acc" not in wide:
            return float("nan"), 0, ""
        wide = wide[np.isfinite(wide["target_hit_rate"])]
        if wide.empty:
            return float("nan"), 0, ""
        (threat, view, n), row = max(wide.iterrows(), key=lambda kv: kv[1]["target_hit_rate"])
        return float(row["target_hit_rate"]), int(round(row["clean_acc"] * n)), f"{threat}/{view}"

    # --- families

    def families(self, regimes: Sequence[str]) -> Dict[ModelFamily, pd.DataFrame]:
        """The board's models of ``regimes`` by family (the frames are shared: read, not modify)."""
        if self.board.empty:
            return {}
        key = tuple(regimes)
        if key not in self._families:
            board = self.board[self.board.regime.isin(regimes)]
            out: Dict[ModelFamily, list] = {}
            for _, row in board.iterrows():
                out.setdefault(ModelFamily.of(row), []).append(row)
            self._families[key] = {k: pd.DataFrame(v) for k, v in out.items()}
        return self._families[key]

    def baseline_rows(self, fam: ModelFamily) -> pd.DataFrame:
        """The T=1 models of a family; for the loss-x-T arm, those of its fixed-lr twin."""
        fams = self.families([fam.regime])
        for k in (fam, fam._replace(lr_scale=False)):
            rows = fams.get(k)
            if rows is not None:
                t1 = rows[np.isclose(rows["T"].astype(float), 1.0) & ~rows.model.map(is_tauto)]
                if len(t1):
                    return t1
        return pd.DataFrame()


def _by_model(table: pd.DataFrame) -> Dict[str, pd.DataFrame]:
    return {m: rows for m, rows in table.groupby("model", sort=False)} if len(table) else {}


# ---------------------------------------------------------------------------------------------
# Differences and their standard errors


def _binomial_se(p: float, n: int) -> float:
    p_ = (p * n + 1) / (n + 2)
    return math.sqrt(p_ * (1 - p_) / n)


def _paired_se(d: np.ndarray) -> float:
    """The standard error of a mean per-image difference, never below one image (1/n)."""
    return max(float(d.std(ddof=1)) / math.sqrt(len(d)), 1 / len(d)) if len(d) > 1 else 1.0


def _pooled_seed_var(ev: Evidence, pool: Optional[pd.DataFrame], metric: str) -> Tuple[float, int]:
    """(the seed-to-seed variance of ``metric``, its degrees of freedom) pooled over the
    (family, temperature) groups of ``pool`` that have two seeds or more, as one-way ANOVA pools
    it; (nan, 0) where none has."""
    if pool is None or pool.empty:
        return float("nan"), 0
    ss, df = 0.0, 0
    pool = pool.drop_duplicates("model")
    groups = pool.groupby([pool.apply(ModelFamily.of, axis=1), pool["T"]], sort=False)
    for _, grp in groups:  # a temperature's seeds within one family: the same model up to the seed
        v = [ev.value(m, metric) for m in grp.model]
        v = [x for x in v if np.isfinite(x)]
        if len(v) >= 2:
            ss += float(np.var(v, ddof=1)) * (len(v) - 1)
            df += len(v) - 1
    return (ss / df, df) if df else (float("nan"), 0)


def difference(ev: Evidence, cand: pd.DataFrame, base: pd.DataFrame, metric: str,
               pool: Optional[pd.DataFrame] = None) -> Tuple[float, Noise, int, str]:
    """(candidate - baseline, its standard error in parts, images, "paired"/"binomial" and the
    seeds), seeds averaged. Every seed is evaluated on the same images, so the images' part is
    one seed's: with bits on the same images for every model, each image's seed mean of the
    candidate less the baseline's (sides with different numbers of seeds included); otherwise
    each side's binomial error at its seed-averaged accuracy over one seed's images. Where a
    side has one seed, its seed-to-seed variance is the one pooled over the temperatures of
    ``pool`` (the family) that have seeds: a single training run varies as much as its seeded
    neighbours do, not zero."""
    cand = cand.sort_values("seed")
    base = base.sort_values("seed")
    vc = [ev.value(m, metric) for m in cand.model]
    vb = [ev.value(m, metric) for m in base.model]
    if not (np.isfinite(vc).all() and np.isfinite(vb).all()):
        return float("nan"), Noise(float("nan")), 0, ""
    diff = float(np.mean(vc) - np.mean(vb))
    nc, nb = (min(ev.n(m, metric) for m in side.model) for side in (cand, base))
    n = min(nc, nb)
    bc, bb = ([ev.bits(m, metric) for m in side.model] for side in (cand, base))
    if all(b is not None for b in bc + bb) and len({len(b) for b in bc + bb}) == 1 and \
            len({ev.images_of(m) for m in list(cand.model) + list(base.model)}) == 1:
        # the seeds' per-image results correlate (0.7 for PGD at T=50 against T=1): averaged over
        # the seeds image by image first, as summed independent they made this part too small
        d = np.mean(np.asarray(bc, dtype=float), axis=0) - np.mean(np.asarray(bb, dtype=float), axis=0)
        se_img, kind = _paired_se(d), "paired"
    else:
        se_img = math.hypot(_binomial_se(float(np.mean(vc)), nc), _binomial_se(float(np.mean(vb)), nb))
        kind = "binomial"
    if max(len(vc), len(vb)) > 1:
        kind += " on seed means"
    noise, seeds = with_seed_spread(ev, se_img, vc, vb, pool, metric, paired=len(vc) == len(vb), n=n)
    return diff, noise, n, kind + seeds


def with_seed_spread(ev: Evidence, se_img: float, vc, vb, pool: Optional[pd.DataFrame], metric: str,
                     paired: bool, n: int) -> Tuple[Noise, str]:
    """(the images' ``se_img`` with the seed-to-seed parts beside it, how: " + seeds (k vs k)"
    and the pooling, or ''), from the per-seed values of the two sides (``paired``: seeds
    matched in order; else each side's spread, as Welch's). A side with one seed takes the
    spread pooled over ``pool``'s temperatures with seeds. No variance is taken below two values
    one image of ``n`` apart: the values count images, and seeds agreeing to the image are not
    known to agree closer."""
    floor = 1 / (2 * n * n) if n else 0.0
    seeds: Tuple[Tuple[float, float], ...] = ()
    if paired and len(vc) >= 2:
        seeds = ((max(float(np.var(np.subtract(vc, vb), ddof=1)), floor) / len(vc), len(vc) - 1),)
    elif len(vc) >= 2 and len(vb) >= 2:
        seeds = tuple((max(float(np.var(v, ddof=1)), floor) / len(v), len(v) - 1) for v in (vc, vb))
    pooled = False
    if len(vc) < 2 or len(vb) < 2:
        var, dfp = _pooled_seed_var(ev, pool, metric)
        if dfp:
            seeds, pooled = ((max(var, floor) * (1 / len(vc) + 1 / len(vb)), dfp),), True
    how = f" + seeds ({len(vc)} vs {len(vb)})" if max(len(vc), len(vb)) >= 2 else ""
    if pooled:
        how += f", seed spread pooled (df {seeds[0][1]})"
    return Noise(se_img, seeds, estimated=bool(seeds)), how


def _mean(ev: Evidence, models, metric: str) -> float:
    """A temperature's value: the mean over its seeds' models."""
    return float(np.mean([ev.value(m, metric) for m in models]))


def _swept(rows: pd.DataFrame) -> pd.DataFrame:
    """A family's models at a temperature other than T=1, T=auto aside."""
    return rows[~np.isclose(rows["T"].astype(float), 1.0) & ~rows.model.map(is_tauto)]


def _name(rows: pd.DataFrame) -> str:
    first = str(rows.sort_values("seed").model.iloc[0])
    return first + (f" +{len(rows) - 1} seeds" if len(rows) > 1 else "")


# the metrics that are means over cells (corruption x severity, transform x magnitude): two of
# them compare only over the same cells
CELL_METRICS = ("mCA", "mCE", "c_rel_drop", "nat_mean")


def _measured_differently(ev: Evidence, metric: str, *sides: Sequence[str]) -> str:
    """Why the models of ``sides`` cannot be compared on ``metric``, or "": a mean over corruption
    cells compares with another only over the same corruptions, severities, source and images
    (a mean over severity 1 alone against one over 1-5 is the severities' difference, not the
    models'); a mean over natural transforms only over the same transforms and magnitudes; a
    robust_min only over the same attacks (a minimum over one attack against one over ten is the
    suites' difference); the worst case over a rotation/translation grid only over the same grid."""
    if metric == "robust_min":
        return _attacks_differ(ev, *sides)
    if metric == "nat_worst_grid":
        return _grids_differ(ev, *sides)
    if metric not in CELL_METRICS:
        return ""
    if metric == "nat_mean":
        return _transforms_differ(ev, *sides)
    cells = {m: ev.corruption_cells(m) for side in sides for m in side}
    if len(set(cells.values())) <= 1:
        return ""

    def said(m):
        row = ev.board.loc[m] if m in ev.board.index else {}
        sev, k, src, n = (row.get(c) for c in ("c_severities", "c_corruptions", "c_source", "c_n"))
        if not cells[m]:
            return f"{m}: no benchmark corruption"
        return f"{m}: {k:g} corruptions at severities {sev} ({src}, n {n:g})"
    return "other corruption cells (" + _grouped(cells, said) + ")"


def _grouped(cells: Dict[str, object], said: Callable[[str], str]) -> str:
    """The models grouped by what they were measured over, each group said by its first model."""
    groups: Dict[object, List[str]] = {}
    for m, c in cells.items():
        groups.setdefault(c, []).append(m)
    return "; ".join(said(ms[0]) + (f" and {len(ms) - 1} more" if len(ms) > 1 else "") for ms in groups.values())


def _attacks_differ(ev: Evidence, *sides: Sequence[str]) -> str:
    """_measured_differently for robust_min: a minimum over fewer attacks is an upper bound the
    missing ones might have lowered (the masking trap: CE-PGD alone is the weakest suite), so
    robust_min compares only over the same attacks and views."""
    cells = {m: ev.attack_cells(m) for side in sides for m in side}
    every = frozenset.union(*cells.values()) if cells else frozenset()
    lacking = {m: sorted(f"{t}/{v}" for t, v in every - c) for m, c in cells.items() if every - c}
    if not lacking:
        return ""
    groups: Dict[Tuple[str, ...], List[str]] = {}
    for m, miss in lacking.items():
        groups.setdefault(tuple(miss), []).append(m)
    return "robust_min over other attacks (" + "; ".join(
        f"{', '.join(ms)} without {', '.join(miss)}" for miss, ms in groups.items()) + ")"


def _grids_differ(ev: Evidence, *sides: Sequence[str]) -> str:
    """_measured_differently for nat_worst_grid: the rotation/translation grid it is the worst over."""
    cells = {m: ev.params_of(m, "natural", "worst_grid") for side in sides for m in side}
    if len(set(cells.values())) <= 1:
        return ""
    return "other rotation/translation grids (" + _grouped(cells, lambda m: f"{m}: {cells[m]}") + ")"


def _transforms_differ(ev: Evidence, *sides: Sequence[str]) -> str:
    """_measured_differently for nat_mean: the models' (transform, magnitude) sweeps, named where they
    differ (a model's nat_mean is the mean of whichever nat_* columns it has)."""
    cells = {m: ev.natural_cells(m) for side in sides for m in side}
    if len(set(cells.values())) <= 1:
        return ""
    groups: Dict[frozenset, List[str]] = {}
    for m, c in cells.items():
        groups.setdefault(c, []).append(m)

    def said(c):
        by: Dict[str, int] = {}
        for t, _ in c:
            by[t] = by.get(t, 0) + 1
        return ", ".join(f"{t} ({k} magnitude{'s' * (k > 1)})" for t, k in sorted(by.items())) or "none"
    return "other natural transforms (" + "; ".join(
        f"{min(ms)}" + (f" and {len(ms) - 1} more" if len(ms) > 1 else "") + f": {said(c)}"
        for c, ms in groups.items()) + ")"


def _without(ev: Evidence, metric: str, models: Sequence[str]) -> List[str]:
    """The models of ``models`` that have no number for ``metric``."""
    return [m for m in models if not np.isfinite(ev.value(m, metric))]


def _comparable(ev: Evidence, metric: str, base: pd.DataFrame,
                candidates: pd.DataFrame) -> Tuple[pd.DataFrame, str]:
    """The candidates whose temperature can be compared with the baseline on ``metric``, and a
    note naming the temperatures left out and why ("" where none is): a seed without the number
    (a grid still running, a measurement that failed) or other cells (_measured_differently).
    A temperature's mean over the seeds that have it would be another recipe's mean."""
    if candidates.empty:
        return candidates, ""
    out, why = [], []
    for T, grp in candidates.groupby("T"):
        missing = _without(ev, metric, list(grp.model))
        if len(missing) == len(grp):
            continue  # not measured at this temperature: nothing to leave out
        differ = "" if missing else _measured_differently(ev, metric, list(base.model), list(grp.model))
        if missing:
            why.append(f"T={float(T):g}: {', '.join(missing)} without it")
        elif differ:
            why.append(f"T={float(T):g} against T=1: {differ}")
        else:
            out.append(grp)
    note = f"; not compared, {'; '.join(why)}" if why else ""
    return (pd.concat(out) if out else candidates.iloc[:0]), note


def _not_compared(ev: Evidence, key: ModelFamily, metric: str, note: str, models: Sequence[str]) -> Comparison:
    """A comparison that could not be made, its reason in the note: shown, never counted."""
    return Comparison(ev.label(key), metric, "", 1.0, float("nan"), "", float("nan"), float("nan"), float("nan"),
                      float("nan"), float("nan"), 0, "", NOT_MEASURED, note=f"{metric}: {note}", decides=False,
                      models=tuple(models))


def best_vs_t1(ev: Evidence, key: ModelFamily, rows: pd.DataFrame, metric: str, candidates: pd.DataFrame,
               higher_is_better: bool = True) -> Optional[Comparison]:
    """The family's T=1 model against its best candidate temperature on ``metric``, among the
    temperatures comparable with T=1 on it (_comparable). "Not supported" is the best one's only
    where every other candidate's gain is ruled out too (_ruled_out_at_every_T)."""
    base = ev.baseline_rows(key)
    if base.empty or candidates.empty:
        return None
    everyone = list(base.model) + list(candidates.model)
    if len(_without(ev, metric, everyone)) == len(everyone):
        return None  # the family does not measure it (the claim says so where none does)
    missing = _without(ev, metric, list(base.model))
    if missing:
        return _not_compared(ev, key, metric, f"T=1: {', '.join(missing)} without it", everyone)
    candidates, left_out = _comparable(ev, metric, base, candidates)
    if candidates.empty:
        return _not_compared(ev, key, metric, left_out[2:] or "no other temperature measures it", everyone)
    vals = {T: _mean(ev, grp.model, metric) for T, grp in candidates.groupby("T")}
    bv = [ev.value(m, metric) for m in base.model]
    best_T = (max if higher_is_better else min)(vals, key=vals.get)
    cand = candidates[candidates["T"] == best_T]
    pool = pd.concat([rows, base])
    diff, noise, n, kind = difference(ev, cand, base, metric, pool=pool)
    z, df = critical(len(vals), noise)
    signed = diff if higher_is_better else -diff
    verdict = improvement_verdict(signed, noise.se, z)
    note = f"best of {len(vals)} temperature{'s' * (len(vals) > 1)}"
    if higher_is_better:
        others = candidates[candidates["T"].isin([T for T in vals if T != best_T])]
        verdict, open_note = _ruled_out_at_every_T(verdict, ev, others, base, metric, pool, len(vals), "")
        note += open_note
    return Comparison(ev.label(key), metric, _name(base), 1.0, float(np.mean(bv)), _name(cand), float(best_T),
                      vals[best_T], diff, noise.se, z, n, kind, verdict, note=note + left_out,
                      models=tuple(base.model) + tuple(cand.model), df=df, baseline_models=tuple(base.model),
                      candidate_models=tuple(cand.model), one_run=not noise.estimated)


def _ruled_out_at_every_T(verdict: str, ev: Evidence, others: pd.DataFrame, base: pd.DataFrame, metric: str,
                          pool: pd.DataFrame, k: int, over: str) -> Tuple[str, str]:
    """(verdict, a note to add): the best mean's "not supported" stands only where the gain of
    min_effect over ``base`` is ruled out at every temperature of ``others`` too, at the best-of-k
    critical value; else inconclusive, naming those left open with their upper bounds. A lower
    mean with a wider interval (one seed beside three) can hold a gain the best mean rules out."""
    if verdict != NOT_SUPPORTED:
        return verdict, ""
    m = THRESHOLDS["min_effect"] - 1e-9
    still = []
    for T, grp in others.groupby("T"):
        diff, noise, _, _ = difference(ev, grp, base, metric, pool=pool)
        if not np.isfinite(diff):
            continue
        upper = diff + banerjee_z(k, noise) * noise.se
        if not upper < m:
            still.append(f"T={float(T):g} (upper bound {100 * upper:+.1f} pp)")
    if not still:
        return verdict, ""
    return INCONCLUSIVE, (f"; a gain of {100 * THRESHOLDS['min_effect']:g} pp{over} is ruled out here but not at "
                          f"{', '.join(still)}")


def worst_vs_t1(ev: Evidence, key: ModelFamily, rows: pd.DataFrame, metric: str) -> Optional[Comparison]:
    """The cost side of an "improves" claim: T=1 against the family's worst temperature anywhere in
    its sweep (Bonferroni over the sweep), shown beside the best one and not voting: what a
    temperature costs, where the claims ask what it gains."""
    others = _swept(rows)
    c = best_vs_t1(ev, key, rows, metric, others, higher_is_better=False)
    if c is None or not c.diff < 0:
        return None
    others, left_out = _comparable(ev, metric, ev.baseline_rows(key), others)
    k = others["T"].nunique()
    c.cost, c.decides = True, False
    c.verdict = improvement_verdict(c.diff, c.se, c.z)  # as an improvement, which it is not
    c.note = (f"the cost side: the worst of {k} temperature{'s' * (k > 1)} against T=1, shown, not voting; "
              + ("a loss (the interval excludes zero)" if c.is_loss else "within the noise")
              + (f" ({ONE_RUN})" if c.one_run else "") + left_out)
    return c


def arms_at_top(ev: Evidence, key: ModelFamily, rows: pd.DataFrame, metric: str,
                families: Dict[ModelFamily, pd.DataFrame]) -> Optional[Comparison]:
    """A fixed-lr family's loss x T twin against it at the highest temperature both have, directly
    (paired over images and seeds). The loss x T arm keeps T=1's step on the logits, the fixed lr
    takes 1/T of it, so the two differ most at the highest T: fixed in advance, not picked as the
    worst, so no correction for a choice is owed. Comparing each arm's loss against T=1 instead
    would not separate them (a difference in significance is not a significant difference)."""
    twin = families.get(key._replace(lr_scale=True)) if not key.lr_scale else None
    if twin is None:
        return None
    swept = _swept(rows), _swept(twin)
    shared = set(swept[0]["T"].astype(float)) & set(swept[1]["T"].astype(float))
    if not shared:
        return None
    T = max(shared)
    fixed, lrt = (r[np.isclose(r["T"].astype(float), T)] for r in swept)
    missing = _without(ev, metric, list(fixed.model) + list(lrt.model))
    if len(missing) == len(fixed) + len(lrt):
        return None
    differ = f"{', '.join(missing)} without it" if missing else \
        _measured_differently(ev, metric, list(fixed.model), list(lrt.model))
    if differ:
        return _not_compared(ev, key, metric, f"the arms at T={T:g} not compared, {differ}",
                             list(fixed.model) + list(lrt.model))
    diff, noise, n, kind = difference(ev, lrt, fixed, metric, pool=pd.concat([rows, twin]))
    if not np.isfinite(diff):
        return None
    z, df = critical(1, noise)
    return Comparison(ev.label(key), metric, _name(fixed), T, _mean(ev, fixed.model, metric), _name(lrt), T,
                      _mean(ev, lrt.model, metric), diff, noise.se, z, n, kind, improvement_verdict(diff, noise.se, z),
                      decides=False, arms=True, df=df, one_run=not noise.estimated,
                      note="the arms at their highest shared temperature: loss x T (T=1's logit step) against "
                           "the fixed lr (1/T of it), shown, not voting", models=tuple(fixed.model) + tuple(lrt.model),
                      baseline_models=tuple(fixed.model), candidate_models=tuple(lrt.model))


def _elevated(rows: pd.DataFrame, t_max: float = math.inf) -> pd.DataFrame:
    T = rows["T"].astype(float)
    return rows[(T > 1.0) & (T <= t_max) & ~rows.model.map(is_tauto)]


# ---------------------------------------------------------------------------------------------
# The claims


def _cap_one_run(c: Comparison, *rests_on: Comparison) -> None:
    """A verdict resting on one training run a side (``c`` or any comparison of ``rests_on``
    without a seed spread) is at most inconclusive: its interval holds the images' noise alone,
    and another seed of the same recipe moves accuracy by about as much as the effects sought
    (results/cpu: 0.5-1 pp clean). The numbers stay; what they alone say goes in the note."""
    if c.verdict in (SUPPORTED, NOT_SUPPORTED, WEAK_ONLY) and any(x.one_run for x in (c,) + rests_on):
        c.note += f"; {ONE_RUN}, so at most inconclusive (by the numbers alone: {c.verdict})"
        c.by_numbers, c.verdict = c.verdict, INCONCLUSIVE


def _improvement_claim(ev: Evidence, key: str, metrics: Sequence[str], regimes=("std",),
                       t_max: float = math.inf) -> List[Comparison]:
    out = []
    families = ev.families(regimes)
    for metric in metrics:
        found = []
        for fam, rows in families.items():
            best = best_vs_t1(ev, fam, rows, metric, _elevated(rows, t_max))
            worst = worst_vs_t1(ev, fam, rows, metric)  # over the whole sweep, A1's included
            if best is not None and worst is not None and worst.candidate_T == best.candidate_T:
                worst = None  # one temperature both best and worst: shown once
            arms = arms_at_top(ev, fam, rows, metric, families)
            for c in (best, worst, arms):  # the cost side and the arms do not vote, but are shown
                if c is not None:
                    _cap_one_run(c)
            found += [c for c in (best, worst, arms) if c is not None]
        if not found:  # say which measurement is missing rather than leave it out silently
            out.append(Comparison("(all)", metric, "", 1.0, float("nan"), "", float("nan"), float("nan"),
                                  float("nan"), float("nan"), float("nan"), 0, "", NOT_MEASURED,
                                  note=f"{metric}: no family has it at T=1 and at another temperature"))
        out += found
    return out


def _unchecked_note(ev: Evidence, models: Sequence[str]) -> str:
    """The checks the masking audit could not make on the models a robustness comparison rests on
    (bench/report/audit.py, masking_unchecked), grouped by what is missing; "" when it made all."""
    if "masking_unchecked" not in ev.board.columns:
        return ""
    by_gap: Dict[str, List[str]] = {}
    for m in dict.fromkeys(models):
        gap = ev.board.loc[m, "masking_unchecked"] if m in ev.board.index else None
        if isinstance(gap, str) and gap:
            by_gap.setdefault(gap, []).append(str(m))
    return "".join(f"; the masking audit had no evidence for {gap} on {', '.join(ms)}" for gap, ms in by_gap.items())


def _robustness_claim(ev: Evidence, regimes: Sequence[str]) -> List[Comparison]:
    """A4/A5: robust_min decides; PGD on the raw logits says whether a weak attack would have
    supported the claim."""
    out = []
    for fam, rows in ev.families(regimes).items():
        strong = best_vs_t1(ev, fam, rows, "robust_min", _elevated(rows))
        weak = best_vs_t1(ev, fam, rows, "pgd_raw@8/255", _elevated(rows))
        if strong is None:
            continue
        if strong.verdict == NOT_MEASURED:  # not compared (_comparable says why): shown, not voting
            out.append(strong)
            continue
        # robustness bought with clean accuracy is part of the answer
        cb = _mean(ev, ev.baseline_rows(fam).model, "clean")
        cc = _mean(ev, rows[rows["T"] == strong.candidate_T].model, "clean")
        strong.note += f"; clean accuracy {100 * cc:.1f}% at T={strong.candidate_T:g} vs {100 * cb:.1f}% at T=1"
        # a robust_min the audit calls likely masked is an upper bound no attack here confirmed:
        # it cannot carry a robustness claim (science.md: the gradient-masking trap)
        masked = [m for m in rows[rows["T"] == strong.candidate_T].model
                  if "masking" in ev.board.columns and ev.board.loc[m, "masking"] == "likely"]
        if strong.verdict == SUPPORTED and masked:
            strong.verdict = INCONCLUSIVE
            strong.note += (f"; the masking audit says 'likely' for {', '.join(masked)}: its robust_min is an "
                            f"upper bound, not evidence of robustness")
        strong.note += _unchecked_note(ev, list(ev.baseline_rows(fam).model) +
                                       list(rows[rows["T"] == strong.candidate_T].model))
        if weak is not None:
            if strong.verdict != SUPPORTED and weak.verdict == SUPPORTED:
                strong.verdict = WEAK_ONLY
                strong.note += (f"; CE-PGD on raw logits: {100 * weak.candidate_value:.1f}% at T={weak.candidate_T:g} "
                                f"vs {100 * weak.baseline_value:.1f}% at T=1, which robust_min does not confirm")
            weak.note += "; the weak attack: shown, robust_min decides"
            weak.decides = False
        # the weak-attack verdict rests on both attacks' differences; capped, its story stays in the note
        _cap_one_run(strong, *([weak] if strong.verdict == WEAK_ONLY else []))
        if weak is not None:  # shown, not voting, but a verdict on the page all the same
            _cap_one_run(weak)
        out.append(strong)
        if weak is not None:
            out.append(weak)
    return out


def _pooled_targeted(ev: Evidence, models: Sequence[str]) -> Tuple[float, int, str, List[float]]:
    """Target hits over the seeds of one temperature (``models``, in seed order): hits over
    correctly classified points, pooled; and each seed's rate."""
    got = [ev.targeted_success(str(m)) for m in models]
    got = [g for g in got if np.isfinite(g[0]) and g[1] > 0]
    if not got:
        return float("nan"), 0, "", []
    n = sum(g[1] for g in got)
    return sum(g[0] * g[1] for g in got) / n, n, "/".join(sorted({g[2] for g in got})), [g[0] for g in got]


def _targeted_claim(ev: Evidence) -> List[Comparison]:
    """A6, one comparison per (family, T >= high_T_min). Every temperature must pass, so the
    supported side is held at k = 1 (an intersection-union test owes no correction); one failure
    is enough to fail, so that side is Bonferroni-corrected over all of the claim's temperatures
    (_every_temperature combines them)."""
    margin = THRESHOLDS["targeted_margin"]
    found = []
    for fam, rows in ev.families(["std"]).items():
        base = ev.baseline_rows(fam)
        high = rows[(rows["T"].astype(float) >= THRESHOLDS["high_T_min"]) & ~rows.model.map(is_tauto)]
        if base.empty or high.empty:
            continue
        s1, n1, by1, vb = _pooled_targeted(ev, base.sort_values("seed").model)
        if not np.isfinite(s1):
            continue
        for T, grp in sorted(high.groupby("T"), key=lambda kv: float(kv[0])):
            s, n, by, vc = _pooled_targeted(ev, grp.sort_values("seed").model)
            if not np.isfinite(s):
                continue
            # the hits pooled over the seeds, their spread from seed to seed added (one seed's
            # failure is not averaged away, nor taken for the temperature's); the seeds attacked
            # the same points, so the binomial part is over one seed's count, not the pooled one
            per_c, per_b = n / len(vc), n1 / len(vb)
            noise, seeds = with_seed_spread(ev, math.hypot(_binomial_se(s, per_c), _binomial_se(s1, per_b)), vc, vb,
                                            pd.concat([rows, base]), "target_hits", paired=len(vc) == len(vb),
                                            n=int(min(per_c, per_b)))
            pooled = max(len(vc), len(vb)) > 1
            points = (f"{n} correctly classified points over {len(vc)} seed{'s' * (len(vc) > 1)} "
                      f"(T=1: {n1} over {len(vb)})" if pooled else f"{n} correctly classified points (T=1: {n1})")
            found.append((fam, base, grp, float(T), s1, s, noise, "binomial" + (", hits pooled over the seeds" * pooled)
                          + seeds, f"{by} vs {by1}; in the target class, of the {points}", round(per_c)))
    out = []
    for fam, base, grp, T, s1, s, noise, kind, note, n in found:
        drop, se = s1 - s, noise.se
        z, df = critical(1, noise)
        z_fail = banerjee_z(len(found), noise)
        if drop + z * se < margin:
            verdict = SUPPORTED
        elif drop - z_fail * se > margin:
            verdict = NOT_SUPPORTED
        else:
            verdict = INCONCLUSIVE
        if len(found) > 1:
            note += (f"; a failure needs the drop's lower bound above the margin at {z_fail:.2f} se (Bonferroni "
                     f"over the claim's {len(found)} temperatures)")
        c = Comparison(ev.label(fam), "target hits (raw)", _name(base), 1.0, s1, _name(grp), T, s, s - s1, se, z, n,
                       kind, verdict, note=note, models=tuple(base.model) + tuple(grp.model), df=df,
                       one_run=not noise.estimated)
        _cap_one_run(c)
        out.append(c)
    return out


def _every_temperature(rows: Sequence[Comparison]) -> Tuple[str, str]:
    """A6's verdict from its deciding comparisons, and why: the claim holds at every T >=
    high_T_min, so one clear failure makes it not supported, all passing supported, and anything
    else inconclusive, naming the temperatures (not "the families disagree": it is temperatures
    that differ, within one family as across them)."""
    measured = [c for c in rows if c.verdict != NOT_MEASURED]
    if not measured:
        return combine([])

    def at(cs):
        return ", ".join(f"T={c.candidate_T:g} ({c.family})" for c in cs)
    failed = [c for c in measured if c.verdict == NOT_SUPPORTED]
    if failed:
        return NOT_SUPPORTED, f"targeted success drops by more than the margin at {at(failed)}"
    if all(c.verdict == SUPPORTED for c in measured):
        return SUPPORTED, ""
    passed = [c for c in measured if c.verdict == SUPPORTED]
    return INCONCLUSIVE, (f"still succeeds at {at(passed)}; " if passed else "") + \
        f"neither shown nor ruled out at {at([c for c in measured if c.verdict == INCONCLUSIVE])}"


def _tstar_claim(ev: Evidence) -> List[Comparison]:
    out = []
    for fam, rows in ev.families(["std"]).items():
        if fam.head != "bn":
            continue
        star = rows[rows.model.map(is_tauto)]
        if star.empty:
            continue
        T_star = float(star["T"].iloc[0])
        tests: List[Comparison] = []
        noises: Dict[int, Noise] = {}  # each test's (by its place in tests) noise, for the failure side
        for label, base in (("BN head, T=1", ev.baseline_rows(fam)),
                            ("no BN head, T=1", ev.baseline_rows(fam._replace(head="plain")))):
            if base.empty:
                continue
            diff, noise, n, kind = difference(ev, star, base, "clean", pool=pd.concat([rows, base]))
            if not np.isfinite(diff):
                continue
            z, df = critical(1, noise)
            noises[len(tests)] = noise
            tests.append(Comparison(ev.label(fam), "clean", _name(base), 1.0,
                                    _mean(ev, base.model, "clean"), _name(star), T_star,
                                    _mean(ev, star.model, "clean"), diff, noise.se, z, n, kind,
                                    improvement_verdict(diff, noise.se, z), note=f"T* against {label}",
                                    models=tuple(base.model) + tuple(star.model), df=df, one_run=not noise.estimated))
        near_1 = T_star > 0 and max(T_star, 1 / T_star) < THRESHOLDS["tstar_near_1"]
        others = rows[~rows.model.map(is_tauto) & ~np.isclose(rows["T"].astype(float), T_star)]
        if near_1:  # T=1 is T* there: compared above, not a rival
            others = others[~np.isclose(others["T"].astype(float), 1.0)]
        rival = None
        # temperatures with a clean accuracy (a store may hold a model's other measurements alone)
        vals = others.groupby("T").model.apply(lambda ms: _mean(ev, ms, "clean")).dropna() if len(others) else []
        if len(vals):
            best_T = float(vals.idxmax())
            cand = others[others["T"] == best_T]
            diff, noise, n, kind = difference(ev, cand, star, "clean", pool=rows)
            rival_noise = noise
            z, df = critical(len(vals), noise)
            rest = others[others["T"].isin([T for T in vals.index if T != best_T])]
            verdict, open_note = _ruled_out_at_every_T(improvement_verdict(diff, noise.se, z), ev, rest, star, "clean",
                                                       rows, len(vals), " over T*")
            note = f"best other BN-head temperature against T* (of {len(vals)})" + open_note
            rival = Comparison(ev.label(fam), "clean", _name(star), T_star,
                               _mean(ev, star.model, "clean"), _name(cand), best_T,
                               float(vals[best_T]), diff, noise.se, z, n, kind, verdict, note=note,
                               models=tuple(star.model) + tuple(cand.model), df=df, one_run=not noise.estimated)
        if not tests:
            out.append(Comparison(ev.label(fam), "clean", "", 1.0, float("nan"), _name(star), T_star,
                                  ev.value(star.model.iloc[0], "clean"), float("nan"), float("nan"), z_crit(1), 0, "",
                                  NOT_MEASURED, note="no T=1 model (BN head or plain) to compare T* with",
                                  models=tuple(star.model)))
            continue
        if near_1:
            out.extend(_tstar_near_1(tests, rival, T_star))
            continue
        _fail_over_routes(tests, noises, rival, rival_noise if rival is not None else None,
                          len(vals) if rival is not None else 0)
        failed = ([rival] if rival is not None and rival.verdict == SUPPORTED else []) + \
            [t for t in tests if t.verdict == NOT_SUPPORTED]
        if failed:
            verdict, rests_on = NOT_SUPPORTED, failed
        elif len(tests) == 2 and all(t.verdict == SUPPORTED for t in tests) and \
                (rival is None or rival.verdict == NOT_SUPPORTED):  # the claim asks for both, and no rival
            verdict, rests_on = SUPPORTED, tests + ([rival] if rival is not None else [])
        else:
            verdict, rests_on = INCONCLUSIVE, []
        # the first test carries the family's verdict (its own is in the note); the rest are evidence
        first = tests[0]
        first.note += f" (this test alone: {first.verdict}; the family's verdict combines all three" + \
            ("" if len(tests) == 2 else "; without a plain T=1 model, at most inconclusive") + \
            ("; the best other temperature's gain over T* is not ruled out" if rival is not None and
             rival.verdict == INCONCLUSIVE and len(tests) == 2 and all(t.verdict == SUPPORTED for t in tests)
             else "") + ")"
        first.verdict = verdict
        # one failure found with a seed spread fails the family; a pass needs every part to have one
        first.one_run = bool(rests_on) and (all if verdict == NOT_SUPPORTED else any)(x.one_run for x in rests_on)
        _cap_one_run(first)
        for t in tests[1:] + ([rival] if rival else []):
            t.decides = False
            _cap_one_run(t)  # shown with a verdict of its own: held to the same rule
        out.extend(tests + ([rival] if rival else []))
    return out


def _fail_over_routes(tests: List[Comparison], noises: Dict[int, Noise], rival: Optional[Comparison],
                      rival_noise: Optional[Noise], k_rival: int) -> None:
    """B's failure side, Bonferroni-corrected as A6's: a family fails when either T=1 test rules
    out T*'s gain or the best other temperature beats T*, a union of up to three chances, so each
    failure needs its bound past the bar at alpha / routes (the rival's at its best-of-k times
    that); a pass needs all of them and owes no correction (intersection-union)."""
    routes = len(tests) + (rival is not None)
    if routes < 2:
        return
    m = THRESHOLDS["min_effect"] - 1e-9
    why = f"; a failure needs its bound past the bar at the Bonferroni level over the family's {routes} ways to fail"
    for i, t in enumerate(tests):
        if t.verdict == NOT_SUPPORTED:
            z_fail = banerjee_z(routes, noises[i])
            t.note += why + f" ({z_fail:.2f} se)"
            if not t.diff + z_fail * t.se < m:
                t.verdict = INCONCLUSIVE
    if rival is not None and rival.verdict == SUPPORTED:
        z_fail = banerjee_z(k_rival * routes, rival_noise)
        rival.note += why + f" ({z_fail:.2f} se)"
        if not rival.diff - z_fail * rival.se > 0:
            rival.verdict = INCONCLUSIVE


def _tstar_near_1(tests: List[Comparison], rival: Optional[Comparison], T_star: float) -> List[Comparison]:
    """A family whose T* is T=1 to the sweep's resolution: its T=1 comparisons test nothing the
    claim predicts, so the best other temperature against T* carries the family's verdict (a gain
    over T* ruled out, at it and every other temperature: supported; found: not supported);
    without one, inconclusive."""
    why = (f"T* = {T_star:.4g} is within a factor {THRESHOLDS['tstar_near_1']:.3g} of 1: T=1 is T* to the "
           f"sweep's resolution")
    for t in tests:
        t.note += f" ({why}; shown, not voting)"
        t.decides = False
        _cap_one_run(t)
    if rival is None:
        tests[0].note += "; no other BN-head temperature to test T* against: inconclusive"
        tests[0].verdict, tests[0].decides = INCONCLUSIVE, True
        return tests
    alone = rival.verdict
    rival.verdict = {SUPPORTED: NOT_SUPPORTED, NOT_SUPPORTED: SUPPORTED}.get(alone, INCONCLUSIVE)
    rival.note += f" (this test alone: {alone}; it carries the family's verdict: {why})"
    _cap_one_run(rival)
    return tests + [rival]


def _corruption_note(ev: Evidence, c: Comparison) -> str:
    """mCE and the relative drop of an mCA comparison's two sides, each the mean over the seeds
    the side's mCA averages (one seed's beside a mean of three said 115.3% for 113.5%). A side
    missing a seed's number is left out rather than shown as another set of seeds' mean."""
    sides = ((c.baseline_models, c.baseline_T, "fixed lr"), (c.candidate_models, c.candidate_T, "loss x T"))
    extra = []
    for col in ("mCE", "c_rel_drop"):
        for models, T, arm in sides:
            v = [ev.value(m, col) for m in models]
            if v and np.isfinite(v).all():
                extra.append(f"{col} {100 * float(np.mean(v)):.1f}% at T={T:g}" + (f" ({arm})" if c.arms else ""))
    if not extra:
        return ""
    seeds = max(len(c.baseline_models), len(c.candidate_models)) > 1
    return "; " + ", ".join(extra) + (" (means over each side's seeds)" if seeds else "")


def evaluate_claims(tidy: pd.DataFrame, board: pd.DataFrame, bits: Optional[pd.DataFrame] = None,
                    latest: Optional[pd.DataFrame] = None) -> List[ClaimResult]:
    """Every claim of science.md, from the latest run of every model in the store (``latest``:
    latest_runs(tidy), where the caller has it already)."""
    ev = Evidence(tidy, board, bits, latest)
    fmt = dict(THRESHOLDS, targeted_margin_pp=100 * THRESHOLDS["targeted_margin"])
    if board.empty:
        comps: Dict[str, List[Comparison]] = {k: [] for k in CLAIMS}
    else:
        comps = {
            "A1": _improvement_claim(ev, "A1", ["clean"], t_max=THRESHOLDS["moderate_T_max"]),
            "A2": _improvement_claim(ev, "A2", ["mCA"]),
            "A3": _improvement_claim(ev, "A3", ["cifar10.1", "nat_mean", "nat_worst_grid"]),
            "A4": _robustness_claim(ev, ["std"]),
            "A5": _robustness_claim(ev, AT_REGIMES),
            "A6": _targeted_claim(ev),
            "B": _tstar_claim(ev),
        }
        for c in [c for c in comps["A2"] if math.isfinite(c.diff)]:  # mCE and the relative drop: shown, not tested
            c.note += _corruption_note(ev, c)
        for c in (c for key in comps if key != "A6" for c in comps[key]):
            c.note += _below_min_effect(c)
    out = []
    for key, (claim, measurement) in CLAIMS.items():
        rows = comps[key]
        deciding = [c for c in rows if c.decides]
        verdict, reason = _every_temperature(deciding) if key == "A6" else combine([c.verdict for c in deciding])
        capped = [c for c in deciding if c.by_numbers]
        if capped:  # what the numbers alone said stays in sight: a weak-attack verdict is the masking story
            # every comparison on one run, not only those it capped: "4 of 6" read as 2 with a seed spread
            measured = [c for c in deciding if c.verdict != NOT_MEASURED]
            said = f"{sum(c.one_run or bool(c.by_numbers) for c in measured)} of {len(measured)} comparisons rest " \
                   f"on one training run ({NOT_ESTIMATED}) and are at most inconclusive; by the " \
                   "numbers alone: " + "; ".join(f"{c.family} {c.metric}" + (f" T={c.candidate_T:g}" if key == "A6"
                                                                               else "") + f" {c.by_numbers}"
                                                 for c in capped)
            reason = said if reason == "every difference is within the noise" and len(capped) == len(deciding) \
                else (reason + "; " if reason else "") + said
        if verdict == NOT_MEASURED:
            reason = {"A5": "no adversarially trained family (regime at/atT1/trades/fat) with a T=1 model and "
                            "another T in the store",
                      "B": "no BN-head model at T=auto (<arch>_bn_Tauto) in the store",
                      "A3": "no natural-shift column (nat_*, cifar10.1) with a T=1 model and another T",
                      "A6": "no single-target attack (pgd_target_ll, pgd_target_random) counted its target hits "
                            "for a T=1 model and a T >= {:g} one (their records before revision 3 do not: rerun "
                            "the grid)".format(THRESHOLDS["high_T_min"]),
                      "A2": "no corruption results (mCA) with a T=1 model and another T"}.get(
                key, "no family with a T=1 model and another temperature measures it")
            if any(c.verdict == NOT_MEASURED and not c.decides for c in rows):
                reason += " that can be compared (the comparisons say why)"
        for note in (arm_flips(rows), arms_note(rows)):
            if note:
                reason = (reason + "; " if reason else "") + note
        if verdict == INCONCLUSIVE:
            voting = [c for c in rows if c.decides and math.isfinite(c.diff) and math.isfinite(c.se)]
            # a comparison on one training run a side can find nothing (at most inconclusive): no power
            seen = [c.detectable for c in voting if not c.one_run]
            if voting and not seen:
                reason = (reason + "; " if reason else "") + \
                    "power: none, every comparison rests on one training run a side (no seed spread to judge by)"
            if seen and key == "A6":  # an equivalence test: what matters is how finely a drop is resolved
                res = [(c.z + _quantile(POWER, c.df)) * c.se for c in voting if not c.one_run]
                reason = (reason + "; " if reason else "") + \
                    f"power: each comparison resolves a drop to {100 * min(res):.1f}-{100 * max(res):.1f} pp " \
                    f"({100 * POWER:g}%), against the {100 * THRESHOLDS['targeted_margin']:g} pp margin"
            elif seen:
                lo, hi = min(seen), max(seen)
                span = f"{100 * lo:.1f} pp" if round(100 * lo, 1) == round(100 * hi, 1) else \
                    f"{100 * lo:.1f}-{100 * hi:.1f} pp"
                reason = (reason + "; " if reason else "") + \
                    f"power: an improvement of {span} would be found with {100 * POWER:g}% probability" + \
                    (" by each comparison (by the claim, which needs them all, with less)" if len(seen) > 1 else "")
        models = sorted({m for c in rows for m in c.models})
        out.append(ClaimResult(key, claim, measurement.format(**fmt), verdict, reason, rows, models))
    return out


def _below_min_effect(c: Comparison) -> str:
    """A gain clear of zero but ruled out to reach min_effect reads "not supported" (or, on one
    run, that by the numbers): said beside it, so that "not supported" is not read as "no gain"."""
    lo, _ = c.interval
    if c.cost or c.arms or NOT_SUPPORTED not in (c.verdict, c.by_numbers) or not lo > 0:
        return ""
    return f"; a gain of {100 * c.diff:.1f} pp, its interval clear of zero, but under the " \
           f"{100 * THRESHOLDS['min_effect']:g} pp a gain must reach to count as an improvement (min_effect)"


def arm_flips(rows: Sequence[Comparison]) -> str:
    """Where the fixed-lr arm and the loss x T arm of one family reach different verdicts on a
    metric. The fixed-lr arm changes both the step size (1/T on the logit gradient) and its
    direction, the loss x T arm only the direction (science.md, claim A); but two verdicts that
    differ are a difference in significance, not a difference between the arms shown (the arms
    may rest on other temperatures, best of 3 against best of 1): arms_at_top tests that directly,
    where the arms share a temperature, and arms_note says what it found."""
    by_arm: Dict[Tuple[str, str], Dict[bool, List[Comparison]]] = {}
    for c in rows:
        if c.decides and c.verdict != NOT_MEASURED:
            lrt = c.family.endswith(" (loss x T)") or " (loss x T) [" in c.family
            by_arm.setdefault((c.family.replace(" (loss x T)", ""), c.metric), {}).setdefault(lrt, []).append(c)
    # an arm with a deciding comparison at each of several temperatures (A6) is summarised over
    # them all, as the claim is: its last temperature alone hid a failure at another
    arms = {k: {lrt: _arm_verdict(cs) for lrt, cs in v.items()} for k, v in by_arm.items()}
    both = {k: v for k, v in arms.items() if len(v) == 2}
    out = [f"{fam} {metric}: {' '.join(v[False])} at fixed lr, {' '.join(v[True])} under loss x T"
           for (fam, metric), v in both.items() if v[False][0] != v[True][0]]
    if out:
        return "the two arms' verdicts differ (" + "; ".join(out) + "; a difference of verdicts, not a " \
               "difference between the arms shown)"
    # agreement is a finding too: the effect (or its absence) does not ride on the step size alone;
    # two inconclusive arms show neither, so they are said to be alike, not to agree
    same = {v[False][0]: [] for v in both.values()}
    for (_, metric), v in both.items():
        same[v[False][0]].append(metric)
    return "; ".join((f"the fixed-lr and loss x T arms agree on {', '.join(sorted(set(ms)))}" if verdict != INCONCLUSIVE
                      else f"both arms inconclusive on {', '.join(sorted(set(ms)))}")
                     for verdict, ms in same.items())


def _arm_verdict(cs: Sequence[Comparison]) -> Tuple[str, ...]:
    """An arm's verdict on a metric, and the temperatures it rests on where it has several
    (every one must pass: _every_temperature)."""
    if len(cs) == 1:
        return (cs[0].verdict,)
    v = _every_temperature(cs)[0]
    odd = [c for c in cs if c.verdict == (INCONCLUSIVE if v == INCONCLUSIVE else NOT_SUPPORTED)]
    return (v,) + ((f"(at T={', '.join(f'{c.candidate_T:g}' for c in odd)})",) if v != SUPPORTED and odd else ())


def arms_note(rows: Sequence[Comparison]) -> str:
    """The arms compared at their highest shared temperature (arms_at_top): what the 1/T step
    itself does, beside arm_flips' verdicts."""
    out = []
    for c in rows:
        if not c.arms:
            continue
        lo, hi = c.interval
        said = f"{c.family} {c.metric} at T={c.candidate_T:g}: loss x T {100 * c.diff:+.1f} pp against the fixed lr " \
               f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
        said += (": the 1/T step costs accuracy there" if lo > 0 else ": the 1/T step helps there" if hi < 0
                 else ": no difference shown")
        out.append(said + (f", on one training run an arm ({NOT_ESTIMATED})" if c.one_run else ""))
    return ("the arms at their highest shared temperature (" + "; ".join(out) + ")") if out else ""


def claims_from_store(store) -> List[ClaimResult]:
    tidy = store.table()
    bits = store.bits_table()
    latest = latest_runs(tidy)
    return evaluate_claims(tidy, leaderboard(tidy, bits, latest), bits, latest)


def format_text(results: Sequence[ClaimResult]) -> str:
    """The verdicts as plain text (the HTML page shows the same from the same objects)."""
    lines = []
    for r in results:
        lines.append(f"{r.key}: {r.verdict.upper()} - {r.claim}" + (f" ({r.reason})" if r.reason else ""))
        for c in r.comparisons:
            if not np.isfinite(c.diff):
                lines.append(f"    {c.family}: {c.note}")
                continue
            lines.append(f"    {c.family:28s} {c.metric:22s} {c.baseline} {100 * c.baseline_value:5.1f}% -> "
                         f"{c.candidate} {100 * c.candidate_value:5.1f}%: {100 * c.diff:+5.1f} +- {100 * c.se:.1f} pp "
                         f"[{100 * c.interval[0]:+.1f}, {100 * c.interval[1]:+.1f}] ({c.critical}, n {c.n}, "
                         f"{c.se_kind}; detectable {100 * c.detectable:.1f} pp) => {c.verdict}"
                         + (f"; {c.note}" if c.note else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = Parser(prog="python -m bench.report.claims",
               description="Claim-by-claim verdicts from a results store (measures nothing).")
    p.add_argument("--results", type=user_path, default="results/quick", help="results folder (default results/quick)")
    args = p.parse_args(argv)
    store = ResultStore(Path(args.results))
    if not store.has_records():
        print(f"error: no results in {args.results}/records: pass --results DIR of a run (or run `make bench` first)",
              file=sys.stderr)
        return 2

    def show() -> int:
        print(format_text(claims_from_store(store)))
        return 0
    return finish(show, "nothing was written (it only reads the store); rerun the same command")


if __name__ == "__main__":
    sys.exit(main())
