"""The claim verdicts (bench/report/claims.py): the verdict rules and thresholds, each claim's
comparisons, on real result stores built here with ResultStore.put (tests/builders.py), and on
the committed results/quick (read only)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.report.claims import (CLAIMS, INCONCLUSIVE, NOT_MEASURED, NOT_SUPPORTED, POWER, SUPPORTED, THRESHOLDS,
                                 VERDICTS, WEAK_ONLY, Noise, banerjee_z, claims_from_store, combine, evaluate_claims,
                                 improvement_verdict)
from bench.report.tables import leaderboard
from bench.store import ResultStore
from tests.builders import BENCH_CORRUPTIONS, StoreBuilder, sweep_store

ROOT = Path(__file__).resolve().parents[1]


def verdict_of(claims, key):
    return next(c for c in claims if c.key == key)


class TwoSeeds(StoreBuilder):
    """A StoreBuilder that trains every model ``seeds`` times, alike (``name``, ``name_s1``, ...,
    the seed before a checkpoint's "@"): a verdict on one training run a side is at most
    inconclusive, so the stores whose verdicts a test reads give each temperature seeds."""
    seeds = 2

    def model(self, name, T, clean, *, seed=0, **kw):
        super().model(name, T, clean, seed=seed, **kw)
        stem, at, ckpt = name.partition("@")
        for s in range(1, self.seeds):
            super().model(f"{stem}_s{seed + s}{at}{ckpt}", T, clean, seed=seed + s, **kw)
        return self


class ThreeSeeds(TwoSeeds):
    seeds = 3


def floor_noise(c, n=1000, seeds=2):
    """The Noise of a comparison between seeds that agree exactly: the seed part is the floor of
    two values one image apart (1/(2 n^2)) over the seeds, at seeds - 1 degrees of freedom."""
    var = 1 / (2 * n * n) / seeds
    return Noise(math.sqrt(c.se ** 2 - var), ((var, seeds - 1),))


# ---------------------------------------------------------------------------------------------
# Claims: each verdict, on stores built here


def test_verdict_vocabulary_is_fixed():
    assert VERDICTS == ("supported", "not supported", "supported only under a weak attack", "inconclusive",
                        "not measured")


def every_claim_store(path):
    """One small store with models for every claim: a fixed-lr sweep with shifts and targeted
    attacks, an adversarially trained pair, and a BN-head family with T*."""
    b = StoreBuilder(path, n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0, mca=0.50, nat=0.50, worst_grid=0.05, cifar101=0.50)
    b.model("fastnet_T5", 5, 0.70, pgd_raw=0.20, pgd_scaled=0.10, targeted_raw=0.01, mca=0.60, nat=0.60,
            worst_grid=0.10, cifar101=0.60)
    b.model("resnet18_T1_at@best", 1, 0.80, arch="resnet18", regime="at", checkpoint="best", pgd_raw=0.45,
            pgd_scaled=0.45)
    b.model("resnet18_T5_at@best", 5, 0.82, arch="resnet18", regime="at", checkpoint="best", pgd_raw=0.55,
            pgd_scaled=0.52)
    b.model("resnet18_T1", 1, 0.80, arch="resnet18", feature_dim=512)
    b.model("resnet18_bn_T1", 1, 0.78, arch="resnet18", head="bn", feature_dim=512)
    b.model("resnet18_bn_Tauto", 11.67, 0.86, arch="resnet18", head="bn", feature_dim=512)
    b.model("resnet18_bn_T20", 20, 0.84, arch="resnet18", head="bn", feature_dim=512)
    return b


def test_every_claim_gets_a_verdict(tmp_path):
    """Every claim of CLAIMS is evaluated, in order, and measured where its models are in the store."""
    b = every_claim_store(tmp_path)
    models = set(b.tables()[1].model)
    claims = evaluate_claims(*b.tables())
    assert [c.key for c in claims] == list(CLAIMS)
    for c in claims:
        assert c.verdict in VERDICTS and c.verdict != NOT_MEASURED, (c.key, c.verdict, c.reason)
        assert c.comparisons and set(c.models) <= models and c.claim == CLAIMS[c.key][0]


def a1_store(path, T, clean):
    """T=1 at 60% clean accuracy against one other temperature (nested per-image bits), two seeds each."""
    return TwoSeeds(path, n=1000).model("fastnet_T1", 1, 0.60).model(f"fastnet_T{T:g}", T, clean).tables()


def a6_store(path, T, targeted_raw):
    """T=1, whose targeted attack always succeeds, against a high T where it leaves targeted_raw."""
    b = TwoSeeds(path, n=1000).model("fastnet_T1", 1, 0.60, targeted_raw=0.0)
    return b.model(f"fastnet_T{T:g}", T, 0.60, pgd_raw=max(targeted_raw, 0.2), targeted_raw=targeted_raw).tables()


def b_near_1_store(path, rival, seeded=TwoSeeds):
    """M = 64's BN head: T* = 1.085 and T=1 (both heads) at 82%, T=2 at ``rival``."""
    b = seeded(path, n=1000).model("fastnet_T1", 1, 0.82).model("fastnet_bn_T1", 1, 0.82, head="bn")
    return b.model("fastnet_bn_Tauto", 1.085, 0.82, head="bn").model("fastnet_bn_T2", 2, rival, head="bn").tables()


# threshold: (another value, a store, the claim it moves, verdict at the default, verdict at the other value)
THRESHOLD_CASES = {
    # +3 pp on 1000 paired images: z*se is 1 pp at z=1.96, 3.8 pp at alpha=1e-12 (z=7.1)
    "alpha": (1e-12, lambda p: a1_store(p, 2, 0.63), "A1", SUPPORTED, INCONCLUSIVE),
    "min_effect": (0.05, lambda p: a1_store(p, 2, 0.63), "A1", SUPPORTED, NOT_SUPPORTED),
    "moderate_T_max": (50.0, lambda p: a1_store(p, 20, 0.70), "A1", NOT_MEASURED, SUPPORTED),
    "high_T_min": (20.0, lambda p: a6_store(p, 10, 0.01), "A6", SUPPORTED, NOT_MEASURED),
    "targeted_margin": (0.9, lambda p: a6_store(p, 10, 0.40), "A6", NOT_SUPPORTED, SUPPORTED),
    # T* = 1.085 no longer T=1's: T* ties T=1, so the gain the claim then asks of it is ruled out
    # (three seeds: B's failure side is held to Bonferroni over three tests, 17 se at two seeds' df 1)
    "tstar_near_1": (1.05, lambda p: b_near_1_store(p, 0.80, ThreeSeeds), "B", SUPPORTED, NOT_SUPPORTED),
}


def test_every_threshold_has_a_case():
    assert set(THRESHOLD_CASES) == set(THRESHOLDS)


@pytest.mark.parametrize("key", list(THRESHOLD_CASES))
def test_every_threshold_moves_a_verdict(tmp_path, monkeypatch, key):
    """Each threshold is read where the verdicts are made: moving it alone flips a verdict."""
    value, store, claim, at_default, moved = THRESHOLD_CASES[key]
    tables = store(tmp_path)
    assert verdict_of(evaluate_claims(*tables), claim).verdict == at_default
    monkeypatch.setitem(THRESHOLDS, key, value)
    assert verdict_of(evaluate_claims(*tables), claim).verdict == moved


def test_improvement_rule():
    z = 1.96
    assert improvement_verdict(0.10, 0.01, z) == SUPPORTED
    assert improvement_verdict(-0.10, 0.01, z) == NOT_SUPPORTED
    assert improvement_verdict(0.0, 0.001, z) == NOT_SUPPORTED  # precise, and no gain
    assert improvement_verdict(0.01, 0.01, z) == INCONCLUSIVE  # within noise
    assert improvement_verdict(0.005, 0.0001, z) == NOT_SUPPORTED  # real, but a gain of min_effect is ruled out
    assert improvement_verdict(0.015, 0.01, z) == INCONCLUSIVE  # a gain of min_effect is neither shown nor ruled out
    assert improvement_verdict(float("nan"), 0.01, z) == NOT_MEASURED
    # three seeds gaining 2, 29 and 29 images of 2,000 (60 in all) gain 1 pp; their float mean is 0.00999...
    gain = sum(a / 2000 - 1500 / 2000 for a in (1502, 1529, 1529)) / 3
    assert gain < 0.01 and improvement_verdict(gain, 0.002, z) == SUPPORTED


def test_combine():
    assert combine([SUPPORTED, SUPPORTED, NOT_MEASURED]) == (SUPPORTED, "")
    assert combine([SUPPORTED, WEAK_ONLY])[0] == WEAK_ONLY
    assert combine([SUPPORTED, NOT_SUPPORTED])[0] == INCONCLUSIVE
    assert combine([NOT_MEASURED])[0] == NOT_MEASURED
    assert combine([])[0] == NOT_MEASURED


def test_a1_supported_paired_over_images(tmp_path):
    b = TwoSeeds(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70).model("fastnet_T50", 50, 0.30)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    assert a1.verdict == SUPPORTED
    c, cost = a1.comparisons
    assert (c.baseline, c.candidate, c.candidate_T) == ("fastnet_T1 +1 seeds", "fastnet_T2 +1 seeds", 2.0)
    # ... T=50 is not "moderate", but it is the sweep's worst: shown as the cost side, a loss, not voting
    assert (cost.candidate, cost.cost, cost.decides, cost.is_loss) == ("fastnet_T50 +1 seeds", True, False, True)
    assert math.isclose(cost.diff, -0.30) and "the worst of 2 temperatures" in cost.note
    assert c.se_kind == "paired on seed means + seeds (2 vs 2)" and c.n == 1000  # images: the seeds saw the same
    # nested per-image bits: 100 of 1000 images differ, all in the candidate's favour; the seeds
    # agree, so their part is the floor's
    paired = np.std([1] * 100 + [0] * 900, ddof=1) / math.sqrt(1000)
    assert math.isclose(c.diff, 0.10) and math.isclose(c.se, math.hypot(paired, 1 / 2000))
    assert math.isclose(c.z, banerjee_z(1, floor_noise(c)))  # one candidate temperature: no correction


def test_a1_not_supported_and_inconclusive(tmp_path):
    b = TwoSeeds(tmp_path / "worse", n=1000)
    b.model("fastnet_T1", 1, 0.70).model("fastnet_T2", 2, 0.60).model("fastnet_T5", 5, 0.65)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    assert a1.verdict == NOT_SUPPORTED
    assert a1.comparisons[0].candidate == "fastnet_T5 +1 seeds"  # the best of the two
    assert a1.comparisons[0].z > 2.2  # Bonferroni for the best of 2
    b = StoreBuilder(tmp_path / "noise", n=100)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.62)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    assert a1.verdict == INCONCLUSIVE
    # what the images alone could have seen: (z + z_power) se; but one training run a side can
    # find nothing (at most inconclusive), so the reason claims no power for it
    (c,) = a1.comparisons
    assert math.isclose(c.detectable, (1.96 + 0.8416) * c.se, rel_tol=1e-3) and c.detectable > c.diff
    lo, hi = c.interval
    assert lo < 0 < c.diff < hi and math.isclose(hi - lo, 2 * c.z * c.se)
    assert "would be found" not in a1.reason and "power: none, every comparison rests on one training run" \
        in a1.reason
    b = TwoSeeds(tmp_path / "seeded", n=100)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.62)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    (c,) = a1.comparisons
    assert a1.verdict == INCONCLUSIVE and c.detectable > c.diff
    assert f"{100 * c.detectable:.1f} pp would be found with 80% probability" in a1.reason


