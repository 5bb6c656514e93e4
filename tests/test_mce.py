"""The mean corruption error against each model's T=1 baseline: over the (corruption, severity)
cells the two share, and against a baseline of the model's own dataset."""
import math

import pytest

from tests.builders import BENCH_CORRUPTIONS, StoreBuilder


def corrupt(b: StoreBuilder, name: str, clean: float, by_severity: dict, n: int = 500):
    """A model's corruption records: every corruption of BENCH_CORRUPTIONS at the given severities,
    each at its accuracy."""
    cells = [("none", 0, clean)] + [(c, s, a) for c in BENCH_CORRUPTIONS for s, a in by_severity.items()]
    for c, sev, value in cells:
        b._put(b.specs[name], "corruption", "corruption", "none", {"accuracy": value}, n=n,
               params={"corruption": c, "severity": sev, "source": "cifar10c-generated"},
               source="cifar10c-generated", corruption=c, severity=sev)


def test_mce_is_over_the_cells_both_models_have(tmp_path):
    """A model corrupted at severity 5 alone, erring there as its baseline does (which has
    severities 1 and 5): mCE 100%, where the sums over each one's own severities gave 62.5%; a
    model with no severity in common with its baseline has no mCE."""
    b = StoreBuilder(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.80)
    corrupt(b, "fastnet_T1", 0.80, {1: 0.70, 5: 0.50})
    b.model("fastnet_T5", 5, 0.80)
    corrupt(b, "fastnet_T5", 0.80, {5: 0.50})
    b.model("fastnet_T10", 10, 0.80)
    corrupt(b, "fastnet_T10", 0.80, {3: 0.60})
    board = b.tables()[1].set_index("model")
    assert board.loc["fastnet_T5", "mCE"] == pytest.approx(1.0)
    # the relative mCE on the same cells: (0.5 - 0.2) / (0.5 - 0.2)
    assert board.loc["fastnet_T5", "rel_mCE"] == pytest.approx(1.0)
    assert board.loc["fastnet_T5", "mCE_baseline"] == "fastnet_T1"
    assert math.isnan(board.loc["fastnet_T10", "mCE"]) and math.isnan(board.loc["fastnet_T10", "rel_mCE"])
    assert board.loc["fastnet_T1", "mCE"] == pytest.approx(1.0)


def test_mce_baseline_is_of_the_models_dataset(tmp_path):
    """fastnet_T1 on two datasets in one store: fastnet_T5 of cifar10 is normalised by the cifar10
    T=1 model (the same errors: 100%), not by the JPEG copy's (which sorts first: it gave 50%)."""
    StoreBuilder(tmp_path, n=1000).model("fastnet_T1", 1, 0.80, mca=0.40)
    b = StoreBuilder(tmp_path, n=1000, dataset="cifar10").model("fastnet_T1", 1, 0.80, mca=0.70)
    b.model("fastnet_T5", 5, 0.80, mca=0.70)
    board = b.tables()[1].set_index("model")
    assert board.loc["fastnet_T5", "mCE_baseline"] == "fastnet_T1 [cifar10]"
    assert board.loc["fastnet_T5", "mCE"] == pytest.approx(1.0)
    assert board.loc["fastnet_T1 [cifar10-jpeg75]", "mCE_baseline"] == "fastnet_T1 [cifar10-jpeg75]"
