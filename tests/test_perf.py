"""`make perf`'s own output: a real (tiny) training comparison and the budget-scaling line."""
from dataclasses import replace

import torch

from bench.tools.perf import budget_scale, early_stop_timings, main


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
    assert main(["--data-root", str(mini_root), "--sections", "train", "--train-images", "64"]) == 2


def test_the_early_stop_table_varies_both_sides_random_starts(tiny_model, test_split, capsys):
    # the early-stop section's PGD-20 table on the suite's tiny model (seen once at its own T=1,
    # once as if trained at T=50, for the scaled view's row); what is checked is the table, not
    # the speed
    spec, model = tiny_model
    hot = replace(spec, temperature=50.0, lr_scale=True)
    early_stop_timings([(spec, model, "tiny"), (hot, model, "tiny")], test_split.subset(torch.arange(100)), 2)
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith((f"  {spec.name} ", f"  {hot.name} "))]
    assert [r[:2] for r in rows] == [[spec.name, "raw"], [hot.name, "raw"], [hot.name, "scaled"]]
    for r in rows:
        # robust accuracy on each side as "mean% (lo-hi)" over the runs' random starts; the
        # early-stopped points robust only where the last iterate leaves them robust too
        for mean, spread in ((r[5], r[6]), (r[7], r[8])):
            lo, hi = (float(v) for v in spread.strip("()").split("-"))
            assert lo <= float(mean.rstrip("%")) <= hi
        assert r[11] == "yes"
    assert "seed 0; an image robust in the first and not the second would say NO" in out
    # the plain column of a row attacks that row's view (it attacked the raw one beside the scaled row)
    from attacks.views import make_view
    from bench.tools.perf import plain_pgd
    split = test_split.subset(torch.arange(100))
    for r, view in zip(rows[1:], ("raw", "scaled")):
        want = []
        for seed in range(2):
            torch.manual_seed(seed)
            want.append(plain_pgd(make_view(model, view, 50.0), split.images, split.labels, 500, steps=20)[1])
        assert r[7] == f"{100 * sum(want) / 2:.1f}%", (view, r, want)
