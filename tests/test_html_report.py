"""The HTML report: the page bench.report.publish writes from real result stores built here with
ResultStore.put (tests/builders.py; records shaped like those of results/quick/records). The claim
verdicts themselves are tested in tests/test_claims.py."""
from __future__ import annotations

import base64
import html.parser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.report.claims import NOT_MEASURED, VERDICTS, evaluate_claims
from bench.report.publish import main as publish_main
from bench.report.publish import write_reports
from bench.store import ResultStore
from tests.builders import PROV, StoreBuilder, sweep_store

ROOT = Path(__file__).resolve().parents[1]

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
    """A sweep store with its reports written by bench.report.publish.write_reports (as at the end of a run)."""
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
    assert board.mCA.notna().sum() >= 2  # the mCA tooltips below are checked on real rows
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
        # an mCA over a profile's few corruptions and severities says so: it is not RobustBench's 15 x 5
        if cell["mCA"]["text"]:
            assert cell["mCA"]["title"] == (f"{int(b.c_corruptions)} benchmark corruptions x severities "
                                            f"{b.c_severities} on {int(b.c_n)} images ({b.c_source})")
            assert cell["mCA"]["title"].startswith("3 benchmark corruptions x severities 1,5 on 500 images")
        # reasons on hover (and in <details>), then the checks without evidence
        missing = b.masking_unchecked if isinstance(b.masking_unchecked, str) else ""
        said = b.masking_reasons if b.masking != "none" else "no masking signal fired"
        assert cell["masking"]["title"] == said + (f"; not checked (no evidence): {missing}" if missing else "")


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
    from bench.report.html import write_page
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


