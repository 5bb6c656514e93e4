"""The HTML report and the claim verdicts, on real result stores built here with ResultStore.put
(records shaped like those of results/quick/records), and on the committed results/quick (read
only)."""
from __future__ import annotations

import base64
import html.parser
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.claims import (INCONCLUSIVE, NOT_MEASURED, NOT_SUPPORTED, SUPPORTED, THRESHOLDS, VERDICTS, WEAK_ONLY,
                          claims_from_store, combine, evaluate_claims, improvement_verdict)
from bench.evaluate import pack_bits
from bench.publish import write_reports
from bench.report import leaderboard
from bench.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
EPS = 8 / 255
PROV = {"code_version": "abc123def456", "torch_version": "2.99.0+test", "device": "cpu (2 threads)"}
BENCH_CORRUPTIONS = ["gaussian_noise", "fog", "contrast"]

# ---------------------------------------------------------------------------------------------
# A store factory (also used by test_browser.py and test_export.py)


def _bits(frac: float, n: int) -> str:
    """The first round(frac*n) images are right: nested sets, as when models agree on easy images."""
    import torch
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:int(round(frac * n))] = True
    return pack_bits(mask)


class StoreBuilder:
    """Writes records the way bench.runner does: one per measurement, with identity, spec columns,
    provenance, metrics and per-image bits."""

    def __init__(self, root: Path, n: int = 1000, dataset: str = "cifar10-jpeg75"):
        self.store = ResultStore(root)
        self.n, self.dataset = n, dataset
        self.minute = 0

    def _put(self, spec: dict, family: str, threat: str, view: str, metrics: dict, *, eps=0.0, steps=0, params=None,
             n=None, bits=None, source=None, corruption=None, severity=None, magnitude=None):
        n = n or self.n
        self.minute += 1
        rec = dict(spec, run_key=spec["run_key"], dataset=self.dataset, split="test", n=n, subset_seed=0,
                   attack_seed=0, threat=threat, view=view, params=params or {}, family=family,
                   source=source or f"{self.dataset}:test", num_classes=10, corruption=corruption,
                   severity=severity, magnitude=magnitude, eps=eps, steps=steps, metrics=metrics, wall_s=0.1,
                   weights_sha256="0" * 64, profile="test",
                   timestamp=f"2026-01-01T{10 + self.minute // 60:02d}:{self.minute % 60:02d}:00+00:00", **PROV)
        if bits is not None:
            rec["bits"] = bits
        self.store.put(rec)

    def model(self, name: str, T: float, clean: float, *, arch="fastnet", head="plain", regime="std", lr_scale=False,
              seed=0, checkpoint="last", pgd_raw=0.0, pgd_scaled=0.0, margin=None, square=None, targeted_raw=None,
              targeted_scaled=None, mca=None, nat=None, worst_grid=None, cifar101=None, crosscheck=None, zero_grad=0.0,
              saturated=0.0, feature_dim=64):
        """One model's measurements at 8/255 (accuracies as fractions). Attacks not given default to
        the model's weakest result, so robust_min is min(pgd_raw, pgd_scaled) unless a stronger one
        is named."""
        spec = {"run_key": f"key_{name}", "model": name, "arch": arch, "T": float(T), "head": head, "regime": regime,
                "lr_scale": lr_scale, "seed": seed, "feature_dim": feature_dim, "checkpoint": checkpoint}
        n = self.n
        self._put(spec, "clean", "clean", "none", {"accuracy": clean}, bits=_bits(clean, n))
        floor = min(pgd_raw, pgd_scaled)

        def attack(threat, view, robust, extra=None):
            m = {"clean_acc": clean, "robust_acc": robust, "success_rate": 1 - robust / clean if clean else float("nan"),
                 "max_linf": EPS, "max_l2": 1.5}
            if view in ("raw", "scaled"):
                m.update(zero_grad_frac=zero_grad if view == "raw" else 0.0,
                         saturated_frac=saturated if view == "raw" else 0.0)
            self._put(spec, "attack", threat, view, dict(m, **(extra or {})), eps=EPS, steps=10,
                      params={"eps": EPS, "alpha": 2 / 255, "steps": 10, "random_start": True}, bits=_bits(robust, n))

        attack("pgd", "raw", pgd_raw)
        attack("pgd", "scaled", pgd_scaled)
        attack("pgd_margin", "any", floor if margin is None else margin)
        attack("square", "any", floor if square is None else square)
        attack("pgd_target_ll", "raw", floor if targeted_raw is None else targeted_raw)
        attack("pgd_target_ll", "scaled", floor if targeted_scaled is None else targeted_scaled)
        if crosscheck is not None:
            self._put(spec, "diagnostic", "autoattack_crosscheck", "raw",
                      {"clean_acc": clean, "robust_acc_torchattacks": crosscheck, "robust_acc_pyautoattack": crosscheck,
                       "abs_diff": 0.0}, eps=EPS, steps=100, n=100,
                      params={"attacks": ["autoattack", "autoattack_ref"], "eps": EPS, "version": "standard"})
        if mca is not None:
            self._put(spec, "corruption", "corruption", "none", {"accuracy": clean}, n=500,
                      params={"corruption": "none", "severity": 0, "source": "cifar10c-generated"},
                      source="cifar10c-generated", corruption="none", severity=0)
            for c in BENCH_CORRUPTIONS:
                for sev in (1, 5):
                    self._put(spec, "corruption", "corruption", "none", {"accuracy": mca}, n=500,
                              params={"corruption": c, "severity": sev, "source": "cifar10c-generated"},
                              source="cifar10c-generated", corruption=c, severity=sev)
        if nat is not None:
            for mag in (-10, 10):
                self._put(spec, "natural", "rotate", "none", {"accuracy": nat}, n=500, params={"magnitude": mag},
                          magnitude=mag)
        if worst_grid is not None:
            self._put(spec, "natural", "worst_grid", "none", {"accuracy": worst_grid}, n=500,
                      params={"rotations": [-30, 0, 30], "shifts": [-3, 0, 3]})
        if cifar101 is not None:
            self._put(spec, "shift", "cifar10.1", "none", {"accuracy": cifar101}, n=2000, source="cifar10.1")
        return self

    def tables(self):
        tidy = self.store.table()
        bits = self.store.bits_table()
        return tidy, leaderboard(tidy, bits), bits


