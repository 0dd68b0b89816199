#!/bin/bash
# VNN-COMP prepare_instance.sh for nnverify: kills stray nnverify processes from earlier
# instances and checks that the instance's files exist. Exit 0 = ready; non-zero = skip it.
# Usage: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
set -u
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" 4 "$0 v1 CATEGORY ONNX VNNLIB" "$@"
CATEGORY=$2
ONNX_FILE=$3
VNNLIB_FILE=$4
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
