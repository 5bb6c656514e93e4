"""The gradient-masking audit on real models: a tiny model trained here at a high T is flagged and
its T=1 twin is not; the transfer attack, the float64 recomputation and the verdict rules."""
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from attacks import make_attack
from bench.report.audit import CHECKS, THRESHOLDS, unchecked, verdict
from bench.data import stratified_indices, to_float
from bench.measure.adversarial import evaluate
from bench.measure.fp64 import fp64_check
from bench.measure.transfer import craft, evaluate_transfer
from bench.store import pack_bits, unpack_bits
from bench.tools.selfcheck import scaled_last_layer

MASKING_PROFILE = """
[recipe]
epochs = 8
batch_size = 64
lr = 0.1
[eval]
n = 200
batch_size = 200
attacks = ["pgd", "pgd_margin", "apgd_dlr"]
views = ["raw", "scaled"]
eps_sweep = ["2/255", "8/255", "32/255", "128/255"]
sweep_attacks = ["pgd"]
[attack.pgd]
steps = 10
[attack.pgd_margin]
steps = 10
[attack.apgd_dlr]
steps = 10
[[grid]]
arch = "fastnetw16"
T = [1]
[[grid]]
arch = "fastnetw16"
T = [50]
lr_scale = true
"""


@pytest.fixture(scope="module")
def masking_run(mini_root, tmp_path_factory):
    """fastnet trained here at T=1 and at T=50 with the loss x T (its logits grow ~50x: the case
    science.md measured), attacked with CE-PGD and the scale-free attacks, then the audit."""
    from bench.run import main
    base = tmp_path_factory.mktemp("masking")
    (base / "p.toml").write_text(MASKING_PROFILE)
    code = main(["--profile", str(base / "p.toml"), "--data-root", str(mini_root), "--cache", str(base / "cache"),
                 "--results", str(base / "out")])
    assert code == 0
    return pd.read_csv(base / "out" / "leaderboard.csv").set_index("model"), base / "out"


def test_high_T_model_is_flagged_and_its_T1_twin_is_not(masking_run):
    board, _ = masking_run
    hot, cold = board.loc["fastnet_T50_lrT"], board.loc["fastnet_T1"]
    # CE on the raw logits meets a saturated softmax ...
    assert hot.saturated_raw > 0.2 or hot.zero_grad_raw > 0
    assert hot.saturated_scaled == 0 and cold.saturated_raw == 0
    # ... so CE-PGD on them reports robustness the scale-free attacks and the scaled view do not
    strongest_free = min(hot["pgd_margin@8/255"], hot["apgd_dlr@8/255"])
    assert hot["pgd_raw@8/255"] - strongest_free >= 0.05
    assert hot["pgd_scaled@8/255"] < hot["pgd_raw@8/255"]
    assert hot.robust_min <= strongest_free and hot.ce_gap >= 0.05
    assert hot.masking in ("suspected", "likely") and "CE-PGD on raw logits" in hot.masking_reasons
    assert cold.masking == "none" and pd.isna(cold.masking_reasons)
    # "none" of the checks this profile measures: it runs no black-box, targeted, float64 or
    # AutoAttack check, and says so
    for row in (hot, cold):
        assert row.masking_unchecked == "black-box/transfer, targeted, float64, AutoAttack"
    # the per-image worst case never exceeds the per-attack minimum
    assert (board.robust_worst <= board.robust_min + 1e-9).all()


def test_eps_sweep_reaches_zero(masking_run):
    board, out = masking_run
    tidy = pd.read_csv(out / "results.csv")
    sweep = tidy[(tidy.threat == "pgd") & (tidy.metric == "robust_acc")]
    assert sorted(sweep.eps.unique()) == pytest.approx([2 / 255, 8 / 255, 32 / 255, 128 / 255])
    for (model, view), rows in sweep.groupby(["model", "view"]):
        curve = rows.sort_values("eps").value.to_numpy()
        assert (np.diff(curve) <= 0.02).all(), (model, view, curve)  # more eps, not more robust
    # at 128/255 PGD on the scaled view leaves no image of either model standing
    assert (board["robust_min@128/255"] <= 0.1).all()
    # robust accuracy counts only images classified right: a working attack leaves none, not chance
    # (the masked model keeps a few at 128/255 on the raw view, the T=1 twin none)
    assert board.loc["fastnet_T1", "sweep_plateau"] == 0 and board.loc["fastnet_T1", "sweep_reaches_zero"]
    assert (out / "plots" / "eps_sweep_fastnet.png").is_file()
    assert (out / "plots" / "eps_sweep_fastnet_lrT.png").is_file()
    assert (out / "plots" / "attacks_vs_T_fastnet.png").is_file()


