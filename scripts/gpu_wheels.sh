#!/usr/bin/env bash
# Fills .whl/, the one folder a GPU window carries (scripts/gpu_run.sh; carry=[".whl"]). Run it
# here, on the CPU machine, with PyPI reachable: nothing outside the device machine is.
#
#   * the wheels of what the device image lacks. It has torch 2.11, torchvision 0.26, numpy,
#     pandas, scipy, matplotlib, jinja2, pillow, safetensors, filelock, tqdm, scikit-image and
#     opencv (/work/.library/device/KINDS.md) but not torchattacks, pyautoattack and
#     imagecorruptions: the versions this venv runs, pure-Python wheels, no dependencies pulled
#     (the rest are there). pyautoattack's wheel carries a 45 MB example checkpoint
#     (examples/model_test.pt) that the harness never reads: it is repacked without examples/ by
#     the `wheel` tool, which rewrites the RECORD;
#   * the data: the JPEG tree itself as one tar.gz, 19 MB. The decoded uint8 arrays would be
#     184 MB (60,000 x 3,072 bytes) and the tree's 60,000 files 55 MB; gzip shrinks the tree
#     because every file starts with the same 623-byte JPEG header. The device decodes it once
#     (bench/data.py) and provenance.json says whether its fingerprint matches this one;
#   * source.json (scripts/gpu_window.py manifest): the commit, a hash of every tracked source
#     file and the data's fingerprint, so that the device, whose copy has no .git, records
#     the commit it runs (or '-modified' if the tree changed after this script ran).
#
# Then it checks that what a device call sends (tracked and untracked-not-ignored files, plus
# .whl/) stays under the device tool's 64 MiB (scripts/gpu_tree.sh check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${BENCH_DATA:-../shared/data/cifar10-jpeg75}
DEST=.whl
PACKAGES=(torchattacks==3.5.1 pyautoattack==0.2.0 imagecorruptions==1.1.2)

[[ -d "$DATA/train" ]] || { echo "error: no data at $DATA: set BENCH_DATA to the cifar10-jpeg75 folder" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$DEST"
rm -f "$DEST"/*.whl "$DEST"/*.tar.gz "$DEST"/source.json

# the device's interpreter: Python 3.12 on x86-64 (the device README's command)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp/dl" "${PACKAGES[@]}"
"$PY" -m pip download -q --no-deps -d "$tmp/tool" wheel==0.45.1
wheel_tool() { PYTHONPATH=$(echo "$tmp"/tool/wheel-*.whl) "$PY" -m wheel "$@"; }
for w in "$tmp"/dl/*.whl; do
    case "$(basename "$w")" in
        pyautoattack-*)
            wheel_tool unpack -d "$tmp/unpacked" "$w" >/dev/null
            rm -rf "$tmp"/unpacked/pyautoattack-*/pyautoattack/examples
            wheel_tool pack -d "$DEST" "$tmp"/unpacked/pyautoattack-* >/dev/null ;;
        *) cp "$w" "$DEST/" ;;
    esac
done

tar czf "$DEST/$(basename "$DATA").tar.gz" -C "$(dirname "$DATA")" "$(basename "$DATA")"
"$PY" scripts/gpu_window.py manifest "$DEST/source.json" --data "$DATA"

ls -l "$DEST"
bash scripts/gpu_tree.sh check
