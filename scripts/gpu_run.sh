#!/usr/bin/env bash
# The one command of a GPU window (`make gpu`). A session with the device tool runs it as its
# single call, after `bash scripts/gpu_wheels.sh` here has filled .whl/:
#
#     run(command="bash scripts/gpu_run.sh", carry=[".whl"], timeout_s=600)
#
# It installs the wheels the device lacks (from .whl/, offline), unpacks the data carried in
# .whl/, runs the profile's grid under a wall-clock limit, rebuilds the reports from the store,
# and leaves under $OUT (at most 8 files of at most 16 MiB come back from the device):
#
#     gpu_results.tar.gz    results/gpu: the store, reports, job logs, provenance.json, and
#                           checkpoints/*.json, the checkpoints' sidecars (the weights stay behind:
#                           18 fastnetw64 alone are 140 MB); split into .partNN files over 15 MiB
#     provenance.json       commit, device, torch, wall time, which jobs finished, time per model
#     leaderboard.csv       the leaderboard, to quote without unpacking
#     run.log               everything printed
#
# The limit stops the grid with SIGINT, which the harness takes as "keep what finished": every
# finished training run and measurement is in the stores, and the same command resumes.
#
# Settings (environment):
#   GPU_PROFILE     profile name or TOML path (gpu)
#   GPU_DEADLINE_S  seconds the whole script may take (585: under the device tool's 600 s a command)
#   GPU_RESERVE_S   seconds kept back after the grid for the reports, provenance and packing (100)
#   GPU_GRID_LIMIT_S  a tighter limit for the grid alone (default: what the deadline leaves)
#   GPU_DEVICE      --device of the run (cuda)
#   GPU_RESULTS     results folder (results/gpu)
#   GPU_WORK        scratch: installed wheels, data, cache with the checkpoints (/tmp/tempbench-gpu)
#   GPU_CARRY       the carried folder (.whl)
#   PYTHON          the interpreter (python3: on the device, the one that has torch)
#   BENCH_DATA      data root, used when the carried folder holds no data pack
#   BENCH_COMPILE, BENCH_BF16   bench/accel.py (compile: off here unless 1)
set -uo pipefail
cd "$(dirname "$0")/.."

: "${OUT:?OUT is not set: the device tool sets it; for a dry run, set OUT to an empty folder}"
PROFILE=${GPU_PROFILE:-gpu}
DEADLINE=${GPU_DEADLINE_S:-585}
RESERVE=${GPU_RESERVE_S:-100}
DEVICE=${GPU_DEVICE:-cuda}
RESULTS=${GPU_RESULTS:-results/gpu}
WORK=${GPU_WORK:-/tmp/tempbench-gpu}
CARRY=${GPU_CARRY:-.whl}
PY=${PYTHON:-python3}
KILL_AFTER=20  # a run that ignores SIGINT this long is killed (atomic writes: nothing torn)

mkdir -p "$OUT" "$WORK" "$RESULTS"
exec > >(tee -a "$OUT/run.log") 2>&1
tee_pid=$!
say() { echo "[gpu_run ${SECONDS}s] $*"; }
# run.log complete before the script returns: close the pipe, wait for tee
finish() { exec >&- 2>&-; wait "$tee_pid"; exit "$1"; }
say "profile $PROFILE, device $DEVICE, deadline ${DEADLINE}s, results $RESULTS, work $WORK"