def sweep_store(root: Path) -> StoreBuilder:
    """A small temperature sweep shaped like results/quick: a fixed-lr arm and a loss-x-T arm."""
    b = StoreBuilder(root, n=500)
    b.model("fastnet_T1", 1, 0.62, pgd_raw=0.0, pgd_scaled=0.0, mca=0.55, nat=0.58, worst_grid=0.06, crosscheck=0.0)
    b.model("fastnet_T5", 5, 0.63, pgd_raw=0.01, pgd_scaled=0.0, mca=0.58, nat=0.60, worst_grid=0.08, crosscheck=0.0,
            saturated=0.12)
    b.model("fastnet_T50", 50, 0.30, pgd_raw=0.17, pgd_scaled=0.07, mca=0.28, nat=0.29, worst_grid=0.15,
            crosscheck=0.05, saturated=0.27, targeted_raw=0.10)
    b.model("fastnet_T50_lrT", 50, 0.58, lr_scale=True, pgd_raw=0.22, pgd_scaled=0.002, mca=0.54, nat=0.56,
            worst_grid=0.06, crosscheck=0.0, zero_grad=0.18, saturated=0.75)
    return b


def verdict_of(claims, key):
    return next(c for c in claims if c.key == key)


# ---------------------------------------------------------------------------------------------
# Claims: each verdict, on stores built here


def test_thresholds_and_vocabulary_are_fixed():
    assert VERDICTS == ("supported", "not supported", "supported only under a weak attack", "inconclusive",
                        "not measured")
    import bench.claims as claims
    for k in THRESHOLDS:  # every threshold is documented where the rules are
        assert k in claims.__doc__


