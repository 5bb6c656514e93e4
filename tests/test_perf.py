"""`make perf`'s own output: a real (tiny) training comparison and the budget-scaling line."""
from dataclasses import replace

import pytest
import torch

from bench.tools.perf import (budget_scale, early_stop_timings, main, plain_pgd_run, print_spread,
                              same_robust, spread_note)


def test_budget_scale_gives_the_factor_its_range_and_warns_when_the_runs_disagree():
    steady = budget_scale([1900.0, 2000.0, 2100.0])
    assert "x 2.00 (runs x 1.90-2.10)" in steady and "moved" not in steady
    # one hour of a shared host, as docs/speed.md records: 1,194 to 2,629 img/s
    swung = budget_scale([1194.0, 2629.0, 1617.0])
    assert "x 1.62 (runs x 1.19-2.63)" in swung and "2.20x apart" in swung and "again idle" in swung


def test_the_training_section_runs_and_prints_its_scale(mini_root, capsys):
    # the test split (500 images) is smaller than --eval-images' default, which only the PGD sections use
    assert main(["--data-root", str(mini_root), "--sections", "train", "--repeats", "1",
                 "--train-images", "128", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "training (img/s)" in out and "scale a time measured here to the budget's box (1,000 img/s): x " in out
    assert "  same, plain on NHWC" in out and "flushes subnormal" not in out  # fastnet_T1: nothing to flush
    assert main(["--data-root", str(mini_root), "--sections", "train", "--repeats", "1", "--model", "fastnetw8_T50",
                 "--train-images", "128", "--workers", "0"]) == 0
    assert "at T=50 the harness flushes subnormal floats while it trains" in capsys.readouterr().out


def test_a_section_checks_only_the_image_counts_it_uses(mini_root, capsys):
    # neither --train-images (below a batch) nor --eval-images (default 1,000, the split has 500)
    # matters to the corruption table
    assert main(["--data-root", str(mini_root), "--sections", "corruptions", "--corruption-images", "20",
                 "--train-images", "64"]) == 0
    out = capsys.readouterr().out
    assert "corruptions on 20 test images" in out and "total" in out and "training (img/s)" not in out
    # every row is the median of --repeats runs, as the header says (it was one run whatever
    # --repeats said), and the reference figure measured on another machine is gone
    assert "median of 5" in out and "reference" not in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and not line.startswith("  (")
            and "apart" not in line]
    assert len(rows) == 20 and rows[-1][0] == "total"  # 19 corruptions and the total
    for r in rows:
        runs = [float(v) for v in r[3:]]
        assert len(runs) == 5 and abs(float(r[1]) - sorted(runs)[2]) < 0.0051, r
    assert main(["--data-root", str(mini_root), "--sections", "train", "--train-images", "64"]) == 2


def test_the_early_stop_table_varies_both_sides_random_starts(tiny_model, test_split, capsys):
    # the early-stop section's PGD-20 table on the suite's tiny model (seen once at its own T=1,
    # once as if trained at T=50, for the scaled view's row); what is checked is the table, not
    # the speed
    spec, model = tiny_model
    hot = replace(spec, temperature=50.0, lr_scale=True)
    split = test_split.subset(torch.arange(100))
    early_stop_timings([(spec, model, "tiny"), (hot, model, "tiny")], split, 2)
    out, own = capsys.readouterr().out.split("early stop alone")

    def table(text):
        return [line.split() for line in text.splitlines() if line.startswith((f"  {spec.name} ", f"  {hot.name} "))]

    rows = table(out)
    assert [r[:2] for r in rows] == [[spec.name, "raw"], [hot.name, "raw"], [hot.name, "scaled"]]
    # the early stop's own ratio: the attacks alone, each side's clean pass out (the harness's with
    # the masking diagnostics' backward pass), each side's attack shorter than its whole run
    own_rows = table(own)
    assert [r[:2] for r in own_rows] == [r[:2] for r in rows]
    for r, whole in zip(own_rows, rows):
        h, p, ratio, diag, clean = (float(v) for v in r[2:7])
        # the seconds print to 0.1 s: the ratio lies within what the rounded times allow
        lo, hi = (p - 0.05) / (h + 0.05), (p + 0.05) / (h - 0.05) if h > 0.05 else float("inf")
        assert lo - 0.006 <= ratio <= hi + 0.006 and diag > 0 and clean > 0, r
        runs = " ".join(r[7:]).split(" | ")
        assert len(runs) == 2 and all(len(side.split()) == 2 for side in runs), r
        assert h <= float(whole[2]) + 0.1 and p <= float(whole[4]) + 0.1, (r, whole)  # each printed to 0.1 s
    with torch.no_grad():
        clean = float((model(split.images.float() / 255).argmax(1) == split.labels).float().mean())
    for r in rows:
        # seconds: harness, plain-all, plain-ok; ratios against each plain loop
        h, p_all, p_ok, vs_all, vs_ok = (float(v) for v in r[2:7])
        # robust accuracy on each side as "mean% (lo-hi)" over the runs' random starts
        for mean, spread in ((r[7], r[8]), (r[9], r[10]), (r[11], r[12])):
            lo, hi = (float(v) for v in spread.strip("()").split("-"))
            assert lo <= float(mean.rstrip("%")) <= hi
        # backward passes per image: the plain loops' are 20 x the fraction they attack (all
        # of them, or the clean-correct ones), not a literal 20 for both
        assert float(r[14]) == 20.0 and abs(float(r[15]) - 20 * clean) < 0.006, (r, clean)
        # the early stop's robust images checked against the plain loop from the same starts
        assert r[16] == "yes" and int(r[17].split("/")[0]) > 0, r
    assert "plain-ok: the same loop on the points the model classifies correctly" in out
    # the plain-all column of a row attacks that row's view (it attacked the raw one beside the scaled row)
    from attacks.views import make_view
    for r, view in zip(rows[1:], ("raw", "scaled")):
        want = []
        for seed in range(2):
            torch.manual_seed(seed)
            run = plain_pgd_run(make_view(model, view, 50.0), split.images, split.labels, 500, steps=20)
            want.append(run.robust_acc)
        assert r[9] == f"{100 * sum(want) / 2:.1f}%", (view, r, want)


def test_the_early_stop_subset_column_says_n_a_where_nothing_is_robust(tiny_model, test_split, capsys):
    # images the model misclassifies: nothing can be robust, and "yes 0/0" claimed a check that checked nothing
    spec, model = tiny_model
    with torch.no_grad():
        wrong = (model(test_split.images.float() / 255).argmax(1) != test_split.labels).nonzero().flatten()[:20]
    early_stop_timings([(spec, model, "tiny")], test_split.subset(wrong), 1)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"  {spec.name} "))
    assert "n/a (0 robust)" in row and "yes" not in row
    assert row.split()[15] == "0.00"  # the plain loop on the correct ones attacks none of them