# 1. The packages the device image lacks, from the carried wheels (no network there).
shopt -s nullglob
wheels=("$CARRY"/*.whl)
if ((${#wheels[@]})); then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "${wheels[@]}" || { say "wheel install failed"; finish 3; }
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    say "installed ${#wheels[@]} wheels into $WORK/site"
else
    say "no wheels in $CARRY: using the interpreter's packages"
fi

# 2. The data: the JPEG tree carried as one tar.gz (scripts/gpu_wheels.sh says why), else BENCH_DATA.
packs=("$CARRY"/*.tar.gz)
if ((${#packs[@]})); then
    mkdir -p "$WORK/data"
    tar xzf "${packs[0]}" -C "$WORK/data" || { say "cannot unpack ${packs[0]}"; finish 3; }
    BENCH_DATA="$WORK/data/$(tar tzf "${packs[0]}" | head -1 | cut -d/ -f1)"
fi
if [[ -z "${BENCH_DATA:-}" ]]; then
    say "no data: run scripts/gpu_wheels.sh (it packs it into $CARRY) or set BENCH_DATA"
    finish 3
fi
export BENCH_DATA
say "data $BENCH_DATA"

# 3. The code version every record carries: git's, or the manifest's where the copy has no .git.
export BENCH_CODE_VERSION
BENCH_CODE_VERSION=$("$PY" scripts/gpu_window.py code-version "$CARRY/source.json") || finish 3
say "code version $BENCH_CODE_VERSION"

# The store is kept in $WORK too: a second call on the same warm machine gets a fresh copy of the
# repository, without results/gpu, but the same /tmp (seen in the first window: the second call
# found the cached checkpoints and measured everything again), so it resumes from there.
KEEP="$WORK/store/$(basename "$RESULTS")"
if [[ -d "$KEEP/records" && ! -d "$RESULTS/records" ]]; then
    cp -a "$KEEP/." "$RESULTS/" && say "store restored from $KEEP (an earlier call on this machine)"
fi

# 4. The grid, stopped in time to leave RESERVE seconds for what follows. torch.compile stays off
# unless asked for (BENCH_COMPILE=1): Inductor's first compile of an architecture is expected to
# cost about what it saves over this grid's training, and a first window should not bet on a
# compiler stack no run has tried there (bench/accel.py; the CPU tests trace the same step).
export BENCH_COMPILE=${BENCH_COMPILE:-0}
limit=$((DEADLINE - SECONDS - RESERVE - KILL_AFTER))
((limit > ${GPU_GRID_LIMIT_S:-limit})) && limit=$GPU_GRID_LIMIT_S
grid_start=$SECONDS
if ((limit < 1)); then
    say "no time left for the grid (limit ${limit}s)"
    rc=124
else
    say "grid: limit ${limit}s"
    timeout --signal=INT --kill-after=$KILL_AFTER "$limit" "$PY" -m bench.run --profile "$PROFILE" --model all \
        --device "$DEVICE" --results "$RESULTS" --cache "$WORK/cache" --no-progress
    rc=$?
fi
grid_wall=$((SECONDS - grid_start))
say "grid exit $rc after ${grid_wall}s"

# 5. The reports, rebuilt from the store when the run did not get to write them itself.
if ((rc != 0)); then
    timeout 55 "$PY" -m bench.report --results "$RESULTS" || say "reports: not rebuilt"
fi

# 6. Provenance, then one archive of everything worth keeping.
timeout 35 "$PY" scripts/gpu_window.py provenance --out "$RESULTS/provenance.json" --profile "$PROFILE" \
    --results "$RESULTS" --cache "$WORK/cache" --device "$DEVICE" --manifest "$CARRY/source.json" \
    --grid-rc "$rc" --wall-s "$SECONDS" --grid-wall-s "$grid_wall" || say "provenance: failed"
cp "$RESULTS/provenance.json" "$OUT/" 2>/dev/null
cp "$RESULTS/leaderboard.csv" "$OUT/" 2>/dev/null
mkdir -p "$RESULTS/checkpoints"
cp "$WORK"/cache/checkpoints/*.json "$RESULTS/checkpoints/" 2>/dev/null
mkdir -p "$(dirname "$KEEP")" && rm -rf "$KEEP.new" && cp -a "$RESULTS" "$KEEP.new" && rm -rf "$KEEP" && mv "$KEEP.new" "$KEEP"
tar czf "$WORK/gpu_results.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
if (($(stat -c %s "$WORK/gpu_results.tar.gz") > 15 * 1024 * 1024)); then
    split -b 15M -d "$WORK/gpu_results.tar.gz" "$OUT/gpu_results.tar.gz.part"
    say "archive split: cat $OUT/gpu_results.tar.gz.part* > gpu_results.tar.gz"
else
    mv "$WORK/gpu_results.tar.gz" "$OUT/"
fi
say "done: $(ls "$OUT" | tr '\n' ' ')"
# finished, or stopped at the limit (resumable): both are what the window was for
((rc == 0 || rc == 124 || rc == 137)) && finish 0
finish "$rc"