def test_detectable_effect_is_found_with_the_stated_power():
    """Paired per-image differences with a true improvement equal to the detectable effect are
    called supported in about POWER of repeated experiments (simulated: 2,000 experiments)."""
    rng = np.random.default_rng(0)
    n, p_flip = 1000, 0.10  # 10% of images differ between the two models
    se = math.sqrt(p_flip / n)  # sd of a +-1/0 difference with mean ~0, over sqrt(n)
    effect = (1.96 + 0.8416) * se  # what Comparison.detectable says for this se at z = 1.96
    up = (p_flip + effect) / 2  # P(candidate right, baseline wrong); P(the reverse) = up - effect
    d = rng.choice([1, -1, 0], size=(2000, n), p=[up, up - effect, 1 - 2 * up + effect])
    diff, sd = d.mean(1), d.std(1, ddof=1) / math.sqrt(n)
    found = np.mean([improvement_verdict(x, s, 1.96) == SUPPORTED for x, s in zip(diff, sd)])
    assert abs(found - POWER) < 0.04, found


def test_a4_supported_only_under_a_weak_attack(tmp_path):
    """The masking trap: CE-PGD on raw logits reports robustness at high T, robust_min does not."""
    b = TwoSeeds(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.62, pgd_raw=0.0, pgd_scaled=0.0)
    b.model("fastnet_T50_lrT", 50, 0.58, lr_scale=True, pgd_raw=0.22, pgd_scaled=0.0, saturated=0.75, zero_grad=0.18)
    a4 = verdict_of(evaluate_claims(*b.tables()), "A4")
    assert a4.verdict == WEAK_ONLY
    strong = next(c for c in a4.comparisons if c.metric == "robust_min")
    weak = next(c for c in a4.comparisons if c.metric == "pgd_raw@8/255")
    assert strong.decides and not weak.decides
    assert strong.baseline == "fastnet_T1 +1 seeds"  # the loss-x-T arm compares with the fixed-lr T=1 model
    assert weak.verdict == SUPPORTED and math.isclose(weak.diff, 0.22)
    assert "clean accuracy 58.0% at T=50" in strong.note


def test_a4_robust_min_of_a_likely_masked_model_supports_nothing(tmp_path):
    """robust_min above T=1's on a model the audit calls likely masked (saturated softmax, zero
    gradients, a CE gap): an upper bound, so robust_min does not support the claim."""
    b = TwoSeeds(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.62, pgd_raw=0.0, pgd_scaled=0.0)
    b.model("fastnet_T50_lrT", 50, 0.58, lr_scale=True, pgd_raw=0.30, pgd_scaled=0.12, saturated=0.75,
            zero_grad=0.18)
    claims = evaluate_claims(*b.tables())
    strong = next(c for c in verdict_of(claims, "A4").comparisons if c.metric == "robust_min")
    assert math.isclose(strong.diff, 0.12) and strong.diff - strong.z * strong.se > 0  # clear, by the numbers
    # not supported by robust_min; CE-PGD on raw logits supports it: the weak-attack verdict
    assert strong.verdict == WEAK_ONLY and "masking audit says 'likely' for fastnet_T50_lrT" in strong.note
    assert verdict_of(claims, "A4").verdict == WEAK_ONLY


def test_a4_supported_under_robust_min(tmp_path):
    b = TwoSeeds(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.62).model("fastnet_T5", 5, 0.60, pgd_raw=0.30, pgd_scaled=0.25, square=0.24)
    claims = evaluate_claims(*b.tables())
    a4 = verdict_of(claims, "A4")
    assert a4.verdict == SUPPORTED
    strong = next(c for c in a4.comparisons if c.metric == "robust_min")
    assert math.isclose(strong.candidate_value, 0.24)  # Square was the strongest attack
    assert strong.se_kind.startswith("paired")
    # what the audit of the two models could not check (no eps sweep here), said with the verdict
    board = b.tables()[1].set_index("model")
    gap = board.loc["fastnet_T1", "masking_unchecked"]
    assert "eps sweep" in gap and board.loc["fastnet_T5", "masking_unchecked"] == gap
    assert f"the masking audit had no evidence for {gap} on fastnet_T1, fastnet_T1_s1, fastnet_T5, fastnet_T5_s1" \
        in strong.note, strong.note


def test_a5_and_b_not_measured_without_their_models(tmp_path):
    claims = evaluate_claims(*sweep_store(tmp_path).tables())
    assert verdict_of(claims, "A5").verdict == NOT_MEASURED
    assert "adversarially trained" in verdict_of(claims, "A5").reason
    assert verdict_of(claims, "B").verdict == NOT_MEASURED
    assert "bn_Tauto" in verdict_of(claims, "B").reason
    a3 = verdict_of(claims, "A3")  # no CIFAR-10.1 here: said so, and the other metrics decide
    missing = [c for c in a3.comparisons if c.metric == "cifar10.1"]
    assert missing and missing[0].verdict == NOT_MEASURED
    assert a3.verdict != NOT_MEASURED


