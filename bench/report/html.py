"""The HTML report: ``results/<profile>/index.html``, one static page a researcher can open from
disk or receive by mail.

It shows the leaderboard (sortable by clicking a column header: a few lines of vanilla JS, no
CDN, no server), the claim-by-claim verdicts of bench.report.claims, every plot (embedded as data URIs,
so the file stands alone), and where every number comes from: the commit (code_version), device,
torch version, dataset, n and date of each model's run. Nothing here measures anything; it reads
the store and the tables bench.report.tables wrote from it.

bench/report/publish.py writes it, with every other report, at the end of a run and on `make report`.
"""
from __future__ import annotations

import base64
import io
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import quote

import numpy as np
import pandas as pd

from bench.atomic import write_bytes_atomic
from bench.checkpoints import CheckpointStore
from bench.measure.families import outdated
from bench.provenance import DEVICE_SEP
from bench.report.claims import POWER, THRESHOLDS, evaluate_claims
from bench.report.columns import budget_kind, latest_runs
from bench.report.tables import SEPARATORS, time_span

TEMPLATES = Path(__file__).resolve().parent / "templates"

# The leaderboard's columns on the page, in order: (column, header, kind, what it means). kind:
# "pct" = an accuracy/fraction shown in %, "num", "text". Columns the store does not have are
# left out; ECE columns (calibration) are picked up by name when present.
COLUMNS = [
    ("model", "model", "text", "model name (see the README's name grammar)"),
    ("source", "source", "text", "where the model came from: grid (trained by the harness), zoo (RobustBench), "
                                 "file (--model file:PATH), python (bench.audit)"),
    ("T", "T", "num", "training temperature"),
    ("T_source", "T from", "text", "given: the training T; estimated: fitted by post-hoc temperature scaling "
                                   "(a caller's model trained at an unknown T)"),
    ("clean", "clean", "pct", "clean accuracy (%)"),
    ("robust_min", "robust_min", "pct", "minimum robust accuracy over every Linf attack and view at 8/255: "
                                         "the only number that counts as robustness"),
    ("robust_worst", "robust_worst", "pct", "fraction of images that no attack at 8/255 broke, image by image"),
    ("autoattack_shown", "AutoAttack", "pct", "AutoAttack at 8/255 through torchattacks; where it ran only in the "
                                              "cross-check, on the cross-check's images (n shown), and 'reduced' "
                                              "where it ran at less than the reference's budget (the cell's tooltip "
                                              "gives it)"),
    ("pgd_raw@8/255", "PGD raw", "pct", "CE-PGD on the raw logits z (the attack gradient masking fools)"),
    ("pgd_scaled@8/255", "PGD z/T", "pct", "CE-PGD on z/T (the logits the model was trained to output)"),
    ("mCA", "mCA", "pct", "mean accuracy over the CIFAR-10-C benchmark corruptions and severities measured "
                          "(RobustBench's figure: all 15 x 5; hover a number for what it is over)"),
    ("mCE", "mCE", "pct", "mean corruption error relative to the T=1 model of the family (%)"),
    ("ECE", None, "pct", "expected calibration error (15 bins)"),
    ("nat_worst_grid", "worst grid", "pct", "correct under all 63 rotation x translation combinations"),
    ("cifar10.1", "CIFAR-10.1", "pct", "accuracy on CIFAR-10.1 v6"),
    ("masking", "masking", "mask", "gradient-masking verdict of the audit; open it for the reasons"),
    ("n", "n", "num", "test images per measurement"),
    ("dataset", "dataset", "text", "the data the numbers are on"),
    ("code_version", "commit", "text", "git commit of the code that measured the row, the latest where several did "
                                       "(all in the tooltip; -dirty: uncommitted changes)"),
    ("device", "device", "text", "where it was measured, the latest machine where several did (all in the tooltip)"),
    ("torch_version", "torch", "text", "torch version"),
    ("date", "date", "text", "when the row's latest measurement was made (UTC; the first in the tooltip)"),
    ("weights_sha256", "weights", "text", "sha256 of the weights the row measured (first 12 digits; the full one "
                                          "in the tooltip and leaderboard.csv); a link where the checkpoint is kept "
                                          "beside the results"),
]

