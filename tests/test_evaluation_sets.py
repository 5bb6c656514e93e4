"""A store that holds a model's measurements twice: evaluated with another --n-test, an attack at
another budget, corruptions from both sources. results.csv keeps everything; the leaderboard row is
one evaluation, one budget (the stronger), one source (the real CIFAR-10-C), never an average of
two under a name that says one (it was: clean accuracy 43.8% from 45.5% on 400 images and 42.0% on
100, shown as n=100)."""
import json

import pandas as pd
import pytest
import torch

from bench.run import main
from bench.store import pack_bits
from tests.builders import StoreBuilder

PROFILE = """
name = "nsets"
description = "one tiny model, evaluated on two numbers of test images"
[recipe]
epochs = 4
batch_size = 64
lr = 0.1
train_subset = 1000
[eval]
split = "test"
n = 100
batch_size = 100
attacks = ["pgd"]
views = ["raw", "scaled"]
[attack.pgd]
steps = 2
[[grid]]
arch = "fastnetw8"
T = [1]
"""


def value(tidy, n, threat, view, metric):
    rows = tidy[(tidy.n == n) & (tidy.threat == threat) & (tidy.view == view) & (tidy.metric == metric)]
    assert len(rows) == 1, rows
    return float(rows.value.iloc[0])