def test_make_report_cli(tmp_path, capsys, monkeypatch):
    """`make report` = python -m bench.report --results DIR: everything from the store; an empty
    folder is one line and exit 2 (publish.main is what `python -m bench.report` exits with)."""
    root = tmp_path / "quick"
    sweep_store(root)
    r = subprocess.run([sys.executable, "-m", "bench.report", "--results", str(root)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for f in ("index.html", "results.csv", "leaderboard.csv", "leaderboard_robustbench.csv", "plots/acc_vs_T.png",
              "model_cards/fastnet_T1.json"):
        assert (root / f).exists(), f
    # the page names its own folder and the command that rebuilds it (not results/<folder name>,
    # which is only where a profile's own folder lies), whatever staging folder it was built in
    page = (root / "index.html").read_text()
    assert f"results store of <code>{root}</code>" in page and f"python -m bench.report --results {root}</code>" in page
    from bench.report.html import page_source
    monkeypatch.chdir(ROOT)  # where make report runs
    assert page_source(ROOT / "results" / "quick") == ("results/quick", "make report PROFILE=quick")
    empty = tmp_path / "empty"
    capsys.readouterr()
    code = publish_main(["--results", str(empty)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no results" in err and not empty.exists()
    assert (ROOT / "bench" / "report" / "__main__.py").read_text().count("sys.exit(main())") == 1
    # make report PROFILE=file.toml looked in results/file.toml; make bench had written results/<its name>
    named, plain = tmp_path / "named.toml", tmp_path / "plain.toml"
    named.write_text('name = "custom"\n')
    plain.write_text("")
    for profile, folder in (("quick", "results/quick"), (named, "results/custom"), (plain, "results/plain")):
        r = subprocess.run(["make", "-s", "-n", "report", f"PROFILE={profile}"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.stdout.strip().splitlines()[-1].endswith(f"-m bench.report --results {folder}"), r


def test_a_zoo_model_is_shown_but_tests_no_claim(tmp_path):
    """robustbench:<Name> rows (regime "zoo", T=1, a family of their own) on the page and in the
    exports, outside every claim."""
    from bench.report.export import model_card
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
    account = tmp_path / "README.md"  # a results folder's hand-written account (results/cpu has one)
    account.write_text("# how this run was made\n")
    write_reports(b.store, tmp_path)
    assert len(parse(tmp_path / "index.html").tables["leaderboard"]) == 1
    assert account.read_text() == "# how this run was made\n"  # the reports neither write nor remove it


def test_rows_link_their_kept_weights(tmp_path):
    """A row's weights_sha256 is shown and, where a sidecar in <results>/checkpoints names
    weights of that sha256 (a keep_checkpoints profile), links the file; a row whose weights are
    not kept has no link."""
    b = StoreBuilder(tmp_path, n=100)  # the builder's records carry weights_sha256 = "0" * 64
    b.model("fastnetw8_T1", 1, 0.16)
    write_reports(b.store, tmp_path)
    page = parse(tmp_path / "index.html")
    headers = [h.get("data-col") for h in page.headers["leaderboard"]]
    (row,) = page.tables["leaderboard"]
    assert row[headers.index("weights_sha256")]["text"] == "0" * 12 and not any(
        a.get("href", "").startswith("checkpoints/") for a in page.links)
    assert pd.read_csv(tmp_path / "leaderboard.csv", dtype={"weights_sha256": str}).weights_sha256[0] == "0" * 64
    kept = tmp_path / "checkpoints"
    kept.mkdir()
    (kept / "fastnetw8_T1-k.safetensors").write_bytes(b"weights")
    (kept / "fastnetw8_T1-k.json").write_text(json.dumps({"weights": "fastnetw8_T1-k.safetensors",
                                                          "weights_sha256": "0" * 64}))
    write_reports(b.store, tmp_path)
    page = parse(tmp_path / "index.html")
    assert [a["href"] for a in page.links if a.get("href", "").startswith("checkpoints/")] == [
        "checkpoints/fastnetw8_T1-k.safetensors"]
    # a folder evaluated from another's kept checkpoints (bench.run --store, publish --checkpoints)
    # links them where they are, relative to its page
    other = tmp_path / "elsewhere"
    write_reports(b.store, other, checkpoints=kept)
    assert [a["href"] for a in parse(other / "index.html").links if "safetensors" in a.get("href", "")] == [
        "../checkpoints/fastnetw8_T1-k.safetensors"]
    # rebuilt without --checkpoints (make report), such a folder finds them in its siblings by
    # sha256, as results/cpu-fulltest does results/cpu's; a sibling's other weights link nothing
    shutil.copytree(kept, tmp_path / "cpu" / "checkpoints")
    (tmp_path / "quick" / "checkpoints").mkdir(parents=True)
    (tmp_path / "quick" / "checkpoints" / "fastnetw8_T1-j.safetensors").write_bytes(b"other weights")
    (tmp_path / "quick" / "checkpoints" / "fastnetw8_T1-j.json").write_text(json.dumps(
        {"weights": "fastnetw8_T1-j.safetensors", "weights_sha256": "1" * 64}))
    write_reports(b.store, tmp_path / "cpu-fulltest")
    assert [a["href"] for a in parse(tmp_path / "cpu-fulltest" / "index.html").links
            if "safetensors" in a.get("href", "")] == ["../cpu/checkpoints/fastnetw8_T1-k.safetensors"]


def test_kept_weights_in_a_folder_with_url_characters_are_linked_to_the_file(tmp_path):
    """The link was the path as it is: a folder named "run #2" linked the page's own "#2 ..."
    fragment, one named "100%" a bad escape."""
    from urllib.parse import unquote, urlsplit
    b = StoreBuilder(tmp_path / "results", n=100)
    b.model("fastnetw8_T1", 1, 0.16)
    kept = tmp_path / "run #2 at 100% ?" / "checkpoints"
    kept.mkdir(parents=True)
    (kept / "fastnetw8_T1-k.safetensors").write_bytes(b"weights")
    (kept / "fastnetw8_T1-k.json").write_text(json.dumps({"weights": "fastnetw8_T1-k.safetensors",
                                                          "weights_sha256": "0" * 64}))
    write_reports(b.store, tmp_path / "results", checkpoints=kept)
    page = parse(tmp_path / "results" / "index.html")
    (href,) = [a["href"] for a in page.links if "safetensors" in a.get("href", "")]
    url = urlsplit(href)
    assert not url.fragment and not url.query
    assert (tmp_path / "results" / unquote(url.path)).resolve() == (kept / "fastnetw8_T1-k.safetensors").resolve()


def test_records_of_an_older_attack_revision_are_named(tmp_path, capsys):
    """A store holding records an older revision of their attack made (the CE attacks' batch mean,
    before revision 2) still reports, and says so on the page and on stderr: numbers this code
    would not give until the grid measures them again."""
    import json
    root = tmp_path / "r"
    b = StoreBuilder(root, n=100)
    b.model("fastnet_T1", 1, 0.6, pgd_raw=0.1, pgd_scaled=0.1)
    assert publish_main(["--results", str(root)]) == 0
    assert "outdated" not in (root / "index.html").read_text() and "warning" not in capsys.readouterr().err
    for path in b.store.records_dir.glob("*.json"):
        rec = json.loads(path.read_text())
        if rec["threat"] == "pgd":
            path.write_text(json.dumps(dict(rec, measure_version=1)))
    assert publish_main(["--results", str(root)]) == 0
    err = capsys.readouterr().err
    assert "warning: 2 measurements (pgd 2) were made by an older revision" in err
    assert "2 measurements (pgd 2) were made by an older revision" in (root / "index.html").read_text()


@pytest.mark.parametrize("cols", [1, 3])
def test_temperature_tick_labels_do_not_overlap(cols):
    """A fitted T beside a grid T (results/cpu's 1.0852 beside 1) printed as one run of digits
    ("11.0852"): labels that would touch are left out once the figure is laid out, the grid's
    round T first; measured on the drawn labels' extents."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bench.report.plots import _log_T_axis, _margins
    temps = [0.5, 1, 1.0852, 2, 3.484, 5, 10, 20, 50]
    fig, axes = plt.subplots(1, cols, figsize=(5 * cols, 3.8), squeeze=False)
    try:
        for ax in axes.flat:
            ax.plot(temps, range(len(temps)))
            _log_T_axis(ax, temps)
        _margins(fig, wspace=0.8)
        renderer = fig.canvas.get_renderer()
        for ax in axes.flat:
            shown = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.get_xticklabels() if t.get_text()]
            assert [s for s, _ in shown] == ["0.5", "1", "2", "3.484", "5", "10", "20", "50"]
            assert all(a.x1 < b.x0 for (_, a), (_, b) in zip(shown, shown[1:]))  # left to right, apart
            assert len(ax.get_xticks()) == len(temps)  # every T keeps its tick
    finally:
        plt.close(fig)


def test_the_provenance_block_orders_numbers_and_keeps_devices_apart():
    """The page's header block: image counts in numeric order (results/quick's read "100, 200, 400,
    50"), devices apart by "; " since a device's name has commas of its own."""
    from bench.report.html import provenance_summary
    latest = pd.DataFrame({"dataset": ["d"] * 4, "n": [400, 50, 100, 400], "code_version": ["b", "a", "a", "a"],
                           "device": ["cpu X (AVX2, 2 threads)", "cpu Y (AVX512, 2 threads)"] * 2,
                           "torch_version": ["2"] * 4, "model": ["m1", "m2", "m1", "m2"],
                           "timestamp": ["2026-01-01T10:00:00+00:00", "2026-01-02T10:00:00+00:00"] * 2})
    block = provenance_summary(latest)
    assert block["n"] == "50, 100, 400" and block["commits"] == "a, b"
    assert block["devices"] == "cpu X (AVX2, 2 threads); cpu Y (AVX512, 2 threads)"
    assert block["measured"] == "2026-01-01 10:00 to 2026-01-02 10:00 UTC"