def test_improvement_rule():
    z = 1.96
    assert improvement_verdict(0.10, 0.01, z) == SUPPORTED
    assert improvement_verdict(-0.10, 0.01, z) == NOT_SUPPORTED
    assert improvement_verdict(0.0, 0.001, z) == NOT_SUPPORTED  # precise, and no gain
    assert improvement_verdict(0.01, 0.01, z) == INCONCLUSIVE  # within noise
    assert improvement_verdict(0.005, 0.0001, z) == NOT_SUPPORTED  # real, but a gain of min_effect is ruled out
    assert improvement_verdict(0.015, 0.01, z) == INCONCLUSIVE  # a gain of min_effect is neither shown nor ruled out
    assert improvement_verdict(float("nan"), 0.01, z) == NOT_MEASURED


def test_combine():
    assert combine([SUPPORTED, SUPPORTED, NOT_MEASURED]) == (SUPPORTED, "")
    assert combine([SUPPORTED, WEAK_ONLY])[0] == WEAK_ONLY
    assert combine([SUPPORTED, NOT_SUPPORTED])[0] == INCONCLUSIVE
    assert combine([NOT_MEASURED])[0] == NOT_MEASURED
    assert combine([])[0] == NOT_MEASURED


def test_a1_supported_paired_over_images(tmp_path):
    b = StoreBuilder(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70).model("fastnet_T50", 50, 0.30)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    assert a1.verdict == SUPPORTED
    (c,) = a1.comparisons
    assert (c.baseline, c.candidate, c.candidate_T) == ("fastnet_T1", "fastnet_T2", 2.0)  # T=50 is not "moderate"
    assert c.se_kind == "paired" and c.n == 1000
    # nested per-image bits: 100 of 1000 images differ, all in the candidate's favour
    assert math.isclose(c.diff, 0.10) and math.isclose(c.se, np.std([1] * 100 + [0] * 900, ddof=1) / math.sqrt(1000))
    assert math.isclose(c.z, 1.96, abs_tol=0.01)  # one candidate temperature: no correction


def test_a1_not_supported_and_inconclusive(tmp_path):
    b = StoreBuilder(tmp_path / "worse", n=1000)
    b.model("fastnet_T1", 1, 0.70).model("fastnet_T2", 2, 0.60).model("fastnet_T5", 5, 0.65)
    a1 = verdict_of(evaluate_claims(*b.tables()), "A1")
    assert a1.verdict == NOT_SUPPORTED
    assert a1.comparisons[0].candidate == "fastnet_T5"  # the best of the two
    assert a1.comparisons[0].z > 2.2  # Bonferroni for the best of 2
    b = StoreBuilder(tmp_path / "noise", n=100)
    b.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.62)
    assert verdict_of(evaluate_claims(*b.tables()), "A1").verdict == INCONCLUSIVE


def test_a4_supported_only_under_a_weak_attack(tmp_path):
    """The masking trap: CE-PGD on raw logits reports robustness at high T, robust_min does not."""
    b = StoreBuilder(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.62, pgd_raw=0.0, pgd_scaled=0.0)
    b.model("fastnet_T50_lrT", 50, 0.58, lr_scale=True, pgd_raw=0.22, pgd_scaled=0.0, saturated=0.75, zero_grad=0.18)
    a4 = verdict_of(evaluate_claims(*b.tables()), "A4")
    assert a4.verdict == WEAK_ONLY
    strong = next(c for c in a4.comparisons if c.metric == "robust_min")
    weak = next(c for c in a4.comparisons if c.metric == "pgd_raw@8/255")
    assert strong.decides and not weak.decides
    assert strong.baseline == "fastnet_T1"  # the loss-x-T arm compares with the fixed-lr T=1 model
    assert weak.verdict == SUPPORTED and math.isclose(weak.diff, 0.22)
    assert "clean accuracy 58.0% at T=50" in strong.note


