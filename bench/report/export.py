"""Exports in RobustBench's formats, so our models can sit beside the RobustBench zoo.

* ``model_cards/<model>.json``: one model-info JSON per model, with the fields of RobustBench's
  ``model_info/<dataset>/<threat>/<Name>.json`` (robustbench.utils.ModelInfo): link, name,
  authors, additional_data, number_forward_passes, dataset, venue, architecture, eps, clean_acc,
  reported, autoattack_acc, corruptions_acc (where measured) and footnote. As there, accuracies
  are strings in percent with two decimals and eps is a string ("8/255").
* ``leaderboard_robustbench.csv``: the leaderboard in the column order of RobustBench's CIFAR-10
  Linf table: Rank, Method, Standard accuracy, AutoAttack robust accuracy, Best known robust
  accuracy, AA eval. potentially unreliable, Extra data, Architecture, Venue (accuracies in %),
  ranked like RobustBench by the best known robust accuracy; then Dataset, Images (of the
  accuracies) and AutoAttack images (of its number: a cross-check's are fewer), which RobustBench's
  table leaves implied.

How our numbers map: "reported" is robust_min (our headline: the minimum over every attack and
view); "Best known robust accuracy" is robust_worst (image by image over every attack), else
robust_min; "AA eval. potentially unreliable" is the masking audit's verdict (likely or
suspected; "not audited" for a row without one). autoattack_acc is AutoAttack on the full
evaluation subset when the run had it, else the authors' implementation from the cross-check
(pyautoattack, on its own smaller subset: the footnote says which, with n); null when AutoAttack
never ran. corruptions_acc is filled only from
the real CIFAR-10-C, all 15 corruptions x severities 1-5 on its 10,000 images (RobustBench's
figure); additional_data / Extra data is False for a model trained here and unknown (null) for one
trained elsewhere (a zoo model, a caller's network). The dataset is the store's own name:
``cifar10-jpeg75`` numbers are not CIFAR-10 numbers, and the card does not pretend otherwise.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional, Tuple

import pandas as pd

from bench.atomic import write_bytes_atomic
from bench.provenance import DEVICE_SEP
from bench.report.tables import time_span

ROBUSTBENCH_COLUMNS = ["Rank", "Method", "Standard accuracy", "AutoAttack robust accuracy",
                       "Best known robust accuracy", "AA eval. potentially unreliable", "Extra data", "Architecture",
                       "Venue"]
# after RobustBench's columns, what its table leaves implied (CIFAR-10's 10,000 test images, AutoAttack
# on the same ones) and ours varies: the data, the images of the accuracies, the images of AutoAttack's
# (a cross-check runs on fewer, so "Best known" can lie above it, which in RobustBench it cannot)
PROVENANCE_COLUMNS = ["Dataset", "Images", "AutoAttack images"]

# robustbench.utils.ModelInfo's fields, in its order (a card holds those it has values for)
MODEL_INFO_FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                     "architecture", "eps", "clean_acc", "reported", "corruptions_acc", "corruptions_acc_3d",
                     "corruptions_mce", "corruptions_mce_3d", "autoattack_acc", "footnote"]

# RobustBench's corruptions_acc: the real CIFAR-10-C (bench.measure.corruptions names it so; its
# "cifar10c-generated" is made here from the evaluation images), over its whole test set
REAL_CIFAR10C, CIFAR10C_N = "cifar10c", 10000

ARCH_NAMES = {"resnet18": "ResNet-18", "preactresnet18": "PreActResNet-18", "wrn28_10": "WideResNet-28-10",
              "vgg16_bn": "VGG-16-BN", "vit_small": "ViT-S/4", "fastnet": "fastnet (airbench-style CNN)"}


def _num(v) -> Optional[float]:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _pct(v) -> Optional[str]:
    """RobustBench's spelling of an accuracy: "94.78"."""
    v = _num(v)
    return None if v is None else f"{100 * v:.2f}"