MASKING_ORDER = {"none": 0, "suspected": 1, "likely": 2}
PROVENANCE_COLUMNS = ("dataset", "code_version", "device", "torch_version", "date", "weights_sha256")

# Plots, grouped, in reading order: (file-name prefix, section title, what it shows).
PLOT_GROUPS = [
    ("acc_vs_T.png", "Accuracy against T", "every leaderboard column against the training temperature "
                                           "(log axis), one line per model family (and dataset, where "
                                           "there are several): the mean over seeds, error bars the std "
                                           "over seeds, none where a point has one seed; on the attacks' "
                                           "panels a red x (orange o) marks a point with a model the masking "
                                           "audit calls likely (suspected) masked: its number is an upper "
                                           "bound; a model from outside the grid is a line of its own"),
    ("attacks_vs_T_", "Attacks against T", "accuracy at 8/255 per attack and view, the mean over seeds; "
                                           "robust_min in bold, clean dashed; masked points marked as above"),
    ("eps_sweep_", "Eps sweeps", "robust accuracy against eps, one line per T; chance dotted"),
    ("corruptions_heatmap_", "Corruptions x T", "accuracy per corruption (mean over severities)"),
    ("corruptions_vs_severity_", "Corruption severity", "mean over the benchmark corruptions measured (how many: "
                                                        "each figure's title) against severity"),
    ("natural_vs_magnitude_", "Natural transforms", "accuracy against the magnitude of each transform"),
]