def test_a4_supported_under_robust_min(tmp_path):
    b = StoreBuilder(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.62).model("fastnet_T5", 5, 0.60, pgd_raw=0.30, pgd_scaled=0.25, square=0.20)
    claims = evaluate_claims(*b.tables())
    a4 = verdict_of(claims, "A4")
    assert a4.verdict == SUPPORTED
    strong = next(c for c in a4.comparisons if c.metric == "robust_min")
    assert math.isclose(strong.candidate_value, 0.20)  # Square was the strongest attack
    assert strong.se_kind == "paired"


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
    b = StoreBuilder(tmp_path, n=1000)
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
    b = StoreBuilder(tmp_path, n=1000)
    b.model("fastnet_T1", 1, 0.62, mca=0.50, nat=0.50, worst_grid=0.05, cifar101=0.50)
    b.model("fastnet_T5", 5, 0.63, mca=0.51, nat=0.70, worst_grid=0.30, cifar101=0.60)
    claims = evaluate_claims(*b.tables())
    a2 = verdict_of(claims, "A2")
    (c,) = a2.comparisons
    assert c.metric == "mCA" and c.se_kind == "binomial" and c.n == 500  # the corruption subset's size
    assert a2.verdict == INCONCLUSIVE  # +1 pp on 500 images is noise
    assert "mCE" in c.note
    a3 = verdict_of(claims, "A3")
    assert a3.verdict == SUPPORTED
    assert {c.metric for c in a3.comparisons} == {"cifar10.1", "nat_mean", "nat_worst_grid"}


