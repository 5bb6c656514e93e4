"""The Python half of scripts/gpu_wheels.sh and scripts/gpu_run.sh.

    manifest OUT --data DIR   (CPU machine) the commit, a hash of every tracked source file and
                              the data's fingerprint, for the device to check its copy against
    code-version MANIFEST     (device) the code version to record: git's when the copy is a git
                              checkout, else the manifest's commit if every file still hashes the
                              same, else that commit marked '-modified'
    provenance ...            (device) commit, device, torch, wall time, and which of the grid's
                              jobs finished, per model with its training and evaluation time
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# what the device runs: the code, not the results or the docs
SOURCE_DIRS = ("bench", "attacks", "models", "scripts")
SOURCE_FILES = ("pyproject.toml", "Makefile")


def _git(*args: str) -> str:
    from bench.errors import BenchError
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise BenchError(f"git {' '.join(args)} failed in {REPO}: the manifest is written from a git checkout "
                         f"of the repository, with git installed") from None


def source_files() -> list:
    files = _git("ls-files", "--", *SOURCE_DIRS, *SOURCE_FILES).splitlines()
    return sorted(f for f in files if (REPO / f).is_file())


def tree_hash(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0" + hashlib.sha256((REPO / f).read_bytes()).digest())
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    from bench.atomic import write_bytes_atomic
    # atomic: a reader (gpu_run.sh's code-version, a packer) never meets half a file
    write_bytes_atomic(path, (json.dumps(obj, indent=1, default=str) + "\n").encode())


def cmd_manifest(args) -> int:
    from bench.atomic import can_write_in
    from bench.data import load_dataset
    from bench.errors import BenchError
    from bench.provenance import code_version
    out = Path(args.out)
    # checked before the data is decoded (minutes the first time), not found after it
    if out.is_dir():
        raise BenchError(f"{out} is a folder: give the manifest's file name, e.g. {out / 'source.json'}")
    if not out.parent.is_dir():
        raise BenchError(f"no folder {out.parent} for the manifest: make it first, or give another OUT")
    if not can_write_in(out.parent):
        raise BenchError(f"cannot write in {out.parent}: give an OUT in a folder you can write to")
    files, commit = source_files(), _git("rev-parse", "HEAD")
    data = load_dataset(args.data, Path(args.cache))
    manifest = {"code_version": code_version(), "commit": commit, "files": files,
                "tree_sha256": tree_hash(files), "data": data.name, "data_fingerprint": data.fingerprint,
                "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json(out, manifest)
    print(f"{args.out}: {manifest['code_version']}, {len(files)} source files, data {data.name} "
          f"{data.fingerprint[:12]}")
    return 0


def read_manifest(path: Path) -> dict:
    """The manifest cmd_manifest wrote, or a BenchError saying what is wrong with the file."""
    from bench.errors import BenchError
    again = "write it again with `python scripts/gpu_window.py manifest` on the CPU machine"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BenchError(f"manifest {path} is not a readable JSON file ({type(e).__name__}): {again}") from None
    if not isinstance(manifest, dict):
        raise BenchError(f"manifest {path} holds a JSON {type(manifest).__name__}, not an object: {again}")
    missing = [k for k in ("code_version", "files", "tree_sha256") if k not in manifest]
    if missing:
        raise BenchError(f"manifest {path} has no {', '.join(missing)}: {again}")
    if not (isinstance(manifest["files"], list) and all(isinstance(f, str) for f in manifest["files"])
            and isinstance(manifest["code_version"], str) and isinstance(manifest["tree_sha256"], str)):
        raise BenchError(f"manifest {path}: its files are not a list of paths, or its code_version or tree_sha256 "
                         f"not text: {again}")
    return manifest


def code_version_from(manifest_path: Path) -> str:
    from bench.provenance import code_version
    ours = code_version()
    if ours != "unknown" or not manifest_path.is_file():
        return ours
    manifest = read_manifest(manifest_path)
    present = [f for f in manifest["files"] if (REPO / f).is_file()]
    same = len(present) == len(manifest["files"]) and tree_hash(present) == manifest["tree_sha256"]
    return manifest["code_version"] + ("" if same else "-modified")


def cmd_code_version(args) -> int:
    print(code_version_from(Path(args.manifest)))
    return 0


def device_facts(device: str) -> dict:
    import torch
    facts = {"torch": torch.__version__, "python": platform.python_version(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                     capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                     cudnn=torch.backends.cudnn.version(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                     matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
        try:
            facts["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                             capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    else:
        from bench.provenance import device_name
        facts["cpu"] = device_name(torch.device("cpu"))
    from bench.accel import Accel
    facts["accel"] = Accel.for_device(torch.device(device)).describe()
    return facts


def grid_progress(run_args: list) -> dict:
    """Which of the grid's jobs the stores hold, per model, with the time each model took."""
    from bench.cli import make_plan
    from bench.grid.jobs import Context, build_jobs, is_done
    from bench.run import build_parser
    plan = make_plan(build_parser().parse_args(run_args))
    ctx = Context(plan, lambda m: None)
    jobs = build_jobs(ctx)
    per_model = defaultdict(lambda: {"jobs": 0, "done": 0, "train_s": None, "eval_s": 0.0})
    for job in jobs:
        row = per_model[job.spec.name if job.kind == "eval" else job.spec.run.name]
        row["jobs"] += 1
        row["done"] += is_done(job, ctx)
        if job.kind == "train" and row["done"]:
            meta = ctx.verified(job.spec, ctx.ckpt_key(job.spec)) or {}
            row.update(train_s=round(meta.get("wall_s", float("nan")), 1), test_acc=meta.get("test_acc"),
                       test_n=meta.get("test_n"))
    for rec in ctx.store.records():
        if rec.get("same_weights_as"):
            continue  # a copy from a twin carries its source's wall time, not its own (as grid_cost.py counts)
        if rec.get("model") in per_model and isinstance(rec.get("wall_s"), (int, float)):
            per_model[rec["model"]]["eval_s"] += rec["wall_s"]
    for row in per_model.values():
        row["eval_s"] = round(row["eval_s"], 1)
    done = sum(is_done(j, ctx) for j in jobs)
    return {"jobs": len(jobs), "jobs_done": done, "models": dict(per_model),
            "models_finished": [m for m, r in per_model.items() if r["done"] == r["jobs"]]}


