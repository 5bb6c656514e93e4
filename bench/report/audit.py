"""The gradient-masking audit: from the tidy table alone, per model, the evidence for or against
"this model's CE-PGD robustness is real", and a verdict.

Training at large T makes the logits large; CE on raw logits then saturates, its gradients
underflow and PGD stalls (science.md). Each signal below is one of the classic symptoms (Athalye
et al. 2018; Carlini et al. 2019, "On evaluating adversarial robustness"):

  ce_gap                 CE-PGD on the raw logits minus the same PGD on z/T or with a scale-free loss
                         (margin, DLR) at the same steps: what the logits' scale alone hides
  budget_gap             CE-PGD on the raw logits minus robust_min (the strongest attack found)
  zero_grad / saturated  inputs whose CE input gradient is exactly 0 / whose top softmax is 1.0
  blackbox_gap           best white-box minus best black-box (Square) or transfer accuracy
  targeted_gap           untargeted minus targeted PGD accuracy on the same view
  sweep_plateau          accuracy at the largest eps of the sweep (64/255 or more), for the weakest
                         curve: a working attack leaves no image robust there, whatever the classes
  fp64_gap               CE-PGD in float32 minus the same attack in float64 (underflow)
  aa_gap                 robust_min on the AutoAttack cross-check's images minus the lower of its two
                         AutoAttacks there (same images, so no sampling noise): robust_min is above an
                         attack the harness itself ran
  aa_warnings            flags the AutoAttack authors' own code raised (zero gradients, Square beating
                         the gradient attacks, a randomized or dynamic defense), with their texts

All thresholds live in THRESHOLDS; the README documents them. A verdict is "likely" when any
strong signal fires, "suspected" when only weak ones do, "none" otherwise, and its reasons say
which fired, with the numbers. A check needs its measurement (a black-box gap needs Square or
the transfer attack, the sweep needs the eps sweep): ``masking_unchecked`` names those a model
has no evidence for, so that "none" after a PGD-only run does not read as a full audit.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from attacks import ATTACKS, format_eps
from bench.report.columns import aa_budget, budget_kind, is_autoattack, is_black_box, threat_norm

# accuracies and fractions in [0, 1]; "pp" below = percentage points
THRESHOLDS: Dict[str, float] = {
    "ce_gap_likely": 0.10,  # CE-PGD (raw) at least 10 pp above the same-budget scale-free attack
    "ce_gap_suspected": 0.03,
    # CE-PGD (raw) at least 20 (10) pp above robust_min: far past the 3-5 pp a 10-step PGD trails
    # APGD-T by on an adversarially trained model with nothing to mask
    "budget_gap_likely": 0.20,
    "budget_gap_suspected": 0.10,
    "zero_grad_likely": 0.05,  # at least 5% of the inputs with an exactly zero CE gradient
    "zero_grad_suspected": 0.0,  # any
    "saturated_suspected": 0.10,  # at least 10% with a softmax of exactly 1.0 (float32)
    "blackbox_likely": 0.05,  # black-box or transfer beats every white-box attack by 5 pp
    "blackbox_suspected": 0.01,
    "targeted_suspected": 0.03,  # targeted PGD beats untargeted PGD by 3 pp
    # at the sweep's largest eps (>= PLATEAU_MIN_EPS) some curve keeps 5% (1%) of the images: robust
    # accuracy counts only images classified right, so a working attack drives it to 0, not to chance
    "plateau_likely": 0.05,
    "plateau_suspected": 0.01,
    "fp64_likely": 0.10,  # float64 CE-PGD 10 pp (3 pp) stronger than float32
    "fp64_suspected": 0.03,
    # on the cross-check's images (100 in quick: 1 pp = 1 image) AutoAttack finds at least 2 pp
    # fewer robust images than the suite's best attack; any at all is suspected
    "aa_gap_likely": 0.02,
    "aa_gap_suspected": 0.0,
    "aa_warnings_suspected": 0.0,  # any warning of the authors' AutoAttack
}
# the smallest largest-eps of a sweep that can show a plateau: at 64/255 (a quarter of the pixel
# range) PGD breaks every image of an adversarially trained CIFAR model trained at 8/255
PLATEAU_MIN_EPS = 64 / 255


# each check of the verdict by the evidence column that carries it (in verdict's order)
CHECKS: Dict[str, str] = {
    "CE gap": "ce_gap",
    "zero gradients": "zero_grad_raw",
    "saturation": "saturated_raw",
    "black-box/transfer": "blackbox_gap",
    "targeted": "targeted_gap",
    "eps sweep": "sweep_plateau",
    "float64": "fp64_gap",
    "AutoAttack": "aa_gap",
}


def unchecked(ev: pd.Series, autoattack=None) -> str:
    """The checks this model's evidence row cannot make, comma-separated ("" when it makes all).
    ``autoattack``: its accuracy under AutoAttack run as one of the attacks (``--attack
    autoattack``), which robust_min then includes: no gap left to check, so it is checked."""
    def have(v) -> bool:
        return isinstance(v, (int, float, np.number)) and bool(np.isfinite(v))
    return ", ".join(name for name, col in CHECKS.items()
                     if not have(ev.get(col)) and not (col == "aa_gap" and have(autoattack)))


def _fmt(v: float) -> str:
    return f"{100 * v:.1f}"


def _count(v) -> str:
    return f"{v:.0f}" if isinstance(v, (int, float, np.number)) and np.isfinite(v) else "?"


def verdict(ev: pd.Series) -> Tuple[str, str]:
    """(verdict, reasons) for one model's evidence row."""
    t = THRESHOLDS
    likely: List[str] = []
    suspected: List[str] = []

    def check(value, strong, weak, text):
        if value is None or not np.isfinite(value):
            return
        if strong is not None and value >= strong:
            likely.append(text)
        elif weak is not None and (value > weak if weak == 0 else value >= weak):
            suspected.append(text)

    check(ev.get("ce_gap"), t["ce_gap_likely"], t["ce_gap_suspected"],
          f"CE-PGD on raw logits {_fmt(ev.get('ce_gap', np.nan))} pp above {ev.get('ce_gap_by', '?')} "
          f"at the same steps")
    ce, budget = ev.get("ce_gap", np.nan), ev.get("budget_gap", np.nan)
    # said once: where the same-steps gap fired and the gap to robust_min adds little to it, the
    # latter repeats it (a masked model's two gaps are equal: its robust_min is the z/T PGD's)
    repeats = np.isfinite(ce) and ce >= t["ce_gap_suspected"] and budget - ce < t["ce_gap_suspected"]
    check(np.nan if repeats else budget, t["budget_gap_likely"], t["budget_gap_suspected"],
          f"CE-PGD on raw logits {_fmt(ev.get('budget_gap', np.nan))} pp above robust_min")
    check(ev.get("zero_grad_raw"), t["zero_grad_likely"], t["zero_grad_suspected"],
          f"{_fmt(ev.get('zero_grad_raw', np.nan))}% of inputs have an exactly zero CE gradient (raw)")
    check(ev.get("saturated_raw"), None, t["saturated_suspected"],
          f"{_fmt(ev.get('saturated_raw', np.nan))}% of inputs have softmax = 1.0 in float32 (raw)")
    check(ev.get("blackbox_gap"), t["blackbox_likely"], t["blackbox_suspected"],
          f"black-box/transfer beats the best white-box attack by {_fmt(ev.get('blackbox_gap', np.nan))} pp"
          + (f" on its {_count(ev.get('blackbox_gap_n'))} images" if _count(ev.get("blackbox_gap_n")) != "?" else ""))
    check(ev.get("targeted_gap"), None, t["targeted_suspected"],
          f"targeted PGD beats untargeted PGD by {_fmt(ev.get('targeted_gap', np.nan))} pp")
    check(ev.get("sweep_plateau"), t["plateau_likely"], t["plateau_suspected"],
          f"{ev.get('sweep_plateau_by', '?')} still {_fmt(ev.get('sweep_plateau', np.nan))}% at eps "
          f"{ev.get('sweep_max_eps', '?')}, where a working attack leaves none")
    check(ev.get("fp64_gap"), t["fp64_likely"], t["fp64_suspected"],
          f"float64 CE-PGD is {_fmt(ev.get('fp64_gap', np.nan))} pp stronger than float32")
    check(ev.get("aa_gap"), t["aa_gap_likely"], t["aa_gap_suspected"],
          f"AutoAttack ({ev.get('aa_gap_by', '?')}"
          + (f", at a {budget_kind(ev['aa_crosscheck_budget'])} budget"
             if isinstance(ev.get("aa_crosscheck_budget"), str) else "") +
          f") leaves {_fmt(ev.get('aa_min', np.nan))}% robust on the "
          f"{_count(ev.get('aa_crosscheck_n'))} cross-check images, where the suite's best attack "
          f"({ev.get('suite_min_on_aa_images_by', '?')}) leaves {_fmt(ev.get('suite_min_on_aa_images', np.nan))}%: "
          f"robust_min is above an attack the harness ran")
    texts = ev.get("aa_warning_texts")
    check(ev.get("aa_warnings"), None, t["aa_warnings_suspected"],
          f"the authors' AutoAttack warned {_count(ev.get('aa_warnings'))} time(s): "
          + (texts if isinstance(texts, str) else "(texts in the cross-check record)"))
    if likely:
        return "likely", "; ".join(likely + suspected)
    if suspected:
        return "suspected", "; ".join(suspected)
    return "none", ""