def test_a5_adversarial_training_families(tmp_path):
    b = TwoSeeds(tmp_path, n=1000)
    b.model("resnet18_T1_at@best", 1, 0.80, arch="resnet18", regime="at", checkpoint="best", pgd_raw=0.45,
            pgd_scaled=0.45, square=0.42)
    b.model("resnet18_T5_at@best", 5, 0.82, arch="resnet18", regime="at", checkpoint="best", pgd_raw=0.55,
            pgd_scaled=0.52, square=0.50)
    b.model("resnet18_T1", 1, 0.93, arch="resnet18")
    claims = evaluate_claims(*b.tables())
    a5 = verdict_of(claims, "A5")
    assert a5.verdict == SUPPORTED
    assert {c.family for c in a5.comparisons} == {"resnet18 at@best"}
    assert all("_at" not in c.candidate for c in verdict_of(claims, "A4").comparisons)


def test_a2_binomial_and_a3_supported(tmp_path):
    b = TwoSeeds(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.62, mca=0.50, nat=0.50, worst_grid=0.05, cifar101=0.50)
    b.model("fastnet_T5", 5, 0.63, mca=0.51, nat=0.70, worst_grid=0.30, cifar101=0.60)
    claims = evaluate_claims(*b.tables())
    a2 = verdict_of(claims, "A2")
    (c,) = a2.comparisons
    assert c.metric == "mCA" and c.se_kind.startswith("binomial") and c.n == 500  # the corruption subset's size
    assert a2.verdict == INCONCLUSIVE  # +1 pp on 500 images is noise
    assert "mCE" in c.note
    a3 = verdict_of(claims, "A3")
    assert a3.verdict == SUPPORTED
    assert {c.metric for c in a3.comparisons} == {"cifar10.1", "nat_mean", "nat_worst_grid"}


def test_a2_shows_mce_and_the_drop_as_means_over_the_seeds_it_averages(tmp_path):
    """Three seeds a temperature: the note's mCE and relative drop are each side's seed means,
    beside the seed-averaged mCA (the first seed's alone said 100.0% where the mean is 80.0%)."""
    b = StoreBuilder(tmp_path, n=1000)
    for s, (clean, mca) in enumerate([(0.80, 0.50), (0.70, 0.60), (0.60, 0.70)]):
        suffix = f"_s{s}" if s else ""
        b.model(f"fastnet_T1{suffix}", 1, 0.80, seed=s, mca=0.50)
        b.model(f"fastnet_T5{suffix}", 5, clean, seed=s, mca=mca)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A2").comparisons
    assert c.baseline == "fastnet_T1 +2 seeds" and c.candidate_value == pytest.approx(0.60)
    # mCE per seed against its own T=1 seed: 0.5/0.5, 0.4/0.5, 0.3/0.5; drop (0.8-0.5)/0.8, 1/7, -1/6
    assert "mCE 100.0% at T=1, mCE 80.0% at T=5" in c.note
    assert f"c_rel_drop 37.5% at T=1, c_rel_drop {100 * (0.375 + 1 / 7 - 1 / 6) / 3:.1f}% at T=5" in c.note
    assert "means over each side's seeds" in c.note


def test_a2_compares_mca_only_over_the_same_corruption_cells(tmp_path):
    """T=5 corrupted at severity 1 alone has the higher mCA (90% against T=1's 60% over severities
    1 and 5): a comparison of two means over other cells, which does not count; T=2, measured as
    T=1 was, is the family's comparison. With no comparable temperature the claim is not measured,
    and says why."""
    def corrupt(b, name, by_severity):
        cells = [("none", 0, 0.80)] + [(c, s, a) for c in BENCH_CORRUPTIONS for s, a in by_severity.items()]
        for c, sev, value in cells:
            b._put(b.specs[name], "corruption", "corruption", "none", {"accuracy": value}, n=500,
                   params={"corruption": c, "severity": sev, "source": "cifar10c-generated"},
                   source="cifar10c-generated", corruption=c, severity=sev)

    b = StoreBuilder(tmp_path / "mixed", n=1000)
    for name, T, cells in (("fastnet_T1", 1, {1: 0.70, 5: 0.50}), ("fastnet_T2", 2, {1: 0.71, 5: 0.51}),
                           ("fastnet_T5", 5, {1: 0.90})):
        b.model(name, T, 0.80)
        corrupt(b, name, cells)
    a2 = verdict_of(evaluate_claims(*b.tables()), "A2")
    best = next(c for c in a2.comparisons if c.decides)
    assert best.candidate_T == 2 and best.candidate_value == pytest.approx(0.61)
    assert "not compared, T=5 against T=1: other corruption cells" in best.note
    assert "severities 1,5" in best.note and "severities 1 (" in best.note
    assert a2.verdict == INCONCLUSIVE

    b = StoreBuilder(tmp_path / "apart", n=1000)
    for name, T, cells in (("fastnet_T1", 1, {1: 0.70, 5: 0.50}), ("fastnet_T5", 5, {1: 0.90})):
        b.model(name, T, 0.80)
        corrupt(b, name, cells)
    a2 = verdict_of(evaluate_claims(*b.tables()), "A2")
    (c,) = a2.comparisons
    assert c.verdict == NOT_MEASURED and not c.decides and "other corruption cells" in c.note
    assert a2.verdict == NOT_MEASURED and "that can be compared" in a2.reason