def architecture(row) -> str:
    arch = str(row["arch"])
    base = next((k for k in sorted(ARCH_NAMES, key=len, reverse=True) if arch.startswith(k)), None)
    label = ARCH_NAMES[base] + (f" (width {arch[len(base) + 1:]})" if base and arch != base else "") if base else arch
    if row.get("head") == "bn":
        label += " + BN head"
    m = _num(row.get("feature_dim"))
    return label + (f", M={int(m)}" if m else "")


def autoattack(row) -> Tuple[Optional[float], str, Optional[int]]:
    """(AutoAttack robust accuracy, where it comes from, on how many images). A run at a reduced
    budget is a weaker attack, whose number is not AutoAttack's: it is named in the text and not
    returned, as a partial corruption mean is kept out of corruptions_acc."""
    def reduced(budget, value, where):
        return None, (f"autoattack_acc left empty: AutoAttack ran at a {budget}, {where}, "
                      f"leaving {_pct(value)}% robust"), None

    if _num(row.get("autoattack")) is not None:
        part = _num(row.get("autoattack_n"))  # the run's own AutoAttack on part of its images
        n = int(part) if part else int(row["n"])
        where = f"on {n} of the n={int(row['n'])} evaluation images" if part else f"on the n={n} evaluation images"
        if isinstance(row.get("autoattack_budget"), str):
            return reduced(row["autoattack_budget"], row["autoattack"], where)
        return _num(row["autoattack"]), f"AutoAttack standard {where}", n
    for col, who in (("aa_pyautoattack", "the authors' implementation (pyautoattack)"),
                     ("aa_torchattacks", "torchattacks")):
        if _num(row.get(col)) is not None:
            n = _num(row.get("aa_crosscheck_n"))
            where = f"by {who} in the cross-check, on {int(n) if n else '?'} images"
            if isinstance(row.get("aa_crosscheck_budget"), str):
                return reduced(row["aa_crosscheck_budget"], row[col], where)
            return _num(row[col]), f"AutoAttack standard {where}", int(n) if n else None
    return None, "AutoAttack was not run", None


def additional_data(row) -> Optional[bool]:
    """RobustBench's "additional_data": False for a model trained here (the dataset's own training
    split, nothing more); None for one trained elsewhere (a RobustBench zoo model, a caller's
    file or module), where the harness does not know: robustbench's package ships no model_info,
    where the zoo's flag lives (Carmon2019Unlabeled, e.g., trained on 500k extra images)."""
    source = row.get("source", "grid")
    return False if source == "grid" else None


def _said(flag: Optional[bool]):
    return "unknown" if flag is None else flag


def best_known(row) -> Optional[float]:
    return _num(row.get("robust_worst")) if _num(row.get("robust_worst")) is not None else _num(row.get("robust_min"))


def reported(row) -> str:
    """The footnote's account of "reported": which attack set robust_min, and on how many images
    where that was part of the evaluation's; that nothing was, where no attack ran at 8/255."""
    if _num(row.get("robust_min")) is None:
        return "reported left empty: no Linf attack at 8/255 was measured"
    part = _num(row.get("robust_min_n"))
    on = f", on {int(part)} of the {int(row['n'])} images" if part else ""
    return f"reported = robust_min ({row.get('robust_min_by', '?')}{on}): the minimum over every Linf attack and view"


