#!/bin/bash
# VNN-COMP prepare_instance.sh for nnverify: kills stray nnverify processes from earlier
# instances and checks that the instance's files exist. Exit 0 = ready; non-zero = skip it.
# Usage: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
set -u
TOOL_NAME=nnverify
VERSION_STRING=v1
if [ "${1:-}" != "$VERSION_STRING" ]; then
    echo "Expected first argument (version string) '$VERSION_STRING', got '${1:-}'" >&2
    exit 1
fi
if [ $# -lt 4 ]; then
    echo "Usage: $0 v1 CATEGORY ONNX VNNLIB" >&2
    exit 1
fi
CATEGORY=$2
ONNX_FILE=$3
VNNLIB_FILE=$4
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLI="${NNVERIFY_CLI:-$REPO_DIR/.venv/bin/nnverify}"
echo "Preparing $TOOL_NAME for category '$CATEGORY', onnx '$ONNX_FILE', vnnlib '$VNNLIB_FILE'"

# Only processes running our own CLI (matched by its full path), never ourselves.
for pid in $(pgrep -f -- "$CLI verify" || true); do
    if [ "$pid" != "$$" ] && [ "$pid" != "$PPID" ]; then
        echo "killing stray $TOOL_NAME process $pid"
        kill -9 "$pid" 2> /dev/null || true
    fi
done

for f in "$ONNX_FILE" "$VNNLIB_FILE"; do
    if [ ! -f "$f" ]; then
        echo "missing file: $f" >&2
        exit 1
    fi
done
exit 0