def test_a6_targeted_attacks(tmp_path):
    b = TwoSeeds(tmp_path / "still", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T10", 10, 0.60, pgd_raw=0.20, targeted_raw=0.01)
    a6 = verdict_of(evaluate_claims(*b.tables()), "A6")
    assert a6.verdict == SUPPORTED
    assert a6.comparisons[0].metric == "target hits (raw)"
    b = TwoSeeds(tmp_path / "fails", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T10", 10, 0.60, pgd_raw=0.40, targeted_raw=0.40)
    assert verdict_of(evaluate_claims(*b.tables()), "A6").verdict == NOT_SUPPORTED


def test_a6_reads_target_hits_not_misclassifications(tmp_path):
    """Every point misclassified at T=10 as at T=1, but only a third of them into the target
    class: targeted attacks do not "still succeed"; a store whose targeted records do not count
    their hits (before revision 3) does not measure the claim."""
    b = TwoSeeds(tmp_path / "hits", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T10", 10, 0.60, pgd_raw=0.20, targeted_raw=0.0,
                                                          target_hits=0.30)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A6").comparisons
    assert c.verdict == NOT_SUPPORTED and math.isclose(c.diff, -0.70)
    b = StoreBuilder(tmp_path / "old", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0, target_hits=None)
    b.model("fastnet_T10", 10, 0.60, pgd_raw=0.20, targeted_raw=0.0, target_hits=None)
    a6 = verdict_of(evaluate_claims(*b.tables()), "A6")
    assert a6.verdict == NOT_MEASURED and "revision 3" in a6.reason


def test_a6_pools_the_seeds_of_each_temperature(tmp_path):
    """One comparison per temperature, its hits pooled over the seeds (one seed's failure is not
    hidden behind a name that says "+1 seeds"), its interval widened by the seeds' spread: two
    seeds that disagree as much as 1/6 and 1 leave the claim open; two that agree do not."""
    b = StoreBuilder(tmp_path / "apart", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T1_s1", 1, 0.60, targeted_raw=0.0, seed=1)
    b.model("fastnet_T10", 10, 0.60, targeted_raw=0.0).model("fastnet_T10_s1", 10, 0.60, targeted_raw=0.50, seed=1)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A6").comparisons
    assert c.candidate == "fastnet_T10 +1 seeds" and c.baseline == "fastnet_T1 +1 seeds"
    # the seeds attacked the same points: n is one seed's 600 (the binomial part too), the note has both
    assert c.n == 600 and "of the 1200 correctly classified points over 2 seeds" in c.note
    assert c.se_kind == "binomial, hits pooled over the seeds + seeds (2 vs 2)" and math.isfinite(c.df)
    # success 1 - 0.50/0.60 = 1/6 on seed 1, 1 on seed 0: pooled 7/12
    assert math.isclose(c.diff, 7 / 12 - 1, abs_tol=0.01) and c.verdict == INCONCLUSIVE
    a6 = verdict_of(evaluate_claims(*b.tables()), "A6")
    assert "power: each comparison resolves a drop to" in a6.reason and "against the 10 pp margin" in a6.reason
    b = StoreBuilder(tmp_path / "agree", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T1_s1", 1, 0.60, targeted_raw=0.0, seed=1)
    b.model("fastnet_T10", 10, 0.60, targeted_raw=0.30).model("fastnet_T10_s1", 10, 0.60, targeted_raw=0.31, seed=1)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A6").comparisons
    assert c.verdict == NOT_SUPPORTED and math.isclose(c.diff, (0.5 + 1 - 0.31 / 0.6) / 2 - 1, abs_tol=0.001)


def test_b_tstar_with_bn_head(tmp_path):
    def store(path, star, rival):
        b = TwoSeeds(path, n=1000)
        b.model("resnet18_T1", 1, 0.80, arch="resnet18", feature_dim=512)
        b.model("resnet18_bn_T1", 1, 0.78, arch="resnet18", head="bn", feature_dim=512)
        b.model("resnet18_bn_Tauto", 11.67, star, arch="resnet18", head="bn", feature_dim=512)
        b.model("resnet18_bn_T20", 20, rival, arch="resnet18", head="bn", feature_dim=512)
        return b.tables()
    b_ok = verdict_of(evaluate_claims(*store(tmp_path / "ok", 0.86, 0.84)), "B")
    assert b_ok.verdict == SUPPORTED
    assert len(b_ok.comparisons) == 3 and sum(c.decides for c in b_ok.comparisons) == 1
    assert b_ok.comparisons[0].candidate == "resnet18_bn_Tauto +1 seeds"
    b_rival = verdict_of(evaluate_claims(*store(tmp_path / "rival", 0.86, 0.92)), "B")
    assert b_rival.verdict == NOT_SUPPORTED
    # T* is not used as an "elevated T" candidate elsewhere
    a1 = verdict_of(evaluate_claims(*store(tmp_path / "ok2", 0.86, 0.84)), "A1")
    assert all("Tauto" not in c.candidate for c in a1.comparisons)


def test_b_with_tstar_near_1_stands_on_the_other_temperatures(tmp_path):
    """M = 64 puts T* at 1.085: T=1 is T* to the sweep's resolution, and "T* beats T=1 by a
    point" is not what the claim predicts there. The T=1 comparisons are shown, not voting; the
    best other temperature against T* decides (a gain ruled out: supported; found: not)."""
    def claim(path, rival):
        return verdict_of(evaluate_claims(*b_near_1_store(path, rival)), "B")
    flat = claim(tmp_path / "flat", 0.80)
    assert flat.verdict == SUPPORTED
    t1, plain, rival = flat.comparisons
    assert t1.verdict == plain.verdict == NOT_SUPPORTED and not t1.decides and not plain.decides
    assert "within a factor 1.41 of 1" in t1.note and rival.decides
    assert rival.candidate == "fastnet_bn_T2 +1 seeds" and "this test alone: not supported" in rival.note
    assert claim(tmp_path / "beaten", 0.88).verdict == NOT_SUPPORTED
    assert claim(tmp_path / "close", 0.828).verdict == INCONCLUSIVE


def test_seeds_are_averaged_and_their_spread_counted(tmp_path):
    b = StoreBuilder(tmp_path, n=1000)
    for s, (c1, c2) in enumerate([(0.60, 0.70), (0.62, 0.64)]):
        suffix = f"_s{s}" if s else ""
        b.model(f"fastnet_T1{suffix}", 1, c1, seed=s).model(f"fastnet_T2{suffix}", 2, c2, seed=s)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A1").comparisons
    assert math.isclose(c.diff, 0.06) and c.n == 1000  # images: the two seeds saw the same 1000
    assert "seeds (2 vs 2)" in c.se_kind
    assert c.se > np.std([0.10, 0.02], ddof=1) / math.sqrt(2) * 0.99  # the seed spread dominates
    assert c.baseline == "fastnet_T1 +1 seeds"


def test_a_spread_from_two_seeds_is_held_to_students_t(tmp_path):
    """Two seeds agree on the sign (+10 and +6 pp) but their spread is one degree of freedom: the
    normal's 1.96 would call +8 pp supported; Banerjee's critical value, the seed part held to t
    at 1 df and the images' part to the normal, does not."""
    from scipy.stats import t
    b = StoreBuilder(tmp_path, n=1000)
    for s, (c1, c2) in enumerate([(0.60, 0.70), (0.62, 0.68)]):
        suffix = f"_s{s}" if s else ""
        b.model(f"fastnet_T1{suffix}", 1, c1, seed=s).model(f"fastnet_T2{suffix}", 2, c2, seed=s)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A1").comparisons
    var_seed = np.var([0.10, 0.06], ddof=1) / 2
    assert math.isclose(c.diff, 0.08) and c.diff - 1.96 * c.se > 0  # what the normal would support
    se_img = math.sqrt(c.se ** 2 - var_seed)
    half = math.hypot(1.959964 * se_img, t.ppf(0.975, 1) * math.sqrt(var_seed))
    assert math.isclose(c.z * c.se, half, rel_tol=1e-5) and c.z > 6
    # df: t's degrees of freedom whose 97.5% quantile is that z, printed and used for the power
    assert 1 <= c.df < 2 and math.isclose(t.ppf(0.975, c.df), c.z, rel_tol=1e-5)
    assert c.verdict == INCONCLUSIVE and c.critical.startswith("t ")
    assert math.isclose(c.detectable, (c.z + t.ppf(POWER, c.df)) * c.se, rel_tol=1e-6)
    # one seed of T=5 against the two of T=1: its seed variance is T=1's (and T=2's), pooled
    b.model("fastnet_T5", 5, 0.75)
    c5 = next(c for c in verdict_of(evaluate_claims(*b.tables()), "A1").comparisons if c.candidate_T == 5)
    pooled = (np.var([0.60, 0.62], ddof=1) + np.var([0.70, 0.68], ddof=1)) / 2 * (1 + 1 / 2)  # df 2
    assert "seed spread pooled (df 2)" in c5.se_kind and c5.df < 10
    noise = Noise(math.sqrt(c5.se ** 2 - pooled), ((pooled, 2),))
    assert c5.se > math.sqrt(pooled) and math.isclose(c5.z, banerjee_z(2, noise), rel_tol=1e-9)
    # one seed a side: no spread to estimate, the normal's critical value (and at most inconclusive)
    b = StoreBuilder(tmp_path / "one", n=1000)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A1").comparisons
    assert math.isinf(c.df) and c.critical == f"z {c.z:.2f}" and c.by_numbers == SUPPORTED


def test_a_flip_between_the_two_arms_is_named(tmp_path):
    """Fixed lr supports A1, loss x T rules it out: the claim is inconclusive and says that the
    arms differ (step size against direction)."""
    b = TwoSeeds(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70).model("fastnet_T2_lrT", 2, 0.55, lr_scale=True)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    assert {c.family: c.verdict for c in a1.comparisons if c.decides} == \
        {"fastnet": SUPPORTED, "fastnet (loss x T)": NOT_SUPPORTED}
    assert a1.verdict == INCONCLUSIVE
    assert "the two arms' verdicts differ (fastnet clean: supported at fixed lr, not supported under loss x T; " \
           "a difference of verdicts, not a difference between the arms shown)" in a1.reason
    b = TwoSeeds(tmp_path / "agree", n=1000)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70).model("fastnet_T2_lrT", 2, 0.69, lr_scale=True)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    assert a1.verdict == SUPPORTED and "verdicts differ" not in a1.reason
    assert "arms agree on clean" in a1.reason


def test_the_cost_side_and_the_arms_at_their_highest_shared_temperature(tmp_path):
    """T=50 at a fixed lr loses 8 pp of clean accuracy (two seeds), the loss x T arm's T=50 loses
    nothing: the worst temperature is shown as a loss, and the arms compared directly at T=50 say
    the 1/T step costs accuracy there; when both arms lose alike, no difference is shown. Neither
    votes."""
    b = StoreBuilder(tmp_path, n=1000)
    for s, (c1, c50, c50t) in enumerate([(0.80, 0.72, 0.80), (0.81, 0.73, 0.81)]):
        sfx = f"_s{s}" if s else ""
        b.model(f"fastnet_T1{sfx}", 1, c1, seed=s).model(f"fastnet_T2{sfx}", 2, c1, seed=s)
        b.model(f"fastnet_T50{sfx}", 50, c50, seed=s).model(f"fastnet_T50_lrT{sfx}", 50, c50t, seed=s, lr_scale=True)
        b.model(f"fastnet_T5_lrT{sfx}", 5, c1, seed=s, lr_scale=True)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    (cost,) = [c for c in a1.comparisons if c.cost]  # loss x T has no temperature below T=1
    assert (cost.family, cost.candidate_T, cost.is_loss, cost.decides) == ("fastnet", 50.0, True, False)
    assert math.isclose(cost.diff, -0.08) and "the worst of 2 temperatures" in cost.note
    (arms,) = [c for c in a1.comparisons if c.arms]
    assert (arms.baseline, arms.candidate, arms.decides) == ("fastnet_T50 +1 seeds", "fastnet_T50_lrT +1 seeds", False)
    assert math.isclose(arms.diff, 0.08) and arms.interval[0] > 0
    assert math.isclose(arms.z, banerjee_z(1, floor_noise(arms)))  # T fixed in advance: no correction for a choice
    assert ("the arms at their highest shared temperature (fastnet clean at T=50: loss x T +8.0 pp against the "
            "fixed lr" in a1.reason and "the 1/T step costs accuracy there" in a1.reason), a1.reason
    assert a1.verdict == combine([c.verdict for c in a1.comparisons if c.decides])[0] == NOT_SUPPORTED
    b = StoreBuilder(tmp_path / "alike", n=1000)
    b.model("fastnet_T1", 1, 0.80).model("fastnet_T2", 2, 0.80).model("fastnet_T20", 20, 0.60)
    b.model("fastnet_T50", 50, 0.70).model("fastnet_T50_lrT", 50, 0.70, lr_scale=True)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    (arms,) = [c for c in a1.comparisons if c.arms]
    assert arms.candidate_T == 50 and arms.diff == 0  # the highest shared T, not the fixed lr's worst (20)
    assert "loss x T +0.0 pp against the fixed lr" in a1.reason and "no difference shown" in a1.reason
    assert [c.candidate_T for c in a1.comparisons if c.cost] == [20.0, 50.0]


def test_the_command_line_refuses_a_folder_without_records(tmp_path, capsys):
    """`python -m bench.report.claims --results DIR` on a mistyped or empty folder printed every
    claim NOT MEASURED with exit code 0, and a damaged record gave a traceback: one line and
    exit code 2 now, as bench.report.publish does."""
    import subprocess
    import sys

    from bench.report.claims import main
    proc = subprocess.run([sys.executable, "-m", "bench.report.claims", "--results", str(tmp_path / "nope")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: no results in {tmp_path / 'nope'}/records")
    (tmp_path / "empty" / "records").mkdir(parents=True)
    b = every_claim_store(tmp_path / "store")
    damaged = next((tmp_path / "store" / "records").glob("*.json"))
    damaged.write_text('{"run_key": ')
    for folder, phrase in (("empty", "no results in"), ("store", f"result record {damaged} is not valid JSON")):
        assert main(["--results", str(tmp_path / folder)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and phrase in err, err
    damaged.unlink()
    assert main(["--results", str(b.store.root)]) == 0 and "A1: " in capsys.readouterr().out


def test_empty_store_gives_not_measured(tmp_path):
    b = StoreBuilder(tmp_path)
    claims = evaluate_claims(*b.tables())
    assert [c.verdict for c in claims] == [NOT_MEASURED] * 7


def test_committed_quick_results():
    """The committed results/quick, read only: every claim gets a verdict from the vocabulary, and
    every number a comparison quotes is the leaderboard's."""
    root = ROOT / "results" / "quick"
    if not (root / "records").is_dir():
        pytest.skip("results/quick is not in this checkout")
    store = ResultStore(root)
    tidy, bits = store.table(), store.bits_table()
    board = leaderboard(tidy, bits).set_index("model")
    claims = evaluate_claims(tidy, board.reset_index(), bits)
    assert [c.key for c in claims] == ["A1", "A2", "A3", "A4", "A5", "A6", "B"]
    assert all(c.verdict in VERDICTS for c in claims)
    if not tidy.regime.isin(["at", "atT1", "trades", "fat"]).any():
        assert verdict_of(claims, "A5").verdict == NOT_MEASURED
    if not tidy.model.str.contains("_Tauto").any():
        assert verdict_of(claims, "B").verdict == NOT_MEASURED
    for claim in claims:
        for c in claim.comparisons:
            if c.metric in board.columns and math.isfinite(c.diff) and "seeds" not in c.se_kind:
                assert math.isclose(c.candidate_value, board.loc[c.candidate, c.metric])
                assert math.isclose(c.baseline_value, board.loc[c.baseline, c.metric])
                assert math.isclose(c.diff, c.candidate_value - c.baseline_value)
    a4 = verdict_of(claims, "A4")
    assert a4.verdict != SUPPORTED or all(c.verdict == SUPPORTED for c in a4.comparisons if c.decides)
    assert claims_from_store(store)[0].verdict == claims[0].verdict


def test_families_do_not_cross_datasets(tmp_path):
    a = StoreBuilder(tmp_path, n=1000, dataset="cifar10")
    a.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70)
    b = StoreBuilder(tmp_path, n=1000, dataset="cifar10-jpeg75")
    b.model("fastnet_T1_s1", 1, 0.80, seed=1).model("fastnet_T2_s1", 2, 0.50, seed=1)
    a1 = verdict_of(evaluate_claims(*a.tables()), "A1")
    assert {c.family for c in a1.comparisons} == {"fastnet [cifar10]", "fastnet [cifar10-jpeg75]"}
    assert {(c.baseline, c.candidate) for c in a1.comparisons} == {("fastnet_T1", "fastnet_T2"),
                                                                   ("fastnet_T1_s1", "fastnet_T2_s1")}


def test_a_robust_min_set_on_part_of_the_images_counts_those_images(tmp_path):
    """Square on 200 of the 1,000 images sets robust_min: the binomial error of that number is
    over 200 images, not the 1,000 the other attacks ran on."""
    from bench.report.claims import Evidence
    b = StoreBuilder(tmp_path, n=1000).model("fastnet_T1", 1, 0.62, pgd_raw=0.30, pgd_scaled=0.30, margin=0.30,
                                             square=0.30, targeted_raw=0.30, targeted_scaled=0.30)
    b._put(b.specs["fastnet_T1"], "attack", "square", "any",
           {"clean_acc": 0.62, "robust_acc": 0.10, "success_rate": 0.8}, eps=8 / 255, n=200,
           params={"eps": 8 / 255, "n_queries": 5000}, positions={"eval_n": 1000, "index": list(range(0, 1000, 5))})
    tidy, board, bits = b.tables()
    ev = Evidence(tidy, board, bits)
    assert board.set_index("model").loc["fastnet_T1", "robust_min_by"] == "square/any"
    assert ev.n("fastnet_T1", "robust_min") == 200 and ev.n("fastnet_T1", "clean") == 1000


def test_seeds_measured_on_the_same_images_are_not_counted_as_more_images(tmp_path):
    """Two seeds whose per-image differences are the very same images (+1 on 4% of them): the
    images' part of the error is one seed's, not one seed's over sqrt(2) as independent images
    would give. The seeds agree to the image, which is not agreeing exactly: their part is that of
    two values one image apart (an estimated zero gave the normal's 1.96 to two seeds)."""
    b = StoreBuilder(tmp_path, n=1000)
    for s in (0, 1):
        suffix = f"_s{s}" if s else ""
        b.model(f"fastnet_T1{suffix}", 1, 0.60, seed=s).model(f"fastnet_T2{suffix}", 2, 0.64, seed=s)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A1").comparisons
    one_seed = np.std(np.r_[np.ones(40), np.zeros(960)], ddof=1) / math.sqrt(1000)
    assert math.isclose(c.diff, 0.04) and math.isclose(c.se, math.hypot(one_seed, 1 / 2000), rel_tol=1e-9)
    assert math.isfinite(c.df) and c.z > 1.96 and math.isclose(c.z, banerjee_z(1, floor_noise(c)))


def test_the_detectable_effect_clears_the_minimum_effect_then_the_power_margin(tmp_path):
    """Supported needs d - z*se > 0 and d >= min_effect: where z*se is below min_effect, the true
    effect found with probability POWER is min_effect + z_power*se, not (z + z_power)*se."""
    b = StoreBuilder(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.80).model("fastnet_T2", 2, 0.82)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A1").comparisons
    assert c.z * c.se < THRESHOLDS["min_effect"] < (c.z + 0.8416) * c.se
    assert math.isclose(c.detectable, THRESHOLDS["min_effect"] + 0.8416 * c.se, rel_tol=1e-3)


def test_b_without_a_plain_t1_model_is_at_most_inconclusive(tmp_path):
    """The claim asks T* to beat both T=1 models: beating the BN-head one alone is not support."""
    b = TwoSeeds(tmp_path, n=1000)
    b.model("resnet18_bn_T1", 1, 0.78, arch="resnet18", head="bn", feature_dim=512)
    b.model("resnet18_bn_Tauto", 11.67, 0.86, arch="resnet18", head="bn", feature_dim=512)
    b.model("resnet18_bn_T20", 20, 0.84, arch="resnet18", head="bn", feature_dim=512)
    claim = verdict_of(evaluate_claims(*b.tables()), "B")
    first = claim.comparisons[0]
    assert claim.verdict == INCONCLUSIVE and first.verdict == INCONCLUSIVE
    assert "this test alone: supported" in first.note and "without a plain T=1 model, at most inconclusive" in first.note


def test_a_bn_sweep_without_clean_records_gets_a_verdict(tmp_path):
    """The cpu store's BN-head calibration records alone (a store copied in part): claim B took the
    best rival temperature by idxmax over accuracies that were all NaN, and the report crashed."""
    import json
    import shutil
    (tmp_path / "records").mkdir()
    for path in (Path(__file__).resolve().parents[1] / "results" / "cpu" / "records").glob("*.json"):
        rec = json.loads(path.read_text())
        if rec["threat"] == "calibration" and rec["head"] == "bn":
            shutil.copyfile(path, tmp_path / "records" / path.name)
    assert len(list((tmp_path / "records").iterdir())) > 20
    assert verdict_of(claims_from_store(ResultStore(tmp_path)), "B").verdict == NOT_MEASURED


# ---------------------------------------------------------------------------------------------
# Review: one run a side, every temperature's bound, B's rival, nat_mean's transforms, the seed
# intervals' coverage, seeds on the same images, A6 over its temperatures, honest labels


def test_one_training_run_a_side_is_at_most_inconclusive(tmp_path):
    """One seed a side and none elsewhere in the family: +10 pp clear of the images' noise is one
    training run's difference, its seed-to-seed variation not estimated, so at most inconclusive;
    the effect, its interval and what the numbers alone say stay in sight. Two seeds of another
    temperature give the family a spread to pool, and the verdict stands. The weak-attack verdict
    is capped the same way, its masking story kept in the note and the reason; so are B and A6."""
    b = StoreBuilder(tmp_path / "one", n=1000)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    (c,) = a1.comparisons
    assert c.interval[0] > 0 and math.isclose(c.diff, 0.10)
    assert a1.verdict == c.verdict == INCONCLUSIVE and c.by_numbers == SUPPORTED
    assert "seed-to-seed variation not estimated, so at most inconclusive (by the numbers alone: supported)" in c.note
    assert a1.reason.startswith("1 of 1 comparisons rest on one training run")
    assert "by the numbers alone: fastnet clean supported" in a1.reason
    # a second comparison on one run that its cap leaves as it was (inconclusive by the numbers too)
    # still rests on one run: "1 of 2" read as one with a seed spread
    two = StoreBuilder(tmp_path / "two", n=1000)
    two.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70)
    two.model("fastnet_T2_lrT", 2, 0.609, lr_scale=True).model("fastnet_T1_lrT", 1, 0.60, lr_scale=True)
    both = verdict_of(evaluate_claims(*two.tables()), "A1")
    assert sum(bool(c.by_numbers) for c in both.comparisons if c.decides) == 1
    assert "every difference is within the noise; 2 of 2 comparisons rest on one training run" in both.reason
    b.model("fastnet_T5", 5, 0.60).model("fastnet_T5_s1", 5, 0.60, seed=1)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    c = a1.comparisons[0]
    assert (c.candidate, a1.verdict, c.by_numbers) == ("fastnet_T2", SUPPORTED, "")
    assert "seed spread pooled (df 1)" in c.se_kind

    b = StoreBuilder(tmp_path / "weak", n=1000)
    b.model("fastnet_T1", 1, 0.62, pgd_raw=0.0, pgd_scaled=0.0)
    b.model("fastnet_T50_lrT", 50, 0.58, lr_scale=True, pgd_raw=0.22, pgd_scaled=0.0, saturated=0.75, zero_grad=0.18)
    a4 = verdict_of(evaluate_claims(*b.tables()), "A4")
    strong = next(c for c in a4.comparisons if c.metric == "robust_min")
    assert (a4.verdict, strong.verdict, strong.by_numbers) == (INCONCLUSIVE, INCONCLUSIVE, WEAK_ONLY)
    assert "CE-PGD on raw logits: 22.0% at T=50 vs 0.0% at T=1, which robust_min does not confirm" in strong.note
    assert "by the numbers alone: fastnet (loss x T) robust_min supported only under a weak attack" in a4.reason

    b = StoreBuilder(tmp_path / "b", n=1000)
    b.model("resnet18_T1", 1, 0.80, arch="resnet18", feature_dim=512)
    b.model("resnet18_bn_T1", 1, 0.78, arch="resnet18", head="bn", feature_dim=512)
    b.model("resnet18_bn_Tauto", 11.67, 0.86, arch="resnet18", head="bn", feature_dim=512)
    b.model("resnet18_bn_T20", 20, 0.70, arch="resnet18", head="bn", feature_dim=512)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T10", 10, 0.60, pgd_raw=0.2, targeted_raw=0.01)
    claims = evaluate_claims(*b.tables())
    assert verdict_of(claims, "B").verdict == INCONCLUSIVE
    assert verdict_of(claims, "B").comparisons[0].by_numbers == SUPPORTED
    c = next(c for c in verdict_of(claims, "A6").comparisons if c.family == "fastnet")
    assert verdict_of(claims, "A6").verdict == INCONCLUSIVE and c.by_numbers == SUPPORTED


def test_not_supported_needs_every_temperatures_gain_ruled_out(tmp_path):
    """T=2 (three seeds, each 0.5 pp below its T=1 seed) has the best mean and rules a 1 pp gain
    out; T=5, one seed 1 pp below T=1's mean, takes the seeds' 2 pp spread pooled and does not.
    A gain at some temperature is not ruled out, so A1 is inconclusive, naming T=5 (the best
    mean's bound alone said not supported); without T=5 it is not supported."""
    b = StoreBuilder(tmp_path, n=1000)
    for s, c1 in enumerate((0.78, 0.80, 0.82)):
        sfx = f"_s{s}" if s else ""
        b.model(f"fastnet_T1{sfx}", 1, c1, seed=s).model(f"fastnet_T2{sfx}", 2, c1 - 0.005, seed=s)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A1").comparisons
    assert c.verdict == NOT_SUPPORTED and c.interval[1] < THRESHOLDS["min_effect"]
    b.model("fastnet_T5", 5, 0.79)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    best = next(c for c in a1.comparisons if c.decides)
    assert best.candidate_T == 2 and best.interval[1] < THRESHOLDS["min_effect"]  # its own bound rules it out
    assert best.verdict == a1.verdict == INCONCLUSIVE
    assert "a gain of 1 pp is ruled out here but not at T=5 (upper bound +" in best.note


def test_b_needs_the_rivals_gain_over_tstar_ruled_out(tmp_path):
    """T* beats both T=1 models by 10 pp in each of two seeds, but T=20, one seed level with T*'s
    mean, has the BN family's seed spread (4 pp between seeds) pooled into its error: its gain
    over T* is neither shown nor ruled out, so T* is not shown to be the best temperature:
    inconclusive (it said supported). A T=20 far below T* rules it out, and B is supported."""
    def claim(path, rival):
        b = StoreBuilder(path, n=1000)
        for s, c1 in enumerate((0.76, 0.80)):
            kw = dict(arch="resnet18", feature_dim=512, seed=s)
            sfx = f"_s{s}" if s else ""
            b.model(f"resnet18_T1{sfx}", 1, c1, **kw).model(f"resnet18_bn_T1{sfx}", 1, c1, head="bn", **kw)
            b.model(f"resnet18_bn_Tauto{sfx}", 11.67, c1 + 0.10, head="bn", **kw)
        b.model("resnet18_bn_T20", 20, rival, arch="resnet18", head="bn", feature_dim=512)
        return verdict_of(evaluate_claims(*b.tables()), "B")
    level = claim(tmp_path / "level", 0.88)
    first, plain, rival = level.comparisons
    assert "this test alone: supported" in first.note and plain.verdict == SUPPORTED
    assert rival.verdict == INCONCLUSIVE and "seed spread pooled" in rival.se_kind
    assert level.verdict == INCONCLUSIVE and "the best other temperature's gain over T* is not ruled out" in first.note
    assert claim(tmp_path / "below", 0.50).verdict == SUPPORTED


def test_a3_compares_nat_mean_only_over_the_same_transforms(tmp_path):
    """T=5 measured on translations as well as rotations, where every model does well: its
    nat_mean (70%) is a mean over other transforms than T=1's (rotations alone, 50%), the
    transforms' difference and not the models'. It is named and left out; T=2, measured as T=1
    was, is the family's comparison."""
    b = TwoSeeds(tmp_path, n=1000)
    for name, T, nat in (("fastnet_T1", 1, 0.50), ("fastnet_T2", 2, 0.51), ("fastnet_T5", 5, 0.50)):
        b.model(name, T, 0.80, nat=nat)
    for name in ("fastnet_T5", "fastnet_T5_s1"):
        for mag in (-2, 2):
            b._put(b.specs[name], "natural", "translate", "none", {"accuracy": 0.90}, n=500,
                   params={"magnitude": mag}, magnitude=mag)
    a3 = verdict_of(evaluate_claims(*b.tables()), "A3")
    (c,) = [c for c in a3.comparisons if c.metric == "nat_mean" and c.decides]
    assert c.candidate_T == 2 and c.candidate_value == pytest.approx(0.51)
    assert "not compared, T=5 against T=1: other natural transforms (" in c.note
    assert "fastnet_T1 and 1 more: rotate (2 magnitudes)" in c.note
    assert "fastnet_T5 and 1 more: rotate (2 magnitudes), translate (2 magnitudes)" in c.note


def test_seed_intervals_cover_at_their_level():
    """/tmp/rev1/cov.py's simulation through banerjee_z: an image error of sd 1 and k seeds whose
    mean errs by 1x or 4x that, the seed variance estimated from the k seeds. Each interval covers
    at least its nominal level less 1 pp, at 95% and at Bonferroni's 99%; Welch-Satterthwaite's df,
    which the claims used, covered 87% of its 95% intervals at two seeds (4x)."""
    from scipy.stats import t
    rng = np.random.default_rng(0)
    draws = 3000
    for k in (2, 3):
        for ratio in (1, 4):
            seeds = rng.normal(0, ratio * math.sqrt(k), (draws, k))
            err = rng.normal(0, 1, draws) + seeds.mean(1)
            var = seeds.var(1, ddof=1) / k
            for level_k in (1, 5):
                half = np.array([banerjee_z(level_k, Noise(1.0, ((v, k - 1),))) * math.sqrt(1 + v) for v in var])
                assert np.mean(np.abs(err) <= half) >= 1 - 0.05 / level_k - 0.01, (k, ratio, level_k)
            if (k, ratio) == (2, 4):  # the rule it replaces, on the same draws: short of 95% by 8 pp
                ws = t.ppf(0.975, (1 + var) ** 2 / var ** 2) * np.sqrt(1 + var)
                assert np.mean(np.abs(err) <= ws) < 0.90


def test_the_images_part_of_seeds_is_one_seeds_images(tmp_path):
    """mCA has no per-image bits: the two seeds a side were corrupted on the same 500 images, so
    each side's binomial error is over 500 at its seed-averaged accuracy (it was over 500 per seed
    and divided by sqrt(2), as if the second seed had seen other images). Sides with different
    numbers of seeds and per-image bits pair each image's seed means (they fell back to a
    binomial error over images x seeds)."""
    from bench.report.claims import _binomial_se
    b = TwoSeeds(tmp_path / "mca", n=1000)
    b.model("fastnet_T1", 1, 0.80, mca=0.50).model("fastnet_T5", 5, 0.80, mca=0.60)
    (c,) = [c for c in verdict_of(evaluate_claims(*b.tables()), "A2").comparisons if c.decides]
    img = math.hypot(_binomial_se(0.60, 500), _binomial_se(0.50, 500))
    assert math.isclose(c.se, math.sqrt(img ** 2 + 1 / (4 * 500 ** 2)))  # the seeds agree: the floor's part
    assert c.n == 500 and c.se_kind == "binomial on seed means + seeds (2 vs 2)"
    b = StoreBuilder(tmp_path / "uneven", n=1000)
    for s in range(3):
        b.model("fastnet_T1" + (f"_s{s}" if s else ""), 1, 0.60, seed=s)
    for s in range(2):
        b.model("fastnet_T2" + (f"_s{s}" if s else ""), 2, 0.64, seed=s)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A1").comparisons
    paired = np.std(np.r_[np.ones(40), np.zeros(960)], ddof=1) / math.sqrt(1000)
    floor = 1 / (2 * 1000 ** 2)
    assert c.se_kind == "paired on seed means + seeds (2 vs 3)"
    assert math.isclose(c.se, math.sqrt(paired ** 2 + floor / 2 + floor / 3))


def test_a6_holds_at_every_temperature(tmp_path):
    """A6 asks every T >= 5 to pass: an intersection-union test, each temperature at alpha with
    no correction for their number (five temperatures 7.5 pp down pass; Bonferroni over five
    failed them); a sixth temperature neither shown nor ruled out leaves it inconclusive, named;
    one clear failure makes it not supported, named, and the arm summary sees it (the arms'
    verdicts were each one's last temperature's: T=50 passing hid T=5 failing)."""
    def a6(path, changed=(), arms=False):
        b = ThreeSeeds(path, n=1000)
        b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0)
        for T, targeted in {5: 0.045, 10: 0.045, 20: 0.045, 50: 0.045, 100: 0.045, **dict(changed)}.items():
            b.model(f"fastnet_T{T}", T, 0.60, pgd_raw=0.2, targeted_raw=targeted)
        if arms:
            for T in (5, 50):
                b.model(f"fastnet_T{T}_lrT", T, 0.60, lr_scale=True, pgd_raw=0.2, targeted_raw=0.0)
        return verdict_of(evaluate_claims(*b.tables()), "A6")
    passing = a6(tmp_path / "pass")
    # each held at k = 1 (three seeds alike: the floor's seed part over 600 points a seed, 2 df)
    assert all(math.isclose(c.z, banerjee_z(1, floor_noise(c, n=600, seeds=3))) for c in passing.comparisons)
    assert passing.verdict == SUPPORTED and len(passing.comparisons) == 5
    assert all(math.isclose(c.diff, -0.075) and c.interval[0] > -THRESHOLDS["targeted_margin"]
               for c in passing.comparisons)
    open_ = a6(tmp_path / "open", [(200, 0.055)])
    assert open_.verdict == INCONCLUSIVE and "families/metrics disagree" not in open_.reason
    assert "still succeeds at T=5 (fastnet), T=10 (fastnet)" in open_.reason
    assert "neither shown nor ruled out at T=200 (fastnet)" in open_.reason
    failing = a6(tmp_path / "fail", [(5, 0.40)], arms=True)
    assert failing.verdict == NOT_SUPPORTED
    assert failing.reason.startswith("targeted success drops by more than the margin at T=5 (fastnet)")
    assert "the two arms' verdicts differ (fastnet target hits (raw): not supported (at T=5) at fixed lr, " \
           "supported under loss x T; a difference of verdicts" in failing.reason


def test_labels_count_images_and_pool_only_seeds(tmp_path):
    """n is one seed's images (the seeds saw the same ones, and the paired error is over their
    per-image means: "n 2000" for two seeds of 1000 said otherwise); A6 says its hits are pooled
    over seeds only where there are seeds to pool."""
    from bench.report.claims import format_text
    b = TwoSeeds(tmp_path / "seeds", n=1000)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    assert "(t " in format_text([a1]) and "n 1000, paired on seed means + seeds (2 vs 2);" in format_text([a1])
    b = StoreBuilder(tmp_path / "one", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T10", 10, 0.60, pgd_raw=0.2, targeted_raw=0.01)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A6").comparisons
    assert c.se_kind == "binomial" and "of the 600 correctly classified points (T=1: 600);" in c.note


def test_rows_shown_beside_the_deciding_one_are_held_to_the_one_run_rule(tmp_path):
    """The weak attack's row (CE-PGD on raw logits) is shown with a verdict of its own: on one
    training run a side it said "supported" beside a capped robust_min."""
    b = StoreBuilder(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.62, pgd_raw=0.01, pgd_scaled=0.01, square=0.02)
    b.model("fastnet_T50", 50, 0.55, pgd_raw=0.40, pgd_scaled=0.02, square=0.03)
    a4 = verdict_of(evaluate_claims(*b.tables()), "A4")
    assert a4.comparisons and all(c.verdict != SUPPORTED for c in a4.comparisons)
    weak = next(c for c in a4.comparisons if c.metric.startswith("pgd_raw"))
    assert weak.one_run and weak.by_numbers == SUPPORTED


def test_a_gain_clear_of_zero_under_min_effect_is_said_beside_not_supported(tmp_path):
    """+0.5 pp over T=1 on 10,000 images, two seeds a side: clear of zero, a 1 pp gain ruled out,
    so "not supported" by the harness's min_effect; the comparison says there was a gain (results/
    cpu-fulltest's M = 128 width read "not supported" beside a T* better by +0.4 pp [+0.0, +0.9])."""
    b = TwoSeeds(tmp_path, n=10000)
    b.model("fastnet_T1", 1, 0.800).model("fastnet_T2", 2, 0.805)
    (c,) = [c for c in verdict_of(evaluate_claims(*b.tables()), "A1").comparisons if c.decides]
    assert c.verdict == NOT_SUPPORTED and c.interval[0] > 0
    assert "a gain of 0.5 pp, its interval clear of zero, but under the 1 pp a gain must reach" in c.note
    b = TwoSeeds(tmp_path / "none", n=10000)
    b.model("fastnet_T1", 1, 0.800).model("fastnet_T2", 2, 0.800)
    (c,) = [c for c in verdict_of(evaluate_claims(*b.tables()), "A1").comparisons if c.decides]
    assert c.verdict == NOT_SUPPORTED and "clear of zero" not in c.note


def test_a_seed_without_the_number_is_named_not_dropped(tmp_path):
    """fastnet_T5_s1 has no worst-grid measurement (a grid still running, a job that failed): T=5
    is named and left out (it was dropped without a word, and the best of k counted one fewer
    temperature). A T=1 seed without it leaves the family's comparison not made, said (it was
    gone, and the claim said no family measured the metric)."""
    def store(path, missing):
        b = StoreBuilder(path, n=1000)
        for T, wg in ((1, 0.10), (2, 0.11), (5, 0.30)):
            for seed in (0, 1):
                name = f"fastnet_T{T}" + (f"_s{seed}" if seed else "")
                b.model(name, T, 0.80, seed=seed, worst_grid=None if name == missing else wg)
        return [c for c in verdict_of(evaluate_claims(*b.tables()), "A3").comparisons
                if c.metric == "nat_worst_grid"]
    (c,) = [c for c in store(tmp_path / "t5", "fastnet_T5_s1") if c.decides]
    assert c.candidate_T == 2 and "best of 1 temperature" in c.note
    assert "not compared, T=5: fastnet_T5_s1 without it" in c.note
    (c,) = store(tmp_path / "t1", "fastnet_T1_s1")
    assert c.family == "fastnet" and c.verdict == NOT_MEASURED and not c.decides
    assert c.note == "nat_worst_grid: T=1: fastnet_T1_s1 without it"


def test_robust_min_compares_only_over_the_same_attacks(tmp_path):
    """T=1 was also attacked with APGD-CE, which broke every image; T=10 was not, so its
    robust_min (30%, CE-PGD's) is an upper bound APGD-CE might lower: the minima are over other
    suites and are not compared (A4 read supported, +30 pp). A transfer attack on T=10 crafted on
    the T=1 model is no such gap: crafted on T=1, it is T=1's own white-box PGD."""
    def store(path, extra):
        b = TwoSeeds(path, n=1000)
        b.model("fastnet_T1", 1, 0.62).model("fastnet_T10", 10, 0.60, pgd_raw=0.30, pgd_scaled=0.30)
        metrics = {"clean_acc": 0.6, "robust_acc": 0.0, "success_rate": 1.0}
        for name in b.specs:
            if extra == "apgd" and b.specs[name]["T"] == 1:
                b._put(b.specs[name], "attack", "apgd_ce", "raw", metrics, eps=8 / 255, steps=10,
                       params={"eps": 8 / 255})
            if extra == "transfer" and b.specs[name]["T"] == 10:
                surrogate = "fastnet_T1" + ("_s1" if name.endswith("_s1") else "")
                b._put(b.specs[name], "attack", "transfer", "any", dict(metrics, robust_acc=0.30), eps=8 / 255,
                       steps=20, params={"eps": 8 / 255, "attack": "pgd", "surrogate": surrogate})
        return verdict_of(evaluate_claims(*b.tables()), "A4")
    a4 = store(tmp_path / "apgd", "apgd")
    (c,) = [c for c in a4.comparisons if c.metric == "robust_min"]
    assert c.verdict == NOT_MEASURED and not c.decides and a4.verdict == NOT_MEASURED
    assert "robust_min over other attacks (fastnet_T10, fastnet_T10_s1 without apgd_ce/raw)" in c.note
    a4 = store(tmp_path / "transfer", "transfer")
    (c,) = [c for c in a4.comparisons if c.metric == "robust_min"]
    assert c.verdict == SUPPORTED and math.isclose(c.diff, 0.30) and a4.verdict == SUPPORTED


def test_bits_pair_only_on_the_same_images(tmp_path):
    """T=2 evaluated on another subset of the test images (subset_seed 1) than T=1: as many images,
    not the same ones, so its per-image results do not pair with T=1's (they were paired)."""
    b = TwoSeeds(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.60)
    b.subset_seed = 1
    b.model("fastnet_T2", 2, 0.70)
    (c,) = [c for c in verdict_of(evaluate_claims(*b.tables()), "A1").comparisons if c.decides]
    assert c.se_kind.startswith("binomial"), c.se_kind


def test_nat_worst_grid_compares_only_over_the_same_grid(tmp_path):
    b = TwoSeeds(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.80, worst_grid=0.10).model("fastnet_T2", 2, 0.80, worst_grid=0.11)
    b.model("fastnet_T5", 5, 0.80)
    for name in ("fastnet_T5", "fastnet_T5_s1"):  # a coarser grid: a higher worst case for free
        b._put(b.specs[name], "natural", "worst_grid", "none", {"accuracy": 0.40}, n=500,
               params={"rotations": [0, 10], "shifts": [0]})
    (c,) = [c for c in verdict_of(evaluate_claims(*b.tables()), "A3").comparisons
            if c.metric == "nat_worst_grid" and c.decides]
    assert c.candidate_T == 2
    assert "not compared, T=5 against T=1: other rotation/translation grids (" in c.note


def test_b_fails_only_past_the_bar_corrected_over_its_ways_to_fail(tmp_path):
    """T* beats the plain T=1 model by 0.7 pp, three seeds, 4,000 images: a 1 pp gain ruled out at
    1.96 se (upper bound 0.96 pp), which alone made the family not supported. B can fail three
    ways (either T=1 test, or the rival), so a failure is held to the Bonferroni level over them,
    as A6's: the bound then reaches 1 pp, and the family is inconclusive."""
    b = ThreeSeeds(tmp_path, n=4000)
    b.model("resnet18_T1", 1, 0.80, arch="resnet18", feature_dim=512)
    b.model("resnet18_bn_T1", 1, 0.70, arch="resnet18", head="bn", feature_dim=512)
    b.model("resnet18_bn_Tauto", 11.67, 0.807, arch="resnet18", head="bn", feature_dim=512)
    b.model("resnet18_bn_T20", 20, 0.5, arch="resnet18", head="bn", feature_dim=512)
    claim = verdict_of(evaluate_claims(*b.tables()), "B")
    first, plain, rival = claim.comparisons
    assert plain.diff + plain.z * plain.se < THRESHOLDS["min_effect"]  # ruled out at 1.96 se alone
    assert plain.verdict == INCONCLUSIVE and "over the family's 3 ways to fail" in plain.note
    assert claim.verdict == INCONCLUSIVE