def test_transfer_attack_from_a_surrogate(tiny_model, mini_data):
    spec, model = tiny_model
    split = mini_data.test.subset(stratified_indices(mini_data.test.labels, 100, 0))
    pgd = make_attack("pgd", {"steps": 5})
    x_adv = craft(model, split, pgd, batch_size=50, seed=0, n_classes=10)
    assert (x_adv - to_float(split.images)).abs().max() <= pgd.eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    # transferred onto the surrogate itself it is a white-box attack: as strong as PGD (the random
    # starts differ: craft attacks every image, the evaluator only the correct ones)
    m = evaluate_transfer(model, 1.0, split, x_adv, pgd, {"surrogate": spec.name}, batch_size=50)
    white = evaluate(model, 1.0, split, [pgd], ["raw"], batch_size=50)[1]
    assert m.threat == "transfer" and m.view == "any" and m.params["surrogate"] == spec.name
    assert m.metrics["robust_acc"] == pytest.approx(white.metrics["robust_acc"], abs=0.03)
    # onto a model that is not the surrogate it transfers, but less well
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    m2 = evaluate_transfer(other, 1.0, split, x_adv, pgd, {"surrogate": spec.name}, batch_size=50)
    assert m2.metrics["robust_acc"] <= m2.metrics["clean_acc"]
    assert unpack_bits(m2.bits, 100).mean() == pytest.approx(m2.metrics["robust_acc"])


def test_a_high_t_surrogate_is_crafted_on_at_its_temperature(tiny_model, mini_data):
    """A surrogate trained at high T (here the tiny model's logits x 1000, its softmax saturated):
    crafted on its raw logits, CE-PGD stalls and the transfer attack is masked by the surrogate
    itself; crafted on z/T it is the surrogate's real attack. The T=1 default is unchanged."""
    _, model = tiny_model
    split = mini_data.test.subset(stratified_indices(mini_data.test.labels, 100, 0))
    pgd = make_attack("pgd", {"steps": 5})
    hot = scaled_last_layer(model, 1000.0)

    def robust(temperature):
        x_adv = craft(hot, split, pgd, batch_size=50, seed=0, n_classes=10, temperature=temperature)
        return evaluate_transfer(model, 1.0, split, x_adv, pgd, {}, batch_size=50).metrics["robust_acc"]
    hot_raw, hot_scaled = robust(1.0), robust(1000.0)
    assert hot_scaled < hot_raw - 0.1, (hot_scaled, hot_raw)
    assert torch.equal(craft(model, split, pgd, batch_size=50, seed=0, n_classes=10),
                       craft(model, split, pgd, batch_size=50, seed=0, n_classes=10, temperature=1.0))


def test_fp64_recomputation_sees_float32_underflow(tiny_model, mini_data):
    """Logits x100 push many logit gaps past float32's exp range (e^-104 is its smallest
    subnormal) but stay inside float64's (e^-745): in float32 some CE gradients are exactly zero
    and CE-PGD stalls there; in float64 none is, and the same attack finds more."""
    spec, model = tiny_model
    big = scaled_last_layer(model, 100)
    split = mini_data.test.subset(stratified_indices(mini_data.test.labels, 100, 0))
    m = fp64_check(big, 1.0, split, make_attack("pgd", {"steps": 5}), batch_size=50, seed=0, n_classes=10)
    x = m.metrics
    assert m.threat == "pgd_fp64" and m.family == "diagnostic"
    assert x["clean_acc_fp32"] == x["clean_acc_fp64"]
    assert x["zero_grad_frac_fp32"] >= 0.03 and x["zero_grad_frac_fp64"] == 0
    assert x["saturated_frac_fp32"] > x["saturated_frac_fp64"]
    assert x["robust_acc_fp64"] < x["robust_acc_fp32"]