def model_card(row, link: str = "", authors: str = "") -> dict:
    """RobustBench's model-info JSON for one leaderboard row."""
    aa, aa_source, _ = autoattack(row)
    T = _num(row.get("T"))
    how = f"CE(z/T) at T={T:g}" if T is not None else "CE(z/T)"
    if row.get("regime") not in (None, "std"):
        how += f", regime {row['regime']}" + (f"@{row['checkpoint']}" if isinstance(row.get("checkpoint"), str)
                                              and row.get("checkpoint") else "")
    if bool(row.get("lr_scale")):
        how += ", loss x T"
    when = time_span(str(row.get("first_timestamp", ""))[:10], str(row.get("timestamp", "?"))[:10])
    devices = " and ".join(str(row.get("device", "?")).split(DEVICE_SEP))
    foot = [f"tempbench {row.get('code_version', '?')} on {devices}, measured {when}",
            f"{row['dataset']} test subset of {int(row['n'])} images",
            reported(row), aa_source]
    if isinstance(row.get("masking"), str):
        missing = row.get("masking_unchecked")
        foot.append(f"gradient-masking audit: {row['masking']}" +
                    (f" ({row['masking_reasons']})" if isinstance(row.get("masking_reasons"), str)
                     and row["masking_reasons"] else "") +
                    (f"; not checked (no evidence): {missing}" if isinstance(missing, str) and missing else ""))
    source = row.get("source", "grid")
    if isinstance(source, str) and source != "grid":  # not trained here: say only what is known
        how = f"a {source} model, T={T:g} ({row.get('T_source', 'given')})" if T is not None else f"a {source} model"
        name = f"{row['model']}: {architecture(row)}, {how}"
    else:
        name = f"{row['model']}: {architecture(row)} trained with {how}"
    extra = additional_data(row)
    if extra is None:
        foot.append(f"additional_data unknown: a {source if isinstance(source, str) else '?'} model, not trained "
                    f"here, whose training data the harness does not know")
    card = {
        "link": link,
        "name": name,
        "authors": authors,
        "additional_data": extra,
        "number_forward_passes": 1,
        "dataset": str(row["dataset"]),
        "venue": "N/A",
        "architecture": architecture(row),
        "eps": "8/255",
        "clean_acc": _pct(row.get("clean")),
        "reported": _pct(row.get("robust_min")),
        "autoattack_acc": _pct(aa),
    }
    if _num(row.get("mCA")) is not None:
        n_c, sev, n_img = _num(row.get("c_corruptions")), str(row.get("c_severities", "?")), _num(row.get("c_n"))
        over = (f"{int(n_c) if n_c else '?'} CIFAR-10-C benchmark corruptions x severities {sev} on "
                f"{int(n_img) if n_img else '?'} images ({row.get('c_source', '?')})")
        # RobustBench's corruptions_acc is the mean over all 15 corruptions at severities 1-5 of the
        # real CIFAR-10-C, all 10,000 images: a mean over fewer cells, over corruptions generated
        # here (another set of images and noise) or over a subset is another number, named as such
        # and not put in that field
        why = []
        if not (n_c == 15 and sev == "1,2,3,4,5"):
            why.append("only a partial mean was measured")
        if row.get("c_source") != REAL_CIFAR10C:
            why.append("the corruptions are not the real CIFAR-10-C's")
        if n_img != CIFAR10C_N:
            why.append(f"not on all {CIFAR10C_N:,} CIFAR-10-C images")
        if why:
            foot.append(f"corruptions_acc left empty ({'; '.join(why)}): a mean of {_pct(row['mCA'])}% over the {over}")
        else:
            card["corruptions_acc"] = _pct(row["mCA"])
            foot.append(f"corruptions_acc = mean accuracy over the {over}")
    card["footnote"] = "; ".join(foot) + "."
    return {k: card[k] for k in MODEL_INFO_FIELDS if k in card}