def cmd_provenance(args) -> int:
    from bench.errors import BenchError
    from bench.provenance import code_version
    status = {0: "finished", 124: "stopped at the time limit (rerun to resume)",
              137: "killed at the time limit (rerun to resume)"}.get(args.grid_rc, f"failed (exit {args.grid_rc})")
    out = {"profile": args.profile, "code_version": None, "status": status,
           "grid_exit_code": args.grid_rc, "wall_s": args.wall_s, "grid_wall_s": args.grid_wall_s,
           "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest = Path(args.manifest)
    try:  # a bad manifest is said in the file: the grid's results still need their provenance
        out["code_version"] = code_version_from(manifest)
        if manifest.is_file():
            out["manifest"] = {k: v for k, v in read_manifest(manifest).items() if k != "files"}
    except BenchError as e:
        out["code_version"], out["manifest_error"] = code_version(), str(e)
    out.update(device_facts(args.device))
    run_args = ["--profile", args.profile, "--model", "all", "--device", "cpu", "--results", args.results,
                "--cache", args.cache, "--no-progress"]
    # written now and again below: if the scan of the stores runs out of time, this much is kept
    _write_json(Path(args.out), out)
    try:
        from bench.data import load_dataset
        data = load_dataset(None, Path(args.cache))
        out["data"], out["data_fingerprint"] = data.name, data.fingerprint
        if "manifest" in out:
            out["data_matches_manifest"] = data.fingerprint == out["manifest"]["data_fingerprint"]
        out.update(grid_progress(run_args))
    except Exception as e:  # noqa: BLE001 - a provenance file with the error beats none
        out["progress_error"] = f"{type(e).__name__}: {e}"
    _write_json(Path(args.out), out)
    print(f"{args.out}: {out['status']}, {out.get('jobs_done', '?')}/{out.get('jobs', '?')} jobs, "
          f"{len(out.get('models_finished', []))} models finished")
    return 0


def main(argv=None) -> int:
    from bench.atomic import user_path  # an empty path is refused, not read as the working folder
    from bench.command import Parser  # a usage error in one line, as every command of the harness
    p = Parser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifest")
    m.add_argument("out", type=user_path)
    m.add_argument("--data", required=True, type=user_path)
    m.add_argument("--cache", default=".cache", type=user_path)
    c = sub.add_parser("code-version")
    c.add_argument("manifest")
    v = sub.add_parser("provenance")
    for flag in ("--out", "--profile", "--results", "--cache", "--device", "--manifest"):
        v.add_argument(flag, required=True)
    v.add_argument("--grid-rc", type=int, required=True)
    v.add_argument("--wall-s", type=float, required=True)
    v.add_argument("--grid-wall-s", type=float, required=True)
    args = p.parse_args(argv)
    from bench.errors import BenchError
    try:
        return {"manifest": cmd_manifest, "code-version": cmd_code_version,
                "provenance": cmd_provenance}[args.cmd](args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
