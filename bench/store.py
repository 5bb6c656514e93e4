"""The results store: one JSON record per measurement, written atomically.

A record's file name is the hash of the measurement's identity (model run, data, split, subset,
threat, view, attack parameters), so a rerun of the same measurement replaces its file, two
concurrent writers never touch each other's files, and a writer killed at any instant leaves
either the old record, the new one, or a ``.tmp-*`` file that readers ignore. Nothing is lost,
nothing is duplicated.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pandas as pd

from bench.atomic import write_json_atomic
from bench.errors import BenchError
from bench.fields import field_problem, is_number, is_text, is_whole_or_null

# The tidy table: one row per measurement and metric. `corruption` and `severity` are set for
# threat "corruption", `magnitude` for the natural transforms' sweeps; `same_weights_as` for a
# checkpoint whose weights are another's (an adversarial run's last epoch was its best): the run
# key the measurement was made as, whose provenance and wall time the row keeps; `eval_n` for a
# measurement on part of the evaluation's images that says which (part_of).
COLUMNS = ["run_key", "model", "model_source", "arch", "T", "T_source", "head", "regime", "lr_scale", "seed",
           "checkpoint", "feature_dim", "dataset", "num_classes", "split", "source", "n", "eval_n", "family", "threat",
           "view", "eps", "steps", "corruption", "severity", "magnitude", "params", "metric", "value", "best_epoch",
           "catastrophic_overfitting_epoch", "code_version", "torch_version", "device", "timestamp", "wall_s",
           "weights_sha256", "same_weights_as"]

# The table also says which image subset a row was measured on (the reports keep one a model,
# bench/report/columns.py); results.csv is COLUMNS, as the committed tables have it.
TABLE_COLUMNS = COLUMNS + ["subset_seed"]

# Version of the record layout. Records of an older layout measured the same things under other
# threat names; the table leaves them out rather than show them twice, and the next run of their
# model measures them again.
SCHEMA = 2


def part_of(record: dict) -> Optional[int]:
    """The n of the evaluation a measurement on part of its images belongs to (Square on attack_n
    of them, the AutoAttack cross-check: their records say which images, and of what); None for
    one that does not say (most ran on all the evaluation's images)."""
    pos = record.get("positions")
    return int(pos["eval_n"]) if isinstance(pos, dict) and pos.get("eval_n") is not None else None


def part_positions(index, eval_n: int) -> dict:
    """A record's ``positions``, which part_of reads: the images of an ``eval_n``-image evaluation
    a measurement on part of it ran on (their indices into that evaluation's split)."""
    return {"eval_n": int(eval_n), "index": [int(i) for i in index]}


def model_source(record: dict) -> str:
    """Where a record's model came from: ``grid`` (trained by the harness), ``zoo`` (RobustBench),
    ``file`` (--model file:PATH) or ``python`` (a module handed to bench.audit)."""
    if record.get("regime") == "zoo":
        return "zoo"
    if record.get("regime") == "external":
        return "python" if record.get("weights_source") in (None, "python") else "file"
    return "grid"


IDENTITY = ("run_key", "dataset", "split", "n", "subset_seed", "attack_seed", "threat", "view", "params")


def _strict_json(value):
    """NaN and inf become null: strict JSON parsers (jq, browsers) refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def pack_bits(mask) -> str:
    """A per-image boolean (a torch or numpy array) as hex, 8 images a byte: the records' format for
    the per-image worst case over attacks."""
    mask = mask.cpu().numpy() if hasattr(mask, "cpu") else np.asarray(mask)
    return np.packbits(mask.astype(bool)).tobytes().hex()


def unpack_bits(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)


def _digest(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:20]


def record_id(record: dict, eval_n: Optional[int] = None) -> str:
    """The file name of a measurement. A part of an evaluation (the AutoAttack cross-check, an
    attack on [eval] attack_n images, the float64 check) is a stratified draw from that
    evaluation's images, so the same count drawn from an evaluation of another n is other images:
    its id holds that n too. ``eval_n`` gives it for a record not made yet; a made one says (part_of)."""
    ident = {k: record[k] for k in IDENTITY}
    of = part_of(record) if eval_n is None else eval_n
    if of is not None and of != ident["n"]:
        ident["eval_n"] = int(of)
    return _digest(ident)


def legacy_record_id(record: dict) -> str:
    """The id a part of an evaluation had before its evaluation's n was in it (the committed
    stores hold such records): found by that name while its positions name the evaluation asked
    for (jobs.py _current_record), replaced by the new name when measured again (ResultStore.put)."""
    return _digest({k: record[k] for k in IDENTITY})


# the metrics that are fractions of images (and the calibration's ECE and mean confidence)
PROPORTION = re.compile(r"(accuracy|robust_acc|clean_acc|success_rate|target_hit_rate|ece|mean_confidence)(_\w+)?"
                        r"|\w*_frac(_\w+)?")

FIELD_TYPES = (
    (("subset_seed", "attack_seed", "eps", "steps"), is_number, "a number"),
    # the plots put T on a log axis: a T of 0 or below was a math domain error in every report
    (("T",), lambda v: is_number(v) and 0 < v < math.inf, "a positive number"),
    (("seed", "feature_dim", "num_classes", "severity", "magnitude"), lambda v: v is None or is_number(v),
     "a number or null"),
    (("run_key", "dataset", "split", "threat", "view", "arch", "head", "regime", "checkpoint", "family"),
     is_text, "a string"),
    (("corruption", "source"), lambda v: v is None or isinstance(v, str), "a string or null"),
    (("params",), lambda v: isinstance(v, dict), "an object"),
    (("lr_scale",), lambda v: isinstance(v, bool), "true or false"),
    # what the tables group by, take the latest of, add up or join: a list or a number there was a
    # TypeError in every report
    (("timestamp", "code_version", "device", "torch_version", "weights_sha256", "same_weights_as",
      "surrogate_weights_sha256"),
     lambda v: v is None or isinstance(v, str), "a string or null"),
    (("measure_version",), is_number, "a number"),
    (("wall_s", "eval_batch_size"), lambda v: v is None or is_number(v), "a number or null"),
    (("best_epoch", "catastrophic_overfitting_epoch"), is_whole_or_null, "a whole number or null"),
    (("autoattack_warnings",), lambda v: v is None or isinstance(v, list) and all(isinstance(t, str) for t in v),
     "a list of strings or null"),
    (("reliability",), lambda v: v is None or isinstance(v, dict) and all(isinstance(v.get(k), list) for k in
                                                                          ("confidence", "accuracy", "count"))
     and len({len(v[k]) for k in ("confidence", "accuracy", "count")}) == 1,
     "an object of confidence, accuracy and count lists of one length"),
)


def record_problem(rec) -> str | None:
    """What makes parsed JSON unusable as a record, or None. A record of an older SCHEMA only
    needs to be an object (the table counts it as stale); a current one needs its identity, its
    model and numeric metrics (null: not measured), and the fields it has of FIELD_TYPES' types."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    if not rec:
        return "an empty object"
    schema = rec.get("schema", 1)
    if not is_number(schema):
        return f"schema is {schema!r}, not a number"
    if schema < SCHEMA:
        return None
    # arch and eps too: the tables label a model's family by its arch and file an attack by its eps
    missing = [k for k in (*IDENTITY, "model", "metrics", "arch", "eps") if k not in rec]
    if missing:
        return f"it lacks {', '.join(missing)}"
    metrics = rec["metrics"]
    if not isinstance(metrics, dict):
        return f"metrics is {metrics!r}, not an object"
    bad = {k: v for k, v in metrics.items() if v is not None and not (is_number(v) and math.isfinite(v))}
    if bad:  # the harness writes NaN and inf as null; json reads them back as floats
        return f"metric {', '.join(f'{k}={v!r}' for k, v in bad.items())} is not a finite number"
    out = {k: v for k, v in metrics.items() if v is not None and PROPORTION.fullmatch(k) and not 0 <= v <= 1}
    if out:  # a fraction of images: the claims take square roots of p(1-p)
        return f"metric {', '.join(f'{k}={v!r}' for k, v in out.items())} is not a fraction in [0, 1]"
    if not is_number(rec["n"]) or not math.isfinite(rec["n"]) or not isinstance(rec["model"], str):
        return "its n is not a number or its model not a name"
    # the tables compare, sort and format these: a wrong type there is a traceback in every report
    return field_problem(rec, FIELD_TYPES) or _per_image_problem(rec)