def _targeted(threat: str) -> bool:
    return threat in ATTACKS and ATTACKS[threat].single_target


def evidence(df: pd.DataFrame, board: pd.DataFrame, eps: float) -> pd.DataFrame:
    """Per model, the numbers behind the verdict (accuracies as fractions; gaps in fractions)."""
    robust = df[(df.family == "attack") & (df.metric == "robust_acc")].copy()
    robust = robust[robust.threat.map(threat_norm) == "linf"]
    head = robust[np.isclose(robust.eps, eps)]
    ev = pd.DataFrame(index=board.index)
    if not head.empty:
        raw = head[(head.threat == "pgd") & (head.view == "raw")]
        pgd_raw = raw.groupby("model")["value"].min()
        ev["budget_gap"] = (pgd_raw - board["robust_min"]).round(9)
        gap = _ce_gap(raw, head)  # a column even where empty: unchecked() reads the model's NaN
        ev["ce_gap"], ev["ce_gap_by"] = gap["gap"].astype(float).round(9), gap["by"]
        black = head[head.threat.map(is_black_box)]
        white = head[~head.threat.map(is_black_box) & ~head.threat.map(is_autoattack)]
        if not black.empty and not white.empty:
            ev["blackbox_best"] = black.groupby("model")["value"].min()
            ev["whitebox_best"] = white.groupby("model")["value"].min()
            ev["blackbox_gap"] = (ev["whitebox_best"] - ev["blackbox_best"]).round(9)
        tgt = head[head.threat.map(_targeted)]
        if not tgt.empty:
            untargeted = head[head.threat == "pgd"].groupby(["model", "view"])["value"].min()
            targeted = tgt.groupby(["model", "view"])["value"].min()
            gap = (untargeted - targeted).dropna()
            if len(gap):
                ev["targeted_gap"] = gap.groupby("model").max().round(9)
    if "blackbox_gap_paired" in board:
        # on the black-box attack's own images where the bits say which (bench.report.worst_case):
        # Square on 500 of 2,000 images against white-box numbers over all 2,000 moved the gap 3 pp
        paired = board["blackbox_gap_paired"]
        ev["blackbox_gap"] = paired.where(paired.notna(), ev["blackbox_gap"] if "blackbox_gap" in ev else np.nan)
        ev["blackbox_gap_n"] = board["blackbox_gap_paired_n"]
    for view in ("raw", "scaled"):
        if f"zero_grad_{view}" in board:
            ev[f"zero_grad_{view}"] = board[f"zero_grad_{view}"]
            ev[f"saturated_{view}"] = board[f"saturated_{view}"]
    sweep = robust[robust.threat.isin(robust[~np.isclose(robust.eps, eps)].threat.unique())]
    if sweep.eps.nunique() > 2:
        top = sweep[sweep.eps == sweep.eps.max()].copy()
        top["curve"] = top.threat + "/" + top.view
        idx = top.groupby("model")["value"].idxmax()
        worst = top.loc[idx].set_index("model")
        # a sweep that stops short of PLATEAU_MIN_EPS may leave a robust model's images standing
        # (an adversarially trained one keeps some at 32/255): no evidence either way
        reaches = float(sweep.eps.max()) >= PLATEAU_MIN_EPS - 1e-12
        ev["sweep_plateau"] = worst["value"] if reaches else np.nan
        ev["sweep_plateau_by"] = worst["curve"]
        ev["sweep_max_eps"] = format_eps(float(sweep.eps.max()))
    # the fp64 check and the cross-check at the headline eps only: a cross-check of the same weights
    # at 16/255 (an --eps run into the same folder) read as AutoAttack leaving 29 pp fewer images
    # robust than the suite at 8/255, "likely"; the per-image side (worst_case) already reads eps
    at_eps = df[np.isclose(pd.to_numeric(df.eps, errors="coerce"), eps)]
    fp = _strongest_record(at_eps, "pgd_fp64", lambda r: r["robust_acc_fp64"] - r["robust_acc_fp32"],
                           ("robust_acc_fp32", "robust_acc_fp64", "zero_grad_frac_fp32", "zero_grad_frac_fp64"))
    if not fp.empty:
        ev["fp64_gap"] = (fp["robust_acc_fp32"] - fp["robust_acc_fp64"]).round(9)
        ev["fp64_zero_grad_fp32"], ev["fp64_zero_grad_fp64"] = fp["zero_grad_frac_fp32"], fp["zero_grad_frac_fp64"]
    cc = _strongest_record(at_eps, "autoattack_crosscheck",
                           lambda r: min(r["robust_acc_torchattacks"], r["robust_acc_pyautoattack"]),
                           ("robust_acc_torchattacks", "robust_acc_pyautoattack", "abs_diff"))
    if not cc.empty:
        ev["aa_torchattacks"], ev["aa_pyautoattack"] = cc["robust_acc_torchattacks"], cc["robust_acc_pyautoattack"]
        ev["aa_crosscheck_diff"] = cc["abs_diff"]
        ev["aa_crosscheck_n"] = cc["n"]
        budget = cc["params"].map(aa_budget)
        if budget.notna().any():  # a reduced budget, said wherever the number is shown
            ev["aa_crosscheck_budget"] = budget
        if "aa_warnings" in cc:
            ev["aa_warnings"] = cc["aa_warnings"]
        if "aa_warning_texts" in board:
            ev["aa_warning_texts"] = board["aa_warning_texts"]
        if "suite_min_on_aa_images" in board:  # from the per-image bits (bench.report.tables.worst_case)
            ta, py = cc["robust_acc_torchattacks"], cc["robust_acc_pyautoattack"]
            ev["aa_min"] = np.minimum(ta, py)
            ev["aa_gap_by"] = pd.Series(np.where(ta == py, "both", np.where(ta < py, "torchattacks", "pyautoattack")),
                                        index=cc.index)
            ev["suite_min_on_aa_images"] = board["suite_min_on_aa_images"]
            ev["suite_min_on_aa_images_by"] = board["suite_min_on_aa_images_by"]
            # rounded: 0.03 - 0.01 is 0.0199... in floats, and the gap is a whole number of images
            ev["aa_gap"] = (ev["suite_min_on_aa_images"] - ev["aa_min"]).round(9)
    return ev


