"""robust_worst counts the AutoAttack cross-check on the images it covered, the audit fires when the
cross-check beats robust_min there, and the AutoAttack authors' warnings reach the masking reasons.

The model under test masks its gradients the classic way (Athalye et al. 2018): it quantizes its
input, so every input gradient is exactly zero. FGSM then moves nothing and reports the clean
accuracy as robust; AutoAttack's Square (a black box) still breaks images, and the authors' code
flags the zero gradients."""
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from attacks import ATTACKS
from bench.measure.families import FAMILIES
from bench.data import stratified_indices
from bench.report.worst_case import covered_on_split
from bench.profiles import load_profile
from bench.report.tables import leaderboard
from bench.store import ResultStore, unpack_bits

N_EVAL, N_CC = 200, 100
PROFILE = f"""
[recipe]
epochs = 1
[eval]
n = {N_EVAL}
batch_size = {N_EVAL}
attacks = ["fgsm"]
views = ["raw"]
crosscheck_n = {N_CC}
[attack.autoattack]
steps = 3
n_queries = 100
[attack.autoattack_ref]
steps = 3
n_queries = 100
[[grid]]
arch = "fastnetw8"
T = [1]
"""


class Quantized(torch.nn.Module):
    """The model on its input rounded to 32 levels: the rounding has a zero gradient everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 31) / 31)


@pytest.fixture(scope="module")
def masked_run(tiny_model, mini_data, tmp_path_factory):
    """The grid's adversarial families (bench/measure/): FGSM on the 200-image evaluation split and
    the cross-check on a stratified 100 of them."""
    spec, model = tiny_model
    masked = Quantized(model).eval()
    path = tmp_path_factory.mktemp("profile") / "p.toml"
    path.write_text(PROFILE)
    profile = load_profile(str(path))
    plan = SimpleNamespace(profile=profile, attacks=[profile.attack("fgsm")], views=["raw"], progress=False)
    split = mini_data.test.subset(stratified_indices(mini_data.test.labels, N_EVAL, 0))
    ctx = SimpleNamespace(plan=plan, eval_split=split, data=SimpleNamespace(num_classes=10))
    adversarial = [F for F in FAMILIES if F.name in ("attacks", "eps sweep", "transfer", "fp64 check",
                                                     "autoattack crosscheck")]
    families = {f.name: f for f in (F.prepare(ctx, print) for F in adversarial) if f}
    assert set(families) == {"attacks", "autoattack crosscheck"}
    positions = stratified_indices(split.labels, N_CC, 2)
    suite, cc = (families[k].run(masked, spec, ctx, print) for k in ("attacks", "autoattack crosscheck"))
    return suite, cc[0], positions


def _record(m):
    """A record as bench.grid.jobs.execute writes it."""
    rec = {"run_key": "k", "dataset": "cifar10-mini", "split": "test", "n": m.n, "subset_seed": 0, "attack_seed": 0,
           "threat": m.threat, "view": m.view, "params": m.params, "model": "fastnetw8_T1", "arch": "fastnetw8",
           "T": 1.0, "head": "linear", "regime": "std", "lr_scale": False, "seed": 0, "checkpoint": "last",
           "feature_dim": 64, "num_classes": 10, "family": m.family, "eps": m.eps, "steps": m.steps,
           "metrics": m.metrics, "timestamp": datetime.now(timezone.utc).isoformat(), "code_version": "test",
           "device": "cpu"}
    if m.bits:
        rec["bits"] = m.bits
    rec.update(m.extra)
    return rec


def test_crosscheck_keeps_aligned_per_image_results_and_the_authors_warnings(masked_run):
    suite, cc, positions = masked_run
    clean = unpack_bits(suite[0].bits, N_EVAL)
    # both AutoAttacks' per-image results, the positions in the evaluation split they belong to
    assert cc.extra["positions"] == {"eval_n": N_EVAL, "index": positions.tolist()}
    # the reference's budget, which the identity (torchattacks' settings) does not name
    assert cc.extra["ref_params"]["n_queries"] == 100 and "steps" in cc.extra["ref_params"]
    ta = unpack_bits(cc.extra["bits_torchattacks"], N_CC)
    py = unpack_bits(cc.extra["bits_pyautoattack"], N_CC)
    assert ta.mean() == cc.metrics["robust_acc_torchattacks"] and py.mean() == cc.metrics["robust_acc_pyautoattack"]
    assert (unpack_bits(cc.bits, N_CC) == (ta & py)).all()
    # laid over the evaluation split, a robust image is one that split classifies correctly
    # (misaligned, ~half of them would land on misclassified images) and the rest say nothing
    on_split = covered_on_split(pd.Series({"bits": cc.bits, "n": N_CC, "positions": cc.extra["positions"]}),
                                   N_EVAL)
    covered = np.zeros(N_EVAL, bool)
    covered[positions.numpy()] = True
    assert on_split[~covered].all() and (on_split[covered] == (ta & py)).all()
    assert clean[covered].sum() == round(cc.metrics["clean_acc"] * N_CC)
    assert (on_split[covered] <= clean[covered]).all() and (ta & py).sum() >= 5
    # the authors' own flag for this model, which the adapter used to drop
    warnings = cc.extra["autoattack_warnings"]
    assert cc.metrics["aa_warnings"] == len(warnings) >= 1
    assert any("zero gradient" in w for w in warnings), warnings


def test_robust_worst_counts_the_crosscheck_and_the_audit_fires(masked_run, tmp_path):
    suite, cc, positions = masked_run
    fgsm = suite[1]
    covered = np.zeros(N_EVAL, bool)
    covered[positions.numpy()] = True
    fgsm_bits = unpack_bits(fgsm.bits, N_EVAL)
    aa_best = min(cc.metrics["robust_acc_torchattacks"], cc.metrics["robust_acc_pyautoattack"])
    # the case of the issue: the cross-check finds fewer robust images than robust_min
    assert fgsm_bits[covered].mean() - aa_best >= 0.05

    store = ResultStore(tmp_path)
    for m in suite + [cc]:
        store.put(_record(m))
    board = leaderboard(store.table(), store.bits_table()).set_index("model").loc["fastnetw8_T1"]
    assert board.robust_min == fgsm.metrics["robust_acc"]
    # image by image: FGSM everywhere, and both AutoAttacks on the images they covered
    worst = fgsm_bits & covered_on_split(pd.Series({"bits": cc.bits, "n": N_CC,
                                                       "positions": cc.extra["positions"]}), N_EVAL)
    assert board.robust_worst == pytest.approx(worst.mean())
    assert board.robust_worst < board.robust_min
    assert worst[covered].mean() <= aa_best
    # the audit compares on the same images and says so, with the numbers
    assert board.suite_min_on_aa_images == pytest.approx(fgsm_bits[covered].mean())
    assert board.suite_min_on_aa_images_by == "fgsm/raw"
    assert board.masking == "likely"
    assert (f"leaves {100 * aa_best:.1f}% robust on the {N_CC} cross-check images, where the suite's best "
            f"attack (fgsm/raw) leaves {100 * fgsm_bits[covered].mean():.1f}%") in board.masking_reasons
    assert "the authors' AutoAttack warned" in board.masking_reasons and "zero gradient" in board.masking_reasons


def test_a_crosscheck_of_another_evaluation_split_is_not_counted(masked_run, tmp_path):
    """Positions into a 500-image split say nothing about the images of a 200-image one."""
    suite, cc, _ = masked_run
    store = ResultStore(tmp_path)
    for m in suite:
        store.put(_record(m))
    rec = _record(cc)
    rec["positions"] = dict(rec["positions"], eval_n=500)
    store.put(rec)
    board = leaderboard(store.table(), store.bits_table()).set_index("model").loc["fastnetw8_T1"]
    assert board.robust_worst == suite[1].metrics["robust_acc"]
    assert pd.isna(board.suite_min_on_aa_images)


def test_an_attack_on_fewer_images_counts_where_it_ran(tiny_model, mini_data, tmp_path):
    """[eval] attack_n: Square on a stratified 60 of the 200 images. Its record has n = 60 and
    its positions; robust_min takes its accuracy (on its own images), robust_worst its per-image
    result where it ran; the planned identities say n = 60, so a resumed run finds it."""
    spec, model = tiny_model
    masked = Quantized(model).eval()
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.replace('attacks = ["fgsm"]', 'attacks = ["fgsm", "square"]\nattack_n = {square = 60}')
                    .replace("crosscheck_n = 100", "crosscheck_n = 0") + "[attack.square]\nn_queries = 100\n")
    profile = load_profile(str(path))
    plan = SimpleNamespace(profile=profile, attacks=[profile.attack("fgsm"), profile.attack("square")],
                           views=["raw"], progress=False)
    split = mini_data.test.subset(stratified_indices(mini_data.test.labels, N_EVAL, 0))
    ctx = SimpleNamespace(plan=plan, eval_split=split, data=SimpleNamespace(num_classes=10))
    (suite_family,) = [F for F in FAMILIES if F.name == "attacks"]
    family = suite_family.prepare(ctx, print)
    suite = family.run(masked, spec, ctx, print)
    assert [m.identity for m in suite] == family.planned(spec, ctx)
    clean, fgsm, square = suite
    positions = stratified_indices(split.labels, 60, 3)
    assert square.n == 60 and square.extra["positions"] == {"eval_n": N_EVAL, "index": positions.tolist()}
    sq_bits, fgsm_bits = unpack_bits(square.bits, 60), unpack_bits(fgsm.bits, N_EVAL)
    assert square.metrics["clean_acc"] == unpack_bits(clean.bits, N_EVAL)[positions.numpy()].mean()
    assert square.metrics["robust_acc"] < fgsm.metrics["robust_acc"]  # the black box breaks the masked model
    store = ResultStore(tmp_path / "store")
    for m in suite:
        store.put(_record(m))
    board = leaderboard(store.table(), store.bits_table()).set_index("model").loc["fastnetw8_T1"]
    assert board.robust_min == square.metrics["robust_acc"] and board.robust_min_by == "square/any"
    worst = fgsm_bits.copy()
    worst[positions.numpy()] &= sq_bits
    assert board.robust_worst == pytest.approx(worst.mean())
    # the black-box check compares on Square's 60 images, not FGSM's 200 against Square's 60
    assert board.blackbox_gap_n == 60
    assert board.blackbox_gap == pytest.approx(fgsm_bits[positions.numpy()].mean() - sq_bits.mean())


def test_quick_suite_has_a_scale_invariant_multi_targeted_attack():
    """AutoAttack's second attack (multi-targeted, scale-free loss) is what found fastnet_T50 at
    1.0% where the quick suite said 2.6%."""
    for profile in ("quick", "smoke"):
        attacks = load_profile(profile).eval.attacks
        assert any(ATTACKS[a].targeted == "multi" and ATTACKS[a].view_invariant for a in attacks), profile


def test_a_retraining_to_other_weights_leaves_the_earlier_weights_out(tmp_path):
    """A run key retrained to other weights (another CPU or thread count) and measured again in
    part (clean accuracy and CE-PGD only): the leaderboard row is the new weights' alone, not
    their clean accuracy beside the old weights' robust_min under the new hash."""
    from tests.builders import StoreBuilder
    b = StoreBuilder(tmp_path, n=200)
    b.model("fastnet_T1", 1, 0.80, pgd_raw=0.30, pgd_scaled=0.30, margin=0.10)
    spec = b.specs["fastnet_T1"]
    b.weights = "1" * 64
    b._put(spec, "clean", "clean", "none", {"accuracy": 0.70}, bits=None)
    b._put(spec, "attack", "pgd", "raw", {"clean_acc": 0.70, "robust_acc": 0.25, "success_rate": 0.6},
           eps=8 / 255, steps=10, params={"eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "random_start": True})
    tidy, board, _ = b.tables()
    row = board.set_index("model").loc["fastnet_T1"]
    assert row["weights_sha256"] == "1" * 64 and row["clean"] == pytest.approx(0.70)
    assert row["robust_min"] == pytest.approx(0.25)  # the old weights' margin PGD (10%) left out
    assert set(tidy.weights_sha256) == {"0" * 64, "1" * 64}  # results.csv keeps every row