def test_bits_round_trip():
    mask = torch.rand(1001) < 0.3
    assert (unpack_bits(pack_bits(mask), 1001) == mask.numpy()).all()


def _row(**kw):
    return pd.Series(kw, dtype=object)


@pytest.mark.parametrize("evidence,expected,fragment", [
    (dict(ce_gap=0.0, zero_grad_raw=0.0, saturated_raw=0.0), "none", ""),
    (dict(ce_gap=0.15, ce_gap_by="pgd/scaled"), "likely", "15.0 pp above pgd/scaled at the same steps"),
    (dict(ce_gap=0.04), "suspected", "4.0 pp above"),
    # an adversarially trained T=1 model: PGD-10 3-5 pp above APGD-T is budget, not masking
    (dict(ce_gap=0.0175, budget_gap=0.048), "none", ""),
    (dict(ce_gap=0.0175, budget_gap=0.12), "suspected", "12.0 pp above robust_min"),
    (dict(ce_gap=0.15, budget_gap=0.15), "likely", "15.0 pp above ? at the same steps"),
    # a PGD far behind a longer attack at equal steps-gap: the gap to robust_min still speaks
    (dict(ce_gap=0.01, budget_gap=0.35), "likely", "35.0 pp above robust_min"),
    (dict(ce_gap=0.04, budget_gap=0.30), "likely", "30.0 pp above robust_min"),
    # exact gaps in whole images reach their threshold (41/400 - 1/400 is 0.0999... in floats)
    (dict(ce_gap=round(41 / 400 - 1 / 400, 9)), "likely", "10.0 pp above"),
    (dict(zero_grad_raw=0.002), "suspected", "exactly zero CE gradient"),
    (dict(zero_grad_raw=0.2), "likely", "20.0% of inputs"),
    (dict(saturated_raw=0.5), "suspected", "softmax = 1.0"),
    (dict(blackbox_gap=0.08), "likely", "black-box/transfer beats"),
    (dict(targeted_gap=0.05), "suspected", "targeted PGD beats"),
    (dict(sweep_plateau=0.4, sweep_plateau_by="pgd/raw", sweep_max_eps="128/255"), "likely", "pgd/raw still 40.0%"),
    # 6.5% at 128/255 (results/quick's fastnet_T50_lrT) is below chance yet far from the ~0 of a working attack
    (dict(sweep_plateau=0.065, sweep_plateau_by="pgd/raw", sweep_max_eps="128/255"), "likely", "still 6.5%"),
    (dict(sweep_plateau=0.02, sweep_plateau_by="pgd/raw", sweep_max_eps="128/255"), "suspected", "still 2.0%"),
    (dict(sweep_plateau=0.005, sweep_plateau_by="pgd/raw", sweep_max_eps="128/255"), "none", ""),
    (dict(fp64_gap=0.05), "suspected", "float64 CE-PGD"),
    (dict(fp64_gap=0.47), "likely", "float64 CE-PGD is 47.0 pp stronger"),
    (dict(blackbox_gap=0.03, blackbox_gap_n=500), "suspected", "by 3.0 pp on its 500 images"),
    (dict(aa_gap=0.02, aa_gap_by="both", aa_min=0.01, aa_crosscheck_n=100, suite_min_on_aa_images=0.03,
          suite_min_on_aa_images_by="pgd/scaled"), "likely",
     "AutoAttack (both) leaves 1.0% robust on the 100 cross-check images, where the suite's best attack "
     "(pgd/scaled) leaves 3.0%"),
    (dict(aa_gap=0.01), "suspected", "robust_min is above an attack the harness ran"),
    (dict(aa_gap=0.02, aa_gap_by="both", aa_min=0.01, aa_crosscheck_n=50, suite_min_on_aa_images=0.03,
          suite_min_on_aa_images_by="pgd/scaled",
          aa_crosscheck_budget="reduced budget: version standard, 20 iterations and 500 queries"),
     "likely", "AutoAttack (both, at a reduced budget) leaves 1.0% robust on the 50 cross-check images"),
    (dict(aa_gap=-0.05), "none", ""),
    (dict(aa_warnings=2, aa_warning_texts="there are 3 points with zero gradient!"), "suspected",
     "the authors' AutoAttack warned 2 time(s): there are 3 points with zero gradient!"),
    (dict(aa_warnings=0), "none", ""),
])
def test_verdict_rules(evidence, expected, fragment):
    v, reasons = verdict(_row(**evidence))
    assert v == expected and fragment in reasons