def _ce_gap(raw: pd.DataFrame, head: pd.DataFrame) -> pd.DataFrame:
    """Per model, CE-PGD on the raw logits minus the strongest attack of the same budget (as many
    steps, untargeted, white-box) that the logits' scale cannot stall: the same PGD on z/T, or a
    scale-invariant loss (CW margin, DLR). Columns gap, by. Against robust_min the gap also counts
    the larger budgets (APGD-T's 9 targets, AutoAttack), 3-5 pp on an adversarially trained T=1
    model with nothing to mask (that is budget_gap); a model with no such attack has no row: its
    CE gap is unchecked, not 0."""
    if "steps" not in head:
        return pd.DataFrame(columns=["gap", "by"])
    free = head[head.apply(lambda r: r.threat in ATTACKS and not ATTACKS[r.threat].targeted
                           and not ATTACKS[r.threat].black_box and not is_autoattack(r.threat)
                           and (r.view == "scaled" or ATTACKS[r.threat].view_invariant), axis=1)]
    pairs = raw[["model", "steps", "value"]].dropna(subset=["steps"]).merge(
        free[["model", "steps", "value", "threat", "view"]], on=["model", "steps"], suffixes=("", "_free"))
    if pairs.empty:
        return pd.DataFrame(columns=["gap", "by"])
    pairs["gap"] = pairs["value"] - pairs["value_free"]
    pairs["by"] = pairs["threat"] + "/" + pairs["view"]
    return pairs.loc[pairs.groupby("model")["gap"].idxmax()].set_index("model")[["gap", "by"]]


