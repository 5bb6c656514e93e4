"""The per-image worst case over every attack a model met: the images no attack broke, from the
per-image bits the records keep, with the AutoAttack cross-check counted on the images it covered."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from bench.report.columns import is_autoattack, is_black_box, threat_norm
from bench.store import unpack_bits


def _covered(row, n: int, crosscheck_only: bool = False) -> bool:
    """A row of the bits table that ran on part of the ``n``-image evaluation split and says which
    images (one of an earlier run with another n says nothing about these): the AutoAttack
    cross-check, or a Linf attack of the suite on fewer images ([eval] attack_n)."""
    if getattr(row, "eval_n", None) != n:  # bench.store.part_of: None where positions do not say
        return False
    return row.threat == "autoattack_crosscheck" or (
        not crosscheck_only and row.family == "attack" and threat_norm(row.threat) == "linf")


def covered_on_split(row, n: int) -> np.ndarray:
    """A per-image result on part of the ``n``-image evaluation split (the cross-check's, or an
    attack's on fewer images) laid over all of it: its result where it attacked an image, True
    (no evidence) elsewhere."""
    out = np.ones(n, dtype=bool)
    out[np.asarray(row.positions["index"], dtype=int)] = unpack_bits(row.bits, int(row.n))
    return out


def headline_rows(rows: pd.DataFrame, n: int, eps: float) -> pd.DataFrame:
    """The rows of a model's bits table that robust_min is the minimum of: every Linf attack at
    ``eps`` on all ``n`` images of the evaluation split."""
    return rows[np.isclose(rows.eps.astype(float), eps) & (rows.family == "attack") & (rows.n == n) &
                (rows.threat.map(threat_norm) == "linf")]


def worst_case_bits(rows: pd.DataFrame, n: int, eps: float) -> Optional[np.ndarray]:
    """Per image of a model's ``n``-image evaluation split: robust under every Linf attack at
    ``eps`` and, on the images they covered, under both AutoAttacks of the cross-check and the
    attacks run on fewer images.
    ``rows``: the model's rows of the store's bits table (one run). None without attacks."""
    head = headline_rows(rows, n, eps)
    if head.empty:
        return None
    masks = [unpack_bits(b, n) for b in head.bits]
    cc = rows[np.isclose(rows.eps.astype(float), eps)]
    masks += [covered_on_split(r, n) for r in cc.itertuples() if _covered(r, n)]
    return np.logical_and.reduce(masks)


def suite_min_on_crosscheck(rows: pd.DataFrame, n: int, eps: float):
    """(robust_min on the cross-check's images, the attack/view that gives it, how many images)
    for one model's bits rows; None when no cross-check says which images it attacked."""
    head = headline_rows(rows, n, eps)
    cc = [r for r in rows[np.isclose(rows.eps.astype(float), eps)].itertuples() if _covered(r, n, crosscheck_only=True)]
    if head.empty or not cc:
        return None
    pos = np.asarray(cc[0].positions["index"], dtype=int)
    accs = {f"{r.threat}/{r.view}": float(unpack_bits(r.bits, n)[pos].mean()) for r in head.itertuples()}
    by = min(accs, key=accs.get)
    return accs[by], by, len(pos)


def blackbox_gap_on_its_images(rows: pd.DataFrame, n: int, eps: float):
    """(best white-box minus best black-box accuracy, the black-box attack, images) counted on the
    images the black-box attack ran on, from the per-image bits; None without both sides. Square
    runs on a part of the split in the cpu profile (500 of 2,000 images), and a white-box number
    over all 2,000 against it moved the gap by 3 pp, more than the audit's 1-pp threshold. A
    white-box attack run on a part too ([eval] attack_n) counts where its part holds all of the
    black-box attack's images (left out, APGD-T on Square's 500 read as a 15-pp Square win).
    AutoAttack runs Square itself: never the white side."""
    at = rows[np.isclose(rows.eps.astype(float), eps)]
    ran = list(headline_rows(rows, n, eps).itertuples()) + [r for r in at.itertuples()
                                                             if r.family == "attack" and _covered(r, n)]
    whites = [_laid_over(r, n) for r in ran if not is_black_box(r.threat) and not is_autoattack(r.threat)]
    best = None
    for b in (r for r in ran if is_black_box(r.threat)):
        own = _laid_over(b, n)
        where = ~np.isnan(own)
        on = [w[where].mean() for w in whites if not np.isnan(w[where]).any()]
        gap = min(on) - own[where].mean() if on else None
        if gap is not None and (best is None or gap > best[0]):
            best = (float(gap), f"{b.threat}/{b.view}", int(where.sum()))
    return best


def _laid_over(row, n: int) -> np.ndarray:
    """An attack's per-image result over the ``n``-image split: 1 robust, 0 broken where it ran
    (all of it, or its part), NaN where it did not."""
    out = np.full(n, np.nan)
    pos = np.arange(n) if row.n == n else np.asarray(row.positions["index"], dtype=int)
    out[pos] = unpack_bits(row.bits, int(row.n))
    return out