def robustbench_leaderboard(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard in RobustBench's column order and ranking (best known robust accuracy).
    One row per set of weights: an adversarial run whose best epoch was its last has one network
    under two names (@best, @last), ranked once as "X@best (= @last)", where RobustBench would
    otherwise list one model twice (one network on two datasets is two rows)."""
    rows = []
    names = _twin_names(board)
    for _, r in board.iterrows():
        method = names.get(r["model"], r["model"])
        if method is None:
            continue
        aa, _, aa_n = autoattack(r)
        bk = best_known(r)
        masking = r.get("masking")
        rows.append({"Method": method,
                     "Standard accuracy": round(100 * _num(r.get("clean")), 2) if _num(r.get("clean")) is not None else None,
                     "AutoAttack robust accuracy": round(100 * aa, 2) if aa is not None else None,
                     "Best known robust accuracy": round(100 * bk, 2) if bk is not None else None,
                     # a model the masking audit never looked at is not one it cleared, nor is one whose
                     # AutoAttack evaluation, the column's subject, never ran
                     "AA eval. potentially unreliable": _aa_unreliable(masking, any(
                         _num(r.get(c)) is not None for c in ("autoattack", "aa_pyautoattack", "aa_torchattacks"))),
                     "Extra data": _said(additional_data(r)), "Architecture": architecture(r), "Venue": "N/A",
                     "Dataset": str(r["dataset"]), "Images": int(r["n"]), "AutoAttack images": aa_n})
    df = pd.DataFrame(rows, columns=ROBUSTBENCH_COLUMNS[1:] + PROVENANCE_COLUMNS)
    df["AutoAttack images"] = df["AutoAttack images"].astype("Int64")  # a count, empty where no number
    df = df.sort_values(["Best known robust accuracy", "Standard accuracy"], ascending=False, na_position="last",
                        kind="stable").reset_index(drop=True)
    df.insert(0, "Rank", range(1, len(df) + 1))
    return df


def _aa_unreliable(masking, autoattack_ran: bool):
    """RobustBench's "AA eval. potentially unreliable": True for a likely or suspected masking
    verdict; False only where the audit found nothing and an AutoAttack ran (results/quick: 11 of
    14 rows read False with no AutoAttack run at all); else what is missing."""
    if not isinstance(masking, str):
        return "not audited"
    if masking in ("likely", "suspected"):
        return True
    return False if autoattack_ran else "no AutoAttack run"


def _twin_names(board: pd.DataFrame) -> dict:
    """{model: its leaderboard name, or None for a twin ranked under the other's}. Twins are the
    checkpoints of one run (X@best, X@last) with one hash on one dataset: a model measured on two
    datasets is two rows ("X@best [cifar10]", "X@best [cifar10-jpeg75]") of the same weights, and
    both are ranked. A twin is a row whose checkpoint column names one; its run is its name less
    the " [dataset]" that latest_runs puts after the checkpoint, then less the "@checkpoint"."""
    if not {"weights_sha256", "checkpoint", "dataset"} <= set(board.columns):
        return {}
    ck = board.checkpoint.map(lambda c: c if isinstance(c, str) and c else None)
    sha = board.weights_sha256.map(lambda h: h if isinstance(h, str) and h else None)
    split = [_run_and_checkpoint(m, d) for m, d in zip(board.model, board.dataset)]
    rows = board.assign(_sha=sha, _run=[r for r, _ in split], _at=[c for _, c in split])
    rows = rows[ck.notna() & rows._sha.notna()]
    names = {}
    for _, twins in rows.groupby(["_sha", "dataset", "_run"], sort=False):
        if len(twins) > 1:
            twins = twins.assign(_order=twins._at != "best").sort_values(["_order", "model"], kind="stable")
            first, *rest = twins.model
            names[first] = f"{first} (= {', '.join('@' + c for c in twins._at.iloc[1:])})"
            names.update({m: None for m in rest})
    return names


def _run_and_checkpoint(model, dataset) -> Tuple[str, str]:
    """(X, best) of "X@best" and of "X@best [cifar10]" (latest_runs' name for a model on two datasets)."""
    name = str(model)
    suffix = f" [{dataset}]"
    name = name[:-len(suffix)] if name.endswith(suffix) else name
    run, _, at = name.rpartition("@")
    return (run, at) if run else (name, "")


def card_stem(model: str) -> str:
    """A model's card file name: robustbench:Standard -> robustbench_Standard (portable names)."""
    return re.sub(r"[^\w.@+-]", "_", str(model))


def write_exports(board: pd.DataFrame, out_dir: Path, link: str = "", authors: str = "") -> Path:
    """model_cards/*.json (one per model of the leaderboard; cards of models no longer in it are
    removed) and leaderboard_robustbench.csv under ``out_dir``."""
    out_dir = Path(out_dir)
    cards = out_dir / "model_cards"
    cards.mkdir(parents=True, exist_ok=True)
    keep = set()
    for _, row in board.iterrows():
        path = cards / f"{card_stem(row['model'])}.json"
        write_bytes_atomic(path, (json.dumps(model_card(row, link, authors), indent=2) + "\n").encode())
        keep.add(path.name)
    for stale in cards.glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    csv = out_dir / "leaderboard_robustbench.csv"
    write_bytes_atomic(csv, robustbench_leaderboard(board).to_csv(index=False).encode())
    return csv