BITS_KEYS = ("bits", "bits_pyautoattack", "bits_torchattacks", "bits_target_hit")
_HEX = re.compile(r"[0-9a-f]*")


def _per_image_problem(rec: dict) -> str | None:
    """The per-image results against the record's n: the worst case over attacks lines up every
    attack's bits image by image, and bits of another length (a record cut short or edited by
    hand) stopped every report with a numpy shape error."""
    n = int(rec["n"])
    for k in BITS_KEYS:
        v = rec.get(k)
        if v is not None and not (isinstance(v, str) and _HEX.fullmatch(v) and len(v) == 2 * math.ceil(n / 8)):
            return f"{k} is not {n} images' results ({2 * math.ceil(n / 8)} hex digits)"
    pos = rec.get("positions")
    if pos is not None:
        index = pos.get("index") if isinstance(pos, dict) else None
        if not (isinstance(index, list) and len(index) == n and is_number(pos.get("eval_n"))
                and all(isinstance(i, int) and 0 <= i < pos["eval_n"] for i in index)):
            return f"positions is not {n} image indices into an evaluation of eval_n images"
    return None


class ResultStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.skipped: set = set()  # malformed record files, each warned about once
        # each file's parsed record by the digest of the bytes it was parsed from: one report reads
        # the store six or seven times (the tables, the bits, the claims, the page, the figures),
        # 10,321 files for results/cpu, and reading a file is a fraction of parsing and checking it.
        # By content, not by mtime: a record rewritten within one clock tick is parsed again too
        self._parsed: Dict[Path, Tuple[bytes, Optional[dict]]] = {}

    def path(self, rid: str) -> Path:
        return self.records_dir / f"{rid}.json"

    def put(self, record: dict) -> str:
        missing = [k for k in IDENTITY if k not in record]
        if missing:
            raise ValueError(f"record lacks identity fields {missing}")
        rid = record_id(record)
        write_json_atomic(self.path(rid), _strict_json(dict(record, id=rid, schema=SCHEMA)))
        old = self.path(legacy_record_id(record))
        if old != self.path(rid) and old.exists():
            # the same part of the same evaluation under its old name, now measured again: two
            # records of one measurement. One whose positions name another evaluation is that one's,
            # and one that names none is a whole evaluation on as many images (its id is the old
            # name itself, never rid): both stay
            try:
                prior = json.loads(old.read_bytes())
                same = record_id(prior) == rid
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                same = False  # not a record: reports warn about it, and it stays for a person to see
            if same:
                old.unlink(missing_ok=True)
        return rid

    def get(self, rid: str) -> dict | None:
        """The record, or None when there is none or it is malformed (then it is measured again)."""
        path = self.path(rid)
        raw = self._bytes(path) if path.exists() else None
        return None if raw is None else self._read(path, raw)

    def _bytes(self, path: Path) -> bytes | None:
        """The file's bytes, or None: for a file deleted since the listing (by a person: the
        harness never deletes one), and, with a warning, for a name that is not a readable file (a
        folder, a link to nothing), which stopped every report with a traceback."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if path.is_symlink():
                self._skip(path, f"it links to {os.readlink(path)}, which does not exist")
            return None
        except OSError as e:
            self._skip(path, f"it cannot be read ({e.strerror})")
            return None

    def _read(self, path: Path, raw: bytes) -> dict | None:
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BenchError(f"result record {path} is not valid JSON: delete it and rerun that measurement") from None
        problem = record_problem(rec)
        if problem is None and rec.get("schema", 1) >= SCHEMA and path.stem != (rid := record_id(rec)):
            if path.stem == legacy_record_id(rec):
                # a part of an evaluation under its old name; where put left the new one beside
                # it (stopped in between), the new one counts, not both
                return None if self.path(rid).exists() else rec
            # a copy saved under another name (a backup) would count its measurement twice
            problem = f"its identity makes it {rid}.json, not {path.name}"
        if problem is None:
            return rec
        self._skip(path, problem)
        return None

    def _skip(self, path: Path, problem: str) -> None:
        if path not in self.skipped:
            self.skipped.add(path)
            print(f"warning: result record {path} skipped: {problem}; delete it and rerun that measurement",
                  file=sys.stderr)

    def has_records(self) -> bool:
        """Whether the folder holds any record file: a report of none would read as every claim
        unmeasured, so the readers stop on a mistyped folder instead."""
        return self.records_dir.is_dir() and any(self.records_dir.glob("*.json"))

    def records(self) -> Iterator[dict]:
        """Every well-formed record; a malformed one is skipped with one warning naming its file.
        Each is a fresh dict whose nested values (metrics, params) the store keeps for its next
        reading: read them, do not change them."""
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*.json")):  # .tmp-* files do not match
            rec = self._read_once(path)
            if rec is not None:
                yield dict(rec)  # a copy: the parsed record stays as the file says

    def _read_once(self, path: Path) -> dict | None:
        raw = self._bytes(path)
        if raw is None:
            return None
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        seen = self._parsed.get(path)
        if seen is None or seen[0] != digest:
            seen = self._parsed[path] = (digest, self._read(path, raw))
        return seen[1]

    def bits_table(self) -> pd.DataFrame:
        """The per-image results (hex bitmaps) of the measurements that have them."""
        cols = ["run_key", "model", "dataset", "n", "eval_n", "family", "threat", "view", "eps", "timestamp", "bits",
                "positions", "autoattack_warnings",  # the AutoAttack cross-check's (bench/measure/crosscheck.py)
                "weights_sha256",  # which weights: a run key retrained to others (bench/report/columns.py)
                "subset_seed"]  # which images: one subset a model (bench/report/columns.py)
        rows = [dict({c: rec.get(c) for c in cols}, eval_n=part_of(rec)) for rec in self.records()
                if rec.get("bits") and rec.get("schema", 1) >= SCHEMA]
        return pd.DataFrame(rows, columns=cols)

    def table(self) -> pd.DataFrame:
        """The tidy long table, one row per (measurement, metric), in a stable order."""
        rows: List[Dict] = []
        for rec in self.records():
            if rec.get("schema", 1) < SCHEMA:
                continue
            base = {c: rec.get(c) for c in TABLE_COLUMNS if c not in ("metric", "value", "params", "eval_n")}
            base["params"] = json.dumps(rec.get("params", {}), sort_keys=True)
            base["eval_n"] = part_of(rec)
            # T_source: "estimated" for a caller's model whose T was not given, else the T is the training T
            base.update(model_source=model_source(rec), T_source=rec.get("T_source") or "given")
            # null is "not measured" (a NaN written as JSON): no row, as for a metric left out; a
            # null robust_acc was an idxmin over no number in every report
            rows += [dict(base, metric=m, value=v) for m, v in rec["metrics"].items() if v is not None]
        df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        if len(df):
            df = df.sort_values(["arch", "head", "regime", "lr_scale", "T", "seed", "model", "family", "threat",
                                 "view", "eps", "corruption", "severity", "magnitude", "metric"],
                                kind="stable").reset_index(drop=True)
        return df