def test_the_plain_loop_on_the_correct_points_starts_where_the_harness_does(tiny_model, test_split):
    # one image a batch, where the harness's summed loss is torchattacks' mean: its PGD without
    # the early stop and the plain loop on the clean-correct points, both with seed 3, leave the
    # same images robust only if each point starts from the same random draw
    from bench.measure.adversarial import evaluate
    from bench.store import unpack_bits
    from attacks import make_attack
    spec, model = tiny_model
    split = test_split.subset(torch.arange(60))
    m = evaluate(model, 1.0, split, [make_attack("pgd", {"steps": 3, "early_stop": False})], ["raw"],
                 batch_size=1, seed=3)
    harness = torch.from_numpy(unpack_bits(m[1].bits, len(split))).bool()
    plain = plain_pgd_run(model, split.images, split.labels, 1, steps=3, correct_only=True, seed=3)
    assert torch.equal(plain.robust, harness) and 0 < int(harness.sum()) < int(m[0].metrics["accuracy"] * 60)
    # its backward passes are the steps times the fraction it attacks, not the steps
    assert plain.backward_per_image == pytest.approx(3 * m[0].metrics["accuracy"])
    assert plain.robust_acc == m[1].metrics["robust_acc"]


def test_the_apgd_same_column_is_n_a_where_both_sides_agree_vacuously():
    # both sides leaving every image robust, or none, agree whatever the attacks did: "yes" said nothing
    every, none = torch.ones(5, dtype=torch.bool), torch.zeros(5, dtype=torch.bool)
    some = torch.tensor([True, False, True, False, False])
    assert same_robust(every, every.clone()) == "n/a (all robust)"
    assert same_robust(none, none.clone()) == "n/a (none robust)"
    assert same_robust(some, some.clone()) == "yes" and same_robust(some, none) == "NO"


def test_every_timed_row_warns_when_its_runs_are_far_apart(capsys):
    assert spread_note("x harness", [1.0, 1.2, 1.1]) is None
    assert spread_note("x plain", [2.0, 2.6]) == "x plain 1.30x"
    print_spread([None, None], "  ")
    assert capsys.readouterr().out == ""
    print_spread([None, spread_note("x plain", [2.0, 2.6])], "  ")
    out = capsys.readouterr().out
    assert "runs more than 1.25x apart" in out and "(x plain 1.30x)" in out
