#!/usr/bin/env bash
# Keeps results/ out of what a device call sends, and puts it back after.
#
#     bash scripts/gpu_tree.sh hide      # before the window's call(s)
#     bash scripts/gpu_tree.sh restore   # right after the last one, before any commit
#     bash scripts/gpu_tree.sh status
#     bash scripts/gpu_tree.sh check     # exit 1 when a call would be over the limit (gpu_wheels.sh)
#
# A device call sends the tracked and untracked-not-ignored files, at most 64 MiB with the carried
# .whl/ (about 21 MiB). The committed results are over that alone (results/cpu holds its
# checkpoints), and the window needs none of them: it writes results/gpu on the device. `hide`
# takes results/ out of git's index (the files stay on disk) and ignores it in .git/info/exclude,
# so neither list names it; `restore` puts the index back from HEAD and drops the exclude line.
# While hidden, `git status` shows results/ as deleted: commit nothing until `restore`.
set -euo pipefail
cd "$(dirname "$0")/.."
EXCLUDE=.git/info/exclude
LINE=/results/
LIMIT_MIB=64

sent_mib() {
    { git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null
      if [[ -d .whl ]]; then find .whl -type f -exec stat -c %s {} +; fi
    } | awk '{s += $1} END {printf "%d", s / 1048576}'
}
hidden() { grep -qxF "$LINE" "$EXCLUDE" 2>/dev/null; }

case "${1:-}" in
    hide)
        hidden || echo "$LINE" >> "$EXCLUDE"
        git rm -r -q --cached --ignore-unmatch results
        echo "results/ hidden from device calls: a call sends $(sent_mib) MiB (limit $LIMIT_MIB);" \
             "run 'bash scripts/gpu_tree.sh restore' before committing" ;;
    restore)
        git reset -q -- results
        if hidden; then grep -vxF "$LINE" "$EXCLUDE" > "$EXCLUDE.new" || true; mv "$EXCLUDE.new" "$EXCLUDE"; fi
        echo "results/ restored: a call would send $(sent_mib) MiB (limit $LIMIT_MIB)" ;;
    status)
        if hidden; then echo "hidden"; else echo "not hidden"; fi
        echo "a call sends $(sent_mib) MiB (limit $LIMIT_MIB)" ;;
    check)
        mib=$(sent_mib)
        echo "a device call sends $mib MiB (limit $LIMIT_MIB MiB): the working tree and .whl/"
        ((mib < LIMIT_MIB)) || {
            echo "error: over the device tool's $LIMIT_MIB MiB: 'bash scripts/gpu_tree.sh hide' keeps results/ out of the call" >&2
            exit 1; } ;;
    *) echo "usage: bash scripts/gpu_tree.sh hide|restore|status|check" >&2; exit 2 ;;
esac