def _strongest_record(df: pd.DataFrame, threat: str, score, needs) -> pd.DataFrame:
    """Per model, the metrics (and ``n``) of one record of ``threat``: where a model holds several
    (a cross-check at two budgets), the one of lowest ``score`` (the strongest attack). Averaged,
    they gave numbers no run gave, and a verdict could move between "suspected" and "likely". A
    record without one of the metrics ``needs`` names (cut short by hand) is none: a KeyError, or
    an idxmin over no number, stopped every report on it. Its ``params`` (JSON text) come along."""
    rows = df[df.threat == threat].assign(params=lambda d: d["params"].fillna("").astype(str))
    rec = rows.pivot_table(index=["model", "params", "n"], columns="metric", values="value", aggfunc="first")
    rec = rec.reindex(columns=sorted(set(rec.columns) | set(needs))).dropna(subset=list(needs))
    if rec.empty:
        return rec
    best = rec.apply(score, axis=1).groupby(level="model").idxmin()
    return rec.loc[list(best)].reset_index(["params", "n"])


def add_audit_columns(df: pd.DataFrame, board: pd.DataFrame, eps: float) -> pd.DataFrame:
    """The verdict, its reasons and the evidence columns, joined to the leaderboard."""
    # the paired black-box gap's columns (bench.report.tables.worst_case) are the audit's to read, not the board's
    paired = [c for c in board.columns if c.startswith("blackbox_gap_paired")]
    if board["robust_min"].isna().all():
        return board.drop(columns=paired)
    ev = evidence(df, board, eps)
    verdicts = {m: verdict(ev.loc[m]) for m in board.index if np.isfinite(board.loc[m, "robust_min"])}
    board["masking"] = pd.Series({m: v for m, (v, _) in verdicts.items()}, dtype=object)
    board["masking_reasons"] = pd.Series({m: r for m, (_, r) in verdicts.items()}, dtype=object)
    board["masking_unchecked"] = pd.Series({m: unchecked(ev.loc[m], board.loc[m].get("autoattack"))
                                            for m in verdicts}, dtype=object)
    if "sweep_plateau" in ev:
        # a model without a sweep (NaN) compares False, as it should; numpy may flag that NaN as invalid
        with np.errstate(invalid="ignore"):
            ev["sweep_reaches_zero"] = ev["sweep_plateau"] < THRESHOLDS["plateau_suspected"]
    new = [c for c in ev.columns if c not in board.columns]
    return board.drop(columns=paired).join(ev[new])