@pytest.fixture(scope="module")
def store(mini_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("nsets")
    (base / "p.toml").write_text(PROFILE)
    args = ["--profile", str(base / "p.toml"), "--data-root", str(mini_root), "--cache", str(base / "cache"),
            "--results", str(base / "out"), "--no-progress", "--tables-only"]
    assert main(args) == 0  # 100 images: clean, PGD
    assert main(args + ["--n-test", "50", "--attack", "pgd,fgsm"]) == 0  # 50: clean, PGD again, FGSM only here
    return base / "out", args


def test_the_row_is_one_evaluation(store):
    out, _ = store
    tidy = pd.read_csv(out / "results.csv")
    assert set(tidy[tidy.threat == "clean"].n) == {50, 100}  # both kept in the store
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 1
    row = board.iloc[0]
    assert row["n"] == 100 and row["clean"] == value(tidy, 100, "clean", "none", "accuracy")
    pgd = {view: value(tidy, 100, "pgd", view, "robust_acc") for view in ("raw", "scaled")}
    assert row["pgd_raw@8/255"] == pgd["raw"] and row["pgd_scaled@8/255"] == pgd["scaled"]
    # FGSM ran on the 50-image evaluation only: not a measurement of these 100 images
    assert "fgsm_raw@8/255" not in board.columns
    assert row["robust_min"] == min(pgd.values()) and row["robust_worst"] <= row["robust_min"]


def test_an_attack_added_on_the_same_images_joins_the_row(store):
    out, args = store
    assert main(args + ["--attack", "fgsm"]) == 0  # FGSM on the 100 images now
    tidy = pd.read_csv(out / "results.csv")
    board = pd.read_csv(out / "leaderboard.csv").set_index("model")
    row = board.iloc[0]
    assert row["n"] == 100 and row["fgsm_raw@8/255"] == value(tidy, 100, "fgsm", "raw", "robust_acc")
    assert row["robust_min"] == min(value(tidy, 100, t, v, "robust_acc") for t in ("pgd", "fgsm")
                                    for v in ("raw", "scaled"))


def test_an_attack_at_two_budgets_counts_once_at_its_strongest(store):
    """PGD-2 by the profile, then a much weaker PGD (one step of 0.0004 from the image itself) on
    the same images: both stay in results.csv; the column is the stronger one's, not their average
    (a number no attack gave)."""
    out, args = store
    assert main(args + ["--attack", "pgd", "--steps", "1", "--alpha", "0.0004",
                        "--param", "pgd.random_start=false"]) == 0
    tidy = pd.read_csv(out / "results.csv")
    row = pd.read_csv(out / "leaderboard.csv").set_index("model").iloc[0]
    for view in ("raw", "scaled"):
        runs = tidy[(tidy.n == 100) & (tidy.threat == "pgd") & (tidy.view == view) & (tidy.metric == "robust_acc")]
        assert sorted(runs.steps) == [1, 2] and runs.value.nunique() == 2, runs.value
        assert row[f"pgd_{view}@8/255"] == runs.value.min()
    assert row["robust_worst"] <= row["robust_min"]


def test_corruptions_from_one_source(tmp_path):
    """Generated corruptions on 500 images, then the real CIFAR-10-C on 10,000 (a later run with
    --corruption-source real): mCA is the real one's, not the mean of both under one c_source."""
    b = StoreBuilder(tmp_path, n=1000).model("fastnet_T1", 1, 0.80, mca=0.50)
    b.corruptions("fastnet_T1", 0.80, 0.70, n=10000, source="cifar10c")
    tidy, board, _ = b.tables()
    assert set(tidy[tidy.family == "corruption"].source) == {"cifar10c", "cifar10c-generated"}
    row = board.set_index("model").loc["fastnet_T1"]
    assert row["c_source"] == "cifar10c" and row["mCA"] == pytest.approx(0.70) and row["c_n"] == 10000


def test_one_model_name_on_two_datasets_is_two_rows(tmp_path):
    """fastnet_T1 measured on the JPEG copy and on CIFAR-10 (another --data-root, one store): a row
    each, named by its dataset, each with its own numbers; the leaderboard had one row averaging
    the two under one dataset's name."""
    StoreBuilder(tmp_path, n=1000, dataset="cifar10").model("fastnet_T1", 1, 0.60, pgd_raw=0.2, pgd_scaled=0.2)
    b = StoreBuilder(tmp_path, n=1000).model("fastnet_T1", 1, 0.80, pgd_raw=0.1, pgd_scaled=0.1)
    b.model("fastnet_T5", 5, 0.82, pgd_raw=0.1, pgd_scaled=0.1)
    board = b.tables()[1].set_index("model")
    assert sorted(board.index) == ["fastnet_T1 [cifar10-jpeg75]", "fastnet_T1 [cifar10]", "fastnet_T5"]
    assert board.loc["fastnet_T1 [cifar10]", ["dataset", "clean", "robust_min"]].tolist() == ["cifar10", 0.60, 0.2]
    assert board.loc["fastnet_T1 [cifar10-jpeg75]", ["dataset", "clean", "robust_min"]].tolist() == \
        ["cifar10-jpeg75", 0.80, 0.1]


def test_the_worst_case_counts_every_budget(tmp_path):
    """Two runs of one attack on the same images, each breaking images the other did not: the
    column is the stronger's, and robust_worst counts an image robust only if neither broke it."""
    b = StoreBuilder(tmp_path, n=10).model("fastnet_T1", 1, 1.0, pgd_raw=0.5, pgd_scaled=0.5)
    # model() leaves the first 5 images robust under every attack; this PGD-50, 6 others and 2 of those
    other = torch.tensor([True, True, False, False, False, False, True, True, True, True])
    b._put(b.specs["fastnet_T1"], "attack", "pgd", "raw", {"clean_acc": 1.0, "robust_acc": 0.6}, eps=8 / 255,
           steps=50, params={"eps": 8 / 255, "alpha": 2 / 255, "steps": 50, "random_start": True},
           bits=pack_bits(other))
    row = b.tables()[1].set_index("model").loc["fastnet_T1"]
    assert row["pgd_raw@8/255"] == 0.5  # the stronger run's
    assert row["robust_worst"] == pytest.approx(0.2)  # images 0 and 1 survive both runs


PARTS_PROFILE = PROFILE.replace('name = "nsets"', 'name = "parts"').replace('attacks = ["pgd"]', '''\
attacks = ["pgd", "fgsm"]
attack_n = {fgsm = 20}
fp64_n = 20
crosscheck_n = 20''') + """
[attack.autoattack]
steps = 2
n_queries = 20
[attack.autoattack_ref]
steps = 2
n_queries = 20
"""
PARTS = {"fgsm", "pgd_fp64", "autoattack_crosscheck"}  # 20 images drawn from the evaluation's own


def parts(out):
    """{(threat, view, the evaluation's n): (the record's file, when it was written)} of the parts
    (the file's time: a record's own timestamp is to the second, and these runs take less)."""
    from bench.store import ResultStore, part_of
    return {(r["threat"], r["view"], part_of(r)): (r["id"], (out / "records" / f"{r['id']}.json").stat().st_mtime_ns)
            for r in ResultStore(out).records() if r["threat"] in PARTS}


def test_parts_of_two_evaluations_are_two_measurements(mini_root, tmp_path):
    """The cross-check, an attack on [eval] attack_n images and the float64 check each take 20 of the
    evaluation's images: 20 of 100 and 20 of 50 are other images. The second evaluation measured its
    own (they were 'already done', the first's, which the report then left out of its row), and
    --force on it kept the first's (it overwrote them, so the 100-image row lost its cross-check)."""
    (tmp_path / "p.toml").write_text(PARTS_PROFILE)
    args = ["--profile", str(tmp_path / "p.toml"), "--data-root", str(mini_root), "--cache", str(tmp_path / "c"),
            "--results", str(tmp_path / "out"), "--no-progress", "--tables-only", "--attack", "fgsm,fp64,crosscheck"]
    out = tmp_path / "out"
    assert main(args) == 0
    first = parts(out)
    from bench.store import ResultStore  # each record says how its batches fell: a random start's seed is its batch's
    assert {r["eval_batch_size"] for r in ResultStore(out).records()} == {100}
    assert set(first) == {("fgsm", "raw", 100), ("fgsm", "scaled", 100), ("pgd_fp64", "raw", 100),
                          ("autoattack_crosscheck", "raw", 100)}
    assert main(args + ["--n-test", "50"]) == 0
    both = parts(out)
    assert {k for k in both if k[2] == 50} == {(t, v, 50) for t, v, _ in first} and len(both) == 8
    assert main(args + ["--n-test", "50", "--force"]) == 0
    again = parts(out)
    assert {k: again[k] for k in first} == first  # the 100-image evaluation's parts untouched
    assert all(again[k][1] != both[k][1] for k in again if k[2] == 50)  # measured again
    row = pd.read_csv(out / "leaderboard.csv").iloc[0]  # the larger evaluation's, with its cross-check
    assert row["n"] == 100 and row["aa_crosscheck_n"] == 20 and "2 iterations" in row["aa_crosscheck_budget"]


def test_a_part_under_its_old_name_is_found_and_replaced_not_doubled(mini_root, tmp_path):
    """Records made before the evaluation's n was in a part's id (the committed stores hold them)
    are read, count as done for the evaluation their positions name (and not for another), and
    give way to the new name when measured again, so no measurement is in the store twice."""
    from bench.store import legacy_record_id
    (tmp_path / "p.toml").write_text(PARTS_PROFILE)
    args = ["--profile", str(tmp_path / "p.toml"), "--data-root", str(mini_root), "--cache", str(tmp_path / "c"),
            "--results", str(tmp_path / "out"), "--no-progress", "--tables-only", "--attack", "fgsm,fp64"]
    out, records = tmp_path / "out", tmp_path / "out" / "records"
    assert main(args) == 0
    made = parts(out)
    old = {}
    for key, (rid, _) in made.items():  # as an older harness named them
        rec = json.loads((records / f"{rid}.json").read_text())
        rec["id"] = old[key] = legacy_record_id(rec)
        assert old[key] != rid
        (records / f"{rid}.json").unlink()
        (records / f"{rec['id']}.json").write_text(json.dumps(rec))
    renamed = parts(out)
    assert {k: rid for k, (rid, _) in renamed.items()} == old
    assert main(args) == 0  # all found: nothing measured again
    assert parts(out) == renamed
    assert main(args + ["--n-test", "50"]) == 0  # not the 50-image evaluation's: measured for it
    assert len(parts(out)) == 6 and {k: v for k, v in parts(out).items() if k[2] == 100} == renamed
    assert main(args + ["--force"]) == 0  # measured again: under the new name, the old file gone
    now = parts(out)
    assert len(now) == 6 and {k: now[k][0] for k in made} == {k: rid for k, (rid, _) in made.items()}
    assert not any((records / f"{rid}.json").exists() for rid in old.values())


def test_a_whole_evaluation_of_a_parts_size_is_not_that_part(mini_root, tmp_path):
    """A part's old name (no evaluation's n in it) is also the name of a whole evaluation on as many
    images: FGSM and the float64 check on all of a 20-image evaluation were taken as the 20-image
    parts of the 100-image one (never measured there: its row lost its FGSM and the float64 check),
    and measuring those parts deleted the 20-image evaluation's records as their 'old copies'."""
    (tmp_path / "p.toml").write_text(PARTS_PROFILE)
    args = ["--profile", str(tmp_path / "p.toml"), "--data-root", str(mini_root), "--cache", str(tmp_path / "c"),
            "--results", str(tmp_path / "out"), "--no-progress", "--tables-only", "--attack", "fgsm,fp64"]
    out = tmp_path / "out"
    assert main(args + ["--n-test", "20"]) == 0
    whole = parts(out)
    # a whole evaluation's attack names no evaluation; the float64 check names its own
    assert set(whole) == {("fgsm", "raw", None), ("fgsm", "scaled", None), ("pgd_fp64", "raw", 20)}
    assert main(args) == 0
    now = parts(out)
    assert {k: now[k] for k in whole} == whole  # the 20-image evaluation's, untouched
    assert {k for k in now if k[2] == 100} == {(t, v, 100) for t, v, _ in whole}  # the 100's own too
    assert main(args + ["--force"]) == 0
    assert {k: v for k, v in parts(out).items() if k in whole} == whole


def test_a_transfer_attack_from_a_retrained_surrogate_is_measured_again(mini_root, tmp_path):
    """The transfer record's identity names the surrogate's checkpoint key, which is its recipe, not
    its weights: a surrogate trained again to other weights (another CPU or thread count) made the
    target's record, crafted on weights that no longer exist, count as done."""
    from bench.checkpoints import CheckpointStore
    from bench.store import ResultStore
    from models import parse_name
    (tmp_path / "p.toml").write_text(PROFILE.replace('T = [1]', 'T = [1, 10]'))
    args = ["--profile", str(tmp_path / "p.toml"), "--data-root", str(mini_root), "--cache", str(tmp_path / "c"),
            "--results", str(tmp_path / "out"), "--no-progress", "--tables-only", "--attack", "transfer"]

    def transfer():
        recs = [r for r in ResultStore(tmp_path / "out").records() if r["threat"] == "transfer"]
        assert len(recs) == 1 and recs[0]["model"] == "fastnetw8_T10"
        return recs[0]

    assert main(args) == 0
    first = transfer()
    ckpts = CheckpointStore(tmp_path / "c" / "checkpoints")
    spec, key = parse_name("fastnetw8_T1"), first["params"]["surrogate_key"]
    assert first["surrogate_weights_sha256"] == ckpts.verify(spec, key)["weights_sha256"]
    model, meta = ckpts.load(spec, key, 10, torch.device("cpu"))
    with torch.no_grad():  # the same recipe trained to other weights
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    meta = ckpts.save(spec, key, model, {k: v for k, v in meta.items() if k != "weights_sha256"})
    assert main(args) == 0
    second = transfer()
    assert second["surrogate_weights_sha256"] == meta["weights_sha256"] != first["surrogate_weights_sha256"]
    assert main(args) == 0 and transfer() == second  # and now it is current


def test_one_subset_of_images_a_model(tmp_path):
    """fastnet_T1 evaluated on the images of subset_seed 0, then on those of subset_seed 1 (as
    many): the row is the later subset's alone, where clean accuracy was the mean of both and
    robust_min, robust_worst the minimum over two sets of images. Where the first subset is the
    larger, it is the row's, though older. results.csv keeps every row, in its columns."""
    from bench.report.publish import write_reports
    from bench.store import COLUMNS
    b = StoreBuilder(tmp_path / "same_n", n=1000).model("fastnet_T1", 1, 0.80, pgd_raw=0.1, pgd_scaled=0.1, mca=0.5)
    b.subset_seed = 1
    b.model("fastnet_T1", 1, 0.60, pgd_raw=0.3, pgd_scaled=0.3, mca=0.4)
    tidy, board, _ = b.tables()
    assert set(tidy.subset_seed) == {0, 1}
    row = board.set_index("model").loc["fastnet_T1"]
    assert (row["clean"], row["robust_min"], row["robust_worst"], row["mCA"]) == pytest.approx((0.60, 0.3, 0.3, 0.4))
    write_reports(b.store, tmp_path / "out", pages=False)
    written = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(written.columns) == COLUMNS and len(written) == len(tidy)

    b = StoreBuilder(tmp_path / "larger", n=2000).model("fastnet_T1", 1, 0.80, pgd_raw=0.1, pgd_scaled=0.1)
    b.n, b.subset_seed = 1000, 1
    b.model("fastnet_T1", 1, 0.60, pgd_raw=0.3, pgd_scaled=0.3)
    row = b.tables()[1].set_index("model").loc["fastnet_T1"]
    assert (row["n"], row["clean"], row["robust_min"], row["robust_worst"]) == pytest.approx((2000, 0.80, 0.1, 0.1))