def test_thresholds_are_documented():
    """Every threshold is in the README's table with the value the code uses (the table is
    written by hand: rows like "| `a_likely` / `a_suspected` | 10 pp / 3 pp | ... |")."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`") and ("_likely" in cells[0] or "_suspected" in cells[0]):
            for name, value in zip(cells[0].split("/"), cells[1].split("/")):
                documented[name.strip(" `")] = value.split()[0].rstrip("%")
    for key, value in THRESHOLDS.items():
        assert key in documented, f"README does not document the audit threshold {key}"
        assert documented[key] == ("any" if value == 0 else f"{100 * value:g}"), (key, documented[key], value)


def test_unchecked_names_the_checks_without_evidence():
    """A check with no number behind it is named; AutoAttack run as one of the attacks (so inside
    robust_min: no gap left to find) counts as its check, as the cross-check does."""
    everything = pd.Series({col: 0.0 for col in CHECKS.values()})
    assert unchecked(everything) == ""
    pgd_only = pd.Series({"ce_gap": 0.0, "zero_grad_raw": 0.0, "saturated_raw": 0.01, "blackbox_gap": np.nan})
    assert unchecked(pgd_only) == "black-box/transfer, targeted, eps sweep, float64, AutoAttack"
    assert unchecked(pgd_only, autoattack=0.06) == "black-box/transfer, targeted, eps sweep, float64"
    assert unchecked(pgd_only, autoattack=np.nan).endswith("AutoAttack")


def test_two_cross_checks_of_a_model_give_the_strongest_not_their_mean():
    """A model cross-checked at a reduced budget and then at the full one holds two records (their
    params differ): the audit reads the stronger, as the leaderboard does for an attack at two
    budgets. Their mean (25%) was a number no run gave."""
    from bench.report.audit import evidence
    eps, rows = 8 / 255, []

    def add(threat, metric, value, view="raw", family="attack", params="{}"):
        rows.append(dict(model="m", threat=threat, metric=metric, value=value, view=view, family=family, n=100,
                         eps=eps, params=params))
    add("pgd_margin", "robust_acc", 0.30, view="any")
    for steps, acc, fp32 in ((10, 0.30, 0.45), (100, 0.20, 0.30)):
        for metric, value in (("robust_acc_torchattacks", acc), ("robust_acc_pyautoattack", acc + 0.01),
                              ("abs_diff", 0.01), ("aa_warnings", 0.0)):
            add("autoattack_crosscheck", metric, value, family="diagnostic", params=f'{{"steps": {steps}}}')
        for metric, value in (("robust_acc_fp32", fp32), ("robust_acc_fp64", acc), ("zero_grad_frac_fp32", 0.0),
                              ("zero_grad_frac_fp64", 0.0)):
            add("pgd_fp64", metric, value, family="diagnostic", params=f'{{"steps": {steps}}}')
    board = pd.DataFrame({"robust_min": [0.30], "suite_min_on_aa_images": [0.30],
                          "suite_min_on_aa_images_by": ["pgd_margin/any"]}, index=["m"])
    ev = evidence(pd.DataFrame(rows), board, eps).loc["m"]
    assert ev["aa_torchattacks"] == pytest.approx(0.20) and ev["aa_min"] == pytest.approx(0.20)
    assert ev["aa_gap"] == pytest.approx(0.10) and ev["aa_crosscheck_n"] == 100
    assert ev["fp64_gap"] == pytest.approx(0.15)  # the larger of the two records' gaps, not 0.125
    assert verdict(ev)[0] == "likely" and "leaves 20.0% robust" in verdict(ev)[1]


def test_a_cross_check_at_another_eps_is_not_read_at_the_headline_one():
    """The same weights cross-checked at 8/255 (40% robust) and, by an --eps run into the same
    folder, at 16/255 (12%): the audit took the 16/255 record, the strongest, against the suite's
    41% at 8/255, a 29-pp gap read as likely masking. At 8/255 the gap is 1 pp."""
    from bench.report.audit import evidence
    rows = [dict(model="m", threat="pgd_margin", metric="robust_acc", value=0.41, view="any", family="attack",
                 n=1000, eps=8 / 255, params="{}")]
    for eps, acc in ((8 / 255, 0.40), (16 / 255, 0.12)):
        for metric, value in (("robust_acc_torchattacks", acc), ("robust_acc_pyautoattack", acc),
                              ("abs_diff", 0.0), ("aa_warnings", 0.0)):
            rows.append(dict(model="m", threat="autoattack_crosscheck", metric=metric, value=value, view="raw",
                             family="diagnostic", n=1000, eps=eps, params=f'{{"eps": {eps}}}'))
    board = pd.DataFrame({"robust_min": [0.41], "suite_min_on_aa_images": [0.41],
                          "suite_min_on_aa_images_by": ["pgd_margin/any"]}, index=["m"])
    ev = evidence(pd.DataFrame(rows), board, 8 / 255).loc["m"]
    assert ev["aa_min"] == pytest.approx(0.40) and ev["aa_gap"] == pytest.approx(0.01)


def _tidy(model="m", **attacks):
    """A tidy table of Linf attacks at 8/255 (threat/view -> (accuracy, steps)) and, with sweep=,
    a raw CE-PGD eps sweep (eps -> accuracy)."""
    sweep = attacks.pop("sweep", {})
    rows = [dict(model=model, threat=k.split("/")[0], view=k.split("/")[1], value=v, steps=steps, eps=8 / 255,
                 family="attack", metric="robust_acc", n=400, params="{}") for k, (v, steps) in attacks.items()]
    rows += [dict(model=model, threat="pgd", view="raw", value=v, steps=10, eps=e, family="attack",
                  metric="robust_acc", n=400, params="{}") for e, v in sweep.items()]
    return pd.DataFrame(rows)


def test_the_ce_gap_needs_an_attack_the_logits_scale_cannot_stall():
    """With CE attacks only, robust_min is CE-PGD itself: a gap of 0 there is no evidence, and the
    check is named unchecked (it counted as made, and a --attack pgd,square run looked audited)."""
    from bench.report.audit import evidence
    df = _tidy(**{"pgd/raw": (0.15, 10), "fgsm/raw": (0.30, None), "square/any": (0.18, None)})
    board = pd.DataFrame({"robust_min": [0.15]}, index=["m"])
    ev = evidence(df, board, 8 / 255).loc["m"]
    assert np.isnan(ev["ce_gap"]) and ev["budget_gap"] == 0
    assert "CE gap" in unchecked(ev)


def test_the_ce_gap_compares_like_budgets_and_autoattack_does_not_blind_the_black_box_check():
    """An adversarially trained T=1 model (results/cpu's fastnet_T1_at@best): PGD-10 on raw logits
    35.05%, margin PGD-10 33.3%, APGD-T (100 steps, 9 targets) 30.25%. Against robust_min the CE
    gap was 4.8 pp, "suspected" with nothing T-made to mask; at equal steps it is 1.75 pp. And
    AutoAttack, which runs Square, is not the white-box side of the black-box check."""
    from bench.report.audit import evidence
    df = _tidy(**{"pgd/raw": (0.3505, 10), "pgd_margin/any": (0.333, 10), "apgd_t/any": (0.3025, 100),
                  "pgd_margin/raw": (0.31, 20), "square/any": (0.29, None), "autoattack/any": (0.29, None)})
    board = pd.DataFrame({"robust_min": [0.29]}, index=["m"])
    ev = evidence(df, board, 8 / 255).loc["m"]
    assert ev["ce_gap"] == pytest.approx(0.0175) and ev["ce_gap_by"] == "pgd_margin/any"
    assert ev["budget_gap"] == pytest.approx(0.0605)
    assert ev["whitebox_best"] == pytest.approx(0.3025) and ev["blackbox_gap"] == pytest.approx(0.0125)
    v, reasons = verdict(ev)
    assert v == "suspected" and "black-box/transfer beats the best white-box attack by 1.2 pp" in reasons
    assert "CE-PGD" not in reasons


def test_a_sweep_that_stops_short_is_no_evidence_of_a_plateau():
    """At 32/255 an adversarially trained model keeps images robust without any masking: a sweep
    ending below PLATEAU_MIN_EPS says nothing, and the check is named unchecked."""
    from bench.report.audit import PLATEAU_MIN_EPS, evidence
    board = pd.DataFrame({"robust_min": [0.3]}, index=["m"])
    short = _tidy(**{"pgd/raw": (0.3, 10)}, sweep={2 / 255: 0.5, 16 / 255: 0.2, 32 / 255: 0.04})
    ev = evidence(short, board, 8 / 255).loc["m"]
    assert np.isnan(ev["sweep_plateau"]) and ev["sweep_max_eps"] == "32/255" and "eps sweep" in unchecked(ev)
    assert PLATEAU_MIN_EPS == pytest.approx(64 / 255)
    far = _tidy(**{"pgd/raw": (0.3, 10)}, sweep={2 / 255: 0.5, 32 / 255: 0.04, 64 / 255: 0.03})
    ev = evidence(far, board, 8 / 255).loc["m"]
    assert ev["sweep_plateau"] == pytest.approx(0.03) and verdict(ev)[0] == "suspected"


def test_a_store_without_bits_keeps_the_targeted_check():
    """The targeted gap is read from the tidy table alone: a report without per-image bits (an
    older store) lost it when the paired black-box gap's block took it in."""
    from bench.report.audit import evidence
    df = _tidy(**{"pgd/raw": (0.30, 10), "pgd/scaled": (0.29, 10), "pgd_target_ll/raw": (0.10, 10)})
    ev = evidence(df, pd.DataFrame({"robust_min": [0.10]}, index=["m"]), 8 / 255).loc["m"]
    assert ev["targeted_gap"] == pytest.approx(0.20) and "targeted" not in unchecked(ev)


def test_the_paired_black_box_gap_counts_white_box_attacks_on_its_part():
    """[eval] attack_n runs APGD-T and Square on the same 500 of 2,000 images: on them APGD-T
    leaves 19.6%, Square 20.4%, so Square is not the stronger; PGD over all 2,000 alone made it a
    15-pp Square win ("likely" masking)."""
    from bench.report.worst_case import blackbox_gap_on_its_images
    from bench.store import pack_bits
    n, rng = 2000, np.random.default_rng(0)
    part = np.sort(rng.choice(n, 500, replace=False))
    pgd = np.zeros(n, dtype=bool)
    pgd[part[:178]] = True  # PGD leaves 35.6% of the 500
    apgd, square = np.zeros(500, dtype=bool), np.zeros(500, dtype=bool)
    apgd[:98], square[:102] = True, True

    def row(threat, bits, positions=None):
        return dict(model="m", threat=threat, view="any" if positions is not None else "raw", eps=8 / 255,
                    family="attack", n=len(bits), eval_n=n if positions is not None else None,
                    bits=pack_bits(torch.from_numpy(bits)),
                    positions=None if positions is None else {"eval_n": n, "index": positions.tolist()})
    rows = pd.DataFrame([row("pgd", pgd), row("apgd_t", apgd, part), row("square", square, part)])
    gap, by, images = blackbox_gap_on_its_images(rows, n, 8 / 255)
    assert by == "square/any" and images == 500 and gap == pytest.approx(0.196 - 0.204)