def test_a6_targeted_attacks(tmp_path):
    b = StoreBuilder(tmp_path / "still", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T10", 10, 0.60, pgd_raw=0.20, targeted_raw=0.01)
    a6 = verdict_of(evaluate_claims(*b.tables()), "A6")
    assert a6.verdict == SUPPORTED
    assert a6.comparisons[0].metric == "targeted success (raw)"
    b = StoreBuilder(tmp_path / "fails", n=1000)
    b.model("fastnet_T1", 1, 0.60, targeted_raw=0.0).model("fastnet_T10", 10, 0.60, pgd_raw=0.40, targeted_raw=0.40)
    assert verdict_of(evaluate_claims(*b.tables()), "A6").verdict == NOT_SUPPORTED


def test_b_tstar_with_bn_head(tmp_path):
    def store(path, star, rival):
        b = StoreBuilder(path, n=1000)
        b.model("resnet18_T1", 1, 0.80, arch="resnet18", feature_dim=512)
        b.model("resnet18_bn_T1", 1, 0.78, arch="resnet18", head="bn", feature_dim=512)
        b.model("resnet18_bn_Tauto", 11.67, star, arch="resnet18", head="bn", feature_dim=512)
        b.model("resnet18_bn_T20", 20, rival, arch="resnet18", head="bn", feature_dim=512)
        return b.tables()
    b_ok = verdict_of(evaluate_claims(*store(tmp_path / "ok", 0.86, 0.84)), "B")
    assert b_ok.verdict == SUPPORTED
    assert len(b_ok.comparisons) == 3 and sum(c.decides for c in b_ok.comparisons) == 1
    assert b_ok.comparisons[0].candidate == "resnet18_bn_Tauto"
    b_rival = verdict_of(evaluate_claims(*store(tmp_path / "rival", 0.86, 0.92)), "B")
    assert b_rival.verdict == NOT_SUPPORTED
    # T* is not used as an "elevated T" candidate elsewhere
    a1 = verdict_of(evaluate_claims(*store(tmp_path / "ok2", 0.86, 0.84)), "A1")
    assert all("Tauto" not in c.candidate for c in a1.comparisons)


def test_seeds_are_averaged_and_their_spread_counted(tmp_path):
    b = StoreBuilder(tmp_path, n=1000)
    for s, (c1, c2) in enumerate([(0.60, 0.70), (0.62, 0.64)]):
        suffix = f"_s{s}" if s else ""
        b.model(f"fastnet_T1{suffix}", 1, c1, seed=s).model(f"fastnet_T2{suffix}", 2, c2, seed=s)
    (c,) = verdict_of(evaluate_claims(*b.tables()), "A1").comparisons
    assert math.isclose(c.diff, 0.06) and c.n == 2000
    assert "seeds (2 vs 2)" in c.se_kind
    assert c.se > np.std([0.10, 0.02], ddof=1) / math.sqrt(2) * 0.99  # the seed spread dominates
    assert c.baseline == "fastnet_T1 +1 seeds"


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


# ---------------------------------------------------------------------------------------------
# The page


class PageParser(html.parser.HTMLParser):
    """Just enough of the DOM: the leaderboard's rows and cells, images, scripts, links."""

    def __init__(self):
        super().__init__()
        self.tables, self.stack, self.images, self.scripts, self.links = {}, [], [], [], []
        self.table = None
        self.in_tbody = False
        self.cell = None
        self.headers = {}
        self.th = None
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
            self.tables[self.table] = []
            self.headers[self.table] = []
        elif tag == "tbody":
            self.in_tbody = True
        elif tag == "tr" and self.in_tbody and self.table:
            self.tables[self.table].append([])
        elif tag == "td" and self.in_tbody and self.table:
            self.cell = dict(a, text="")
            self.tables[self.table][-1].append(self.cell)
        elif tag == "th" and self.table:
            self.th = dict(a, text="")
            self.headers[self.table].append(self.th)
        elif tag == "img":
            self.images.append(a)
        elif tag == "script":
            self.scripts.append(a)
        elif tag in ("link", "a"):
            self.links.append(a)

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_tbody = False
        elif tag == "table":
            self.table = None
        elif tag == "td":
            self.cell = None
        elif tag == "th":
            self.th = None

    def handle_data(self, data):
        self.text.append(data)
        if self.cell is not None:
            self.cell["text"] += data
        if self.th is not None:
            self.th["text"] += data


def parse(path: Path) -> PageParser:
    p = PageParser()
    p.feed(path.read_text())
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A sweep store with its reports written by bench.publish.write_reports (as at the end of a run)."""
    root = tmp_path_factory.mktemp("results") / "quick"
    b = sweep_store(root)
    board = write_reports(b.store, root)
    return root, board


def test_write_reports_writes_the_page(built):
    root, board = built
    assert (root / "index.html").is_file()
    assert (root / "leaderboard_robustbench.csv").is_file() and (root / "model_cards").is_dir()
    page = parse(root / "index.html")
    rows = page.tables["leaderboard"]
    assert len(rows) == len(board) == len(pd.read_csv(root / "leaderboard.csv"))
    headers = [h.get("data-col") for h in page.headers["leaderboard"]]
    names = [r[headers.index("model")]["text"] for r in rows]
    assert names == list(board.model)  # the leaderboard's order
    for col in ("clean", "robust_min", "robust_worst", "autoattack_shown", "mCA", "masking"):
        assert col in headers
    for r, (_, b) in zip(rows, board.iterrows()):
        cell = {h: c for h, c in zip(headers, r)}
        assert cell["clean"]["text"] == f"{100 * b.clean:.1f}"
        assert cell["robust_min"]["text"] == f"{100 * b.robust_min:.1f}"
        assert float(cell["robust_min"]["data-v"]) == pytest.approx(b.robust_min)
        assert cell["autoattack_shown"]["text"].startswith(f"{100 * b.aa_torchattacks:.1f}")
        assert "n=100" in cell["autoattack_shown"]["text"]  # the cross-check's own n
        # provenance of every row
        assert cell["code_version"]["text"] == PROV["code_version"]
        assert cell["device"]["text"] == PROV["device"]
        assert cell["torch_version"]["text"] == PROV["torch_version"]
        assert cell["dataset"]["text"] == "cifar10-jpeg75" and cell["n"]["text"] == "500"
        assert cell["date"]["text"].startswith("2026-01-01")
        if b.masking != "none":
            assert cell["masking"]["title"] == b.masking_reasons  # reasons on hover (and in <details>)


def test_page_is_self_contained(built):
    root, _ = built
    page = parse(root / "index.html")
    pngs = sorted(p.name for p in (root / "plots").glob("*.png"))
    assert len(page.images) == len(pngs) > 5
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert all("src" not in s for s in page.scripts)  # inline JS only
    text = (root / "index.html").read_text()
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    hrefs = [a.get("href") for a in page.links if a.get("href")]
    assert all(h.startswith("#") or (root / h).exists() for h in hrefs)  # relative links resolve


def test_page_claims_section(built):
    root, board = built
    page = parse(root / "index.html")
    glance = page.tables["glance-table"]
    assert [r[0]["text"] for r in glance] == ["A1", "A2", "A3", "A4", "A5", "A6", "B"]
    assert all(r[2]["text"].strip() in VERDICTS for r in glance)
    claims = evaluate_claims(*StoreBuilder(root).tables())
    assert [r[2]["text"].strip() for r in glance] == [c.verdict for c in claims]


def test_ece_columns_shown_when_present(built, tmp_path):
    from bench.html_report import write_page
    root, board = built
    tidy = ResultStore(root).table()
    assert not [h for h in parse(root / "index.html").headers["leaderboard"] if "ece" in h.get("data-col", "")]
    out = tmp_path / "with_ece"
    out.mkdir()
    with_ece = board.assign(ece_raw=0.05, ece_scaled=0.02)
    write_page(ResultStore(root), out, with_ece, tidy)
    page = parse(out / "index.html")
    cols = [h.get("data-col") for h in page.headers["leaderboard"]]
    assert "ece_raw" in cols and "ece_scaled" in cols
    assert page.tables["leaderboard"][0][cols.index("ece_raw")]["text"] == "5.0"


def test_make_report_cli(tmp_path):
    """`make report` = python -m bench.publish --results DIR: everything from the store."""
    root = tmp_path / "quick"
    sweep_store(root)
    r = subprocess.run([sys.executable, "-m", "bench.publish", "--results", str(root)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for f in ("index.html", "results.csv", "leaderboard.csv", "leaderboard_robustbench.csv", "plots/acc_vs_T.png",
              "model_cards/fastnet_T1.json"):
        assert (root / f).exists(), f
    empty = tmp_path / "empty"
    r = subprocess.run([sys.executable, "-m", "bench.publish", "--results", str(empty)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no results" in r.stderr
    make = Path(ROOT / "Makefile").read_text()
    assert "python -m bench.publish --results results/$(PROFILE)" in make.replace("$(PY)", "python")


def test_families_do_not_cross_datasets(tmp_path):
    a = StoreBuilder(tmp_path, n=1000, dataset="cifar10")
    a.model("fastnet_T1", 1, 0.60).model("fastnet_T2", 2, 0.70)
    b = StoreBuilder(tmp_path, n=1000, dataset="cifar10-jpeg75")
    b.model("fastnet_T1_s1", 1, 0.80, seed=1).model("fastnet_T2_s1", 2, 0.50, seed=1)
    a1 = verdict_of(evaluate_claims(*a.tables()), "A1")
    assert {c.family for c in a1.comparisons} == {"fastnet [cifar10]", "fastnet [cifar10-jpeg75]"}
    assert {(c.baseline, c.candidate) for c in a1.comparisons} == {("fastnet_T1", "fastnet_T2"),
                                                                   ("fastnet_T1_s1", "fastnet_T2_s1")}


def test_a_zoo_model_is_shown_but_tests_no_claim(tmp_path):
    """robustbench:<Name> rows (regime "zoo", T=1, a family of their own) on the page and in the
    exports, outside every claim."""
    from bench.export import model_card
    b = sweep_store(tmp_path)
    b.model("robustbench:Standard", 1, 0.95, arch="robustbench:Standard", regime="zoo", checkpoint="",
            feature_dim=640, crosscheck=0.0)
    board = write_reports(b.store, tmp_path)
    assert "robustbench:Standard" in list(board.model)
    claims = evaluate_claims(*b.tables())
    assert all("robustbench" not in m for c in claims for m in c.models)
    page = parse(tmp_path / "index.html")
    assert len(page.tables["leaderboard"]) == len(board)
    assert (tmp_path / "model_cards" / "robustbench_Standard.json").is_file()
    card = model_card(board.set_index("model", drop=False).loc["robustbench:Standard"])
    assert card["clean_acc"] == "95.00" and card["architecture"].startswith("robustbench:Standard")


def test_a_single_model_run(tmp_path):
    """`bench.run --model X --attack corruptions`: one model, nothing to compare; every claim is
    "not measured" and the page is still written."""
    b = StoreBuilder(tmp_path, n=100)
    b.model("fastnetw8_T1", 1, 0.16, mca=0.15, nat=0.15, worst_grid=0.0)
    claims = evaluate_claims(*b.tables())
    assert [c.verdict for c in claims] == [NOT_MEASURED] * 7
    write_reports(b.store, tmp_path)
    assert len(parse(tmp_path / "index.html").tables["leaderboard"]) == 1