def _fmt_pct(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if not math.isfinite(v) else f"{100 * v:.1f}"


def _fmt_num(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    if not math.isfinite(v):
        return ""
    return f"{int(v)}" if v == int(v) else f"{v:g}"


def _sort_key(v) -> str:
    """What the page's JS sorts by: the number itself, or the text; empty sorts last."""
    if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
        return ""
    return str(v)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _per_model(tidy: pd.DataFrame, col: str, how: str = "last") -> pd.Series:
    if tidy.empty or col not in tidy:
        return pd.Series(dtype=object)
    return tidy.groupby("model")[col].agg(how)


def corruption_scope(r) -> str:
    """What a row's mCA is a mean over: a profile's few severities, generated corruptions on a
    subset, are not RobustBench's 15 x 5 on the real CIFAR-10-C's 10,000 images."""
    def whole(v):
        return f"{int(v)}" if isinstance(v, (int, float)) and math.isfinite(v) else "?"
    return (f"{whole(r.get('c_corruptions'))} benchmark corruptions x severities {r.get('c_severities', '?')} on "
            f"{whole(r.get('c_n'))} images ({r.get('c_source', '?')})")


def leaderboard_rows(board: pd.DataFrame, latest: pd.DataFrame, weight_files: Optional[Dict[str, str]] = None) -> tuple:
    """(columns, rows) of the page's leaderboard: one row per model of the leaderboard, each cell
    a dict with the shown text, its sort key and a tooltip; ``latest``: the tidy table's rows
    that count (latest_runs); ``weight_files`` ({sha256: path relative to the page}) links a
    row's weights."""
    weight_files = weight_files or {}
    b = board.copy()
    if b.empty:
        return [], []
    b["torch_version"] = b.model.map(_per_model(latest, "torch_version"))
    if "timestamp" in b:
        b["date"] = b["timestamp"].astype(str).str.slice(0, 10)  # the full time is in the tooltip
    # AutoAttack: the run's own where it had one, else the cross-check's (on its own, smaller n)
    nan = pd.Series(np.nan, index=b.index)
    full, cross = b.get("autoattack", nan), b.get("aa_torchattacks", nan)
    from_cross = full.isna() & cross.notna()
    b["autoattack_shown"] = full.where(~from_cross, cross)
    aa_note = {i: f"n={_fmt_num(b.get('aa_crosscheck_n', nan)[i])}" for i in b.index[from_cross]}
    # the run's own AutoAttack, or robust_min, from an attack on part of the row's images: how many
    aa_part = {i: f"n={_fmt_num(v)}" for i, v in b.get("autoattack_n", nan).items() if i not in aa_note and v == v}
    min_part = {i: f"n={_fmt_num(v)}" for i, v in b.get("robust_min_n", nan).items() if v == v}
    # a reduced budget (fewer iterations or queries than AutoAttack's) is a weaker attack: said in the cell
    budget = b.get("autoattack_budget", nan).where(full.notna(), b.get("aa_crosscheck_budget", nan))
    aa_budget_of = {i: v for i, v in budget.items() if isinstance(v, str)}
    cols = []
    for key, label, kind, help_ in COLUMNS:
        if key == "ECE":
            for c in [c for c in b.columns if c.lower().startswith("ece")]:
                cols.append((c, c.replace("_", " "), kind, help_ + f" ({c})"))
        elif key in b.columns and b[key].notna().any():
            cols.append((key, label, kind, help_))
    rows = []
    for i, r in b.iterrows():
        cells = []
        for key, _, kind, _ in cols:
            v = r[key]
            if kind == "pct":
                text = _fmt_pct(v)
                sort = _sort_key(float(v) if text else None)
                tip, small = "", ""
                if key == "autoattack_shown":
                    tip = "; ".join(x for x in (
                        f"AutoAttack cross-check on {aa_note[i]} images" if i in aa_note else "",
                        aa_budget_of.get(i, "")) if x)
                    if i in aa_part and text:
                        tip = "; ".join(x for x in (f"on {aa_part[i]} of the row's n={_fmt_num(r['n'])} images", tip)
                                        if x)
                    small = ", ".join(x for x in (aa_note.get(i, "") or (aa_part.get(i, "") if text else ""),
                                                  budget_kind(aa_budget_of[i]) if i in aa_budget_of else "") if x)
                if key == "robust_min" and isinstance(r.get("robust_min_by"), str):
                    tip = f"by {r['robust_min_by']}"
                    if i in min_part:
                        tip += f", on {min_part[i]} of the row's n={_fmt_num(r['n'])} images"
                        small = min_part[i]
                if key == "mCA" and text:
                    tip = corruption_scope(r)
                cells.append({"text": text, "sort": sort, "tip": tip, "kind": kind, "small": small})
            elif kind == "mask":
                verdict = v if isinstance(v, str) else ""
                reasons = r.get("masking_reasons") if isinstance(r.get("masking_reasons"), str) else ""
                missing = r.get("masking_unchecked") if isinstance(r.get("masking_unchecked"), str) else ""
                tip = reasons or ("no masking signal fired" if verdict == "none" else "")
                if missing and verdict:
                    tip += f"; not checked (no evidence): {missing}"
                cells.append({"text": verdict, "sort": str(MASKING_ORDER.get(verdict, "")), "kind": kind, "tip": tip,
                              "reasons": [s.strip() for s in reasons.split(";") if s.strip()] +
                              ([f"not checked (no evidence): {missing}"] if missing and verdict else [])})
            elif kind == "num":
                text = _fmt_num(v)
                cells.append({"text": text, "sort": _sort_key(pd.to_numeric(v, errors="coerce")), "kind": kind,
                              "tip": ""})
            elif key == "weights_sha256":
                sha = v if isinstance(v, str) else ""
                cells.append({"text": sha[:12], "sort": sha, "kind": kind, "tip": sha, "href": weight_files.get(sha, "")})
            else:
                text = "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else str(v)
                tip = ""
                if key in SEPARATORS and SEPARATORS[key] in text:  # several, in the order they measured the row
                    tip, parts = text, text.split(SEPARATORS[key])
                    text = f"{parts[-1]} (+{len(parts) - 1})"
                elif key == "date":
                    tip = time_span(r.get("first_timestamp", ""), r.get("timestamp", ""))
                cells.append({"text": text, "sort": text, "kind": kind, "tip": tip})
        rows.append(cells)
    return cols, rows


# leaderboard.csv's number format (bench/report/publish.py writes it with this): the full table prints as it does
LEADERBOARD_FLOAT_FORMAT = "%.4f"


def full_table(board: pd.DataFrame) -> tuple:
    """Every leaderboard.csv column, as printed there, for the collapsed full table: each cell is
    the CSV's own text (pandas' writer, its float format), the numbers sort by their value."""
    cols = list(board.columns)
    if board.empty:
        return cols, []
    printed = board.to_csv(index=False, header=False, float_format=LEADERBOARD_FLOAT_FORMAT)
    texts = pd.read_csv(io.StringIO(printed), header=None, dtype=str, keep_default_na=False,
                        skip_blank_lines=False).to_numpy()
    rows = []
    for (_, r), text_row in zip(board.iterrows(), texts):
        cells = []
        for c, text in zip(cols, text_row):
            v = r[c]
            sort = _sort_key(v) if isinstance(v, float) else text
            cells.append({"text": text, "sort": sort})
        rows.append(cells)
    return cols, rows


def plot_sections(plots_dir: Path) -> List[dict]:
    """The plots in reading order, embedded."""
    if not plots_dir.is_dir():
        return []
    files = sorted(plots_dir.glob("*.png"))
    used, sections = set(), []
    for prefix, title, caption in PLOT_GROUPS:
        group = [f for f in files if (f.name == prefix if prefix.endswith(".png") else f.name.startswith(prefix))]
        if group:
            used.update(group)
            sections.append({"title": title, "caption": caption,
                             "images": [{"name": f.name, "src": data_uri(f)} for f in group]})
    other = [f for f in files if f not in used]
    if other:
        sections.append({"title": "Other plots", "caption": "",
                         "images": [{"name": f.name, "src": data_uri(f)} for f in other]})
    return sections


def provenance_summary(latest: pd.DataFrame) -> Dict[str, str]:
    """Where the page's numbers come from (the rows that count, latest_runs), in one block."""
    if latest.empty:
        return {}

    def uniq(col, sep=", "):  # numbers in numeric order (50, 100, 400, not 100, 400, 50)
        values = latest[col].dropna().unique() if col in latest else []
        return sep.join(str(v) for v in sorted(values, key=lambda v: (isinstance(v, str), v)))
    return {"datasets": uniq("dataset"), "n": uniq("n"), "commits": uniq("code_version"),
            "devices": uniq("device", DEVICE_SEP),
            "torch": uniq("torch_version"), "models": str(latest.model.nunique()),
            "measured": " to ".join(str(t)[:16].replace("T", " ") for t in (latest.timestamp.min(), latest.timestamp.max()))
            + " UTC"}


def claim_view(results) -> tuple:
    """(claims, thresholds) as the template reads them (numbers formatted here, in one place)."""
    out = []
    for r in results:
        rows = []
        for c in r.comparisons:
            measured = math.isfinite(c.diff)
            rows.append({"family": c.family, "metric": c.metric, "baseline": c.baseline,
                         "baseline_value": _fmt_pct(c.baseline_value),
                         "candidate": c.candidate, "candidate_T": _fmt_num(c.candidate_T),
                         "candidate_value": _fmt_pct(c.candidate_value),
                         "diff": f"{100 * c.diff:+.1f}" if measured else "",
                         "se": f"{100 * c.se:.1f}" if measured else "", "z": c.critical if measured else "",
                         "interval": f"{100 * c.interval[0]:+.1f} to {100 * c.interval[1]:+.1f}" if measured else "",
                         "detectable": f"{100 * c.detectable:.1f}" if measured else "",
                         "n": c.n or "", "se_kind": c.se_kind, "verdict": c.verdict, "note": c.note,
                         "decides": c.decides})
        out.append({"key": r.key, "claim": r.claim, "measurement": r.measurement, "verdict": r.verdict,
                    "css": r.verdict.replace(" ", "-"), "reason": r.reason, "rows": rows,
                    "models": ", ".join(r.models)})
    return out, {**{k: (f"{100 * v:g} pp" if k in ("min_effect", "targeted_margin") else f"{v:g}")
                    for k, v in THRESHOLDS.items()}, "power": f"{100 * POWER:g}%"}


def page_source(out_dir: Path) -> tuple:
    """(the folder as the page names it, the command that rebuilds the page): `make report` for a
    profile's own folder under results/, `python -m bench.report --results DIR` for any other (the
    page said "results/<folder name>" and "make report PROFILE=<folder name>" for any folder)."""
    where = Path(os.path.abspath(out_dir))
    try:
        where = where.relative_to(Path.cwd())
    except ValueError:
        pass
    if where == Path("results") / where.name:
        return str(where), f"make report PROFILE={where.name}"
    return str(where), f"python -m bench.report --results {where}"


def render(out_dir: Path, board: pd.DataFrame, latest: pd.DataFrame, claims, n_records: int,
           weight_files: Optional[Dict[str, str]] = None, outdated: str = "", n_copied: int = 0,
           page_dir: Optional[Path] = None) -> str:
    """The page. ``latest``: the tidy table's rows that count (latest_runs); ``n_records``: the
    measurements made; ``n_copied``: those copied from a twin checkpoint's (the same weights under
    another name), not made again; ``page_dir``: the folder the page is for (default ``out_dir``,
    which may be a staging folder)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    cols, rows = leaderboard_rows(board, latest, weight_files)
    full_cols, full_rows = full_table(board)
    claim_rows, thresholds = claim_view(claims)
    exports = [p for p in ("leaderboard.csv", "results.csv", "leaderboard_robustbench.csv", "model_cards")
               if (out_dir / p).exists()]
    folder, command = page_source(page_dir or out_dir)
    return env.get_template("report.html.j2").render(
        title=f"tempbench: {out_dir.name}", folder=folder, command=command, cols=cols, rows=rows,
        prov_cols=PROVENANCE_COLUMNS, full_cols=full_cols,
        full_rows=full_rows, claims=claim_rows, thresholds=thresholds, plots=plot_sections(out_dir / "plots"),
        prov=provenance_summary(latest), n_records=n_records, n_copied=n_copied, exports=exports, outdated=outdated,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def outdated_summary(store) -> str:
    """'' or which records an older revision of their attack made (bench.measure.families.outdated):
    numbers this code would not give, until the grid measures them again."""
    counts: Dict[str, int] = {}
    for rec in store.records():
        if outdated(rec):
            counts[rec["threat"]] = counts.get(rec["threat"], 0) + 1
    if not counts:
        return ""
    return (f"{sum(counts.values())} measurements ({', '.join(f'{t} {k}' for t, k in sorted(counts.items()))}) were "
            f"made by an older revision of their attack than this code's; rerun the grid to measure them again")


def write_page(store, out_dir: Path, board: pd.DataFrame, tidy: pd.DataFrame, bits=None,
               checkpoints: Optional[Path] = None, page_dir: Optional[Path] = None,
               latest: Optional[pd.DataFrame] = None) -> Path:
    """results/<profile>/index.html from the leaderboard and the tidy table (already built).
    ``checkpoints``: where a profile keeps its checkpoints (keep_checkpoints; default
    <page_dir>/checkpoints, else its sibling results folders' checkpoints: a folder that evaluated
    another profile's models with --store, results/cpu-fulltest of results/cpu), whose weights the
    rows link to by sha256, relative to ``page_dir``, the folder the page will be read in (default
    ``out_dir``; the publisher writes into a staging folder). ``latest``: latest_runs(tidy), where
    the caller has it already."""
    out_dir = Path(out_dir)
    page_dir = Path(page_dir or out_dir)
    folders = [Path(checkpoints) if checkpoints else page_dir / "checkpoints"]
    if not checkpoints and not folders[0].is_dir():
        folders = sorted(page_dir.resolve().parent.glob("*/checkpoints"))
    weight_files: Dict[str, str] = {}
    for folder in folders:
        base = Path(os.path.relpath(folder.resolve(), page_dir.resolve())).as_posix()
        for sha, name in CheckpointStore(folder).files_by_sha256().items():
            # a URL: a folder named "run #2" or "100%" otherwise links a fragment or a bad escape
            weight_files.setdefault(sha, quote(f"{base}/{name}"))
    bits = store.bits_table() if bits is None else bits
    latest = latest_runs(tidy) if latest is None else latest
    claims = evaluate_claims(tidy, board, bits, latest)
    ident = ["run_key", "dataset", "threat", "view", "params", "n"]
    copied = tidy.same_weights_as.notna()  # the store's table has its columns even when empty
    html = render(out_dir, board, latest, claims, n_records=len(tidy[~copied].drop_duplicates(ident)),
                  n_copied=len(tidy[copied].drop_duplicates(ident)), weight_files=weight_files,
                  outdated=outdated_summary(store), page_dir=page_dir)
    path = out_dir / "index.html"
    write_bytes_atomic(path, html.encode())
    return path
