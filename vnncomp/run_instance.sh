#!/bin/bash
# VNN-COMP run_instance.sh for nnverify: verifies one instance and writes RESULTS_FILE
# (first line sat / unsat / timeout / error / unknown; the witness follows a sat).
# Usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
set -u
TOOL_NAME=nnverify
VERSION_STRING=v1
if [ "${1:-}" != "$VERSION_STRING" ]; then
    echo "Expected first argument (version string) '$VERSION_STRING', got '${1:-}'" >&2
    exit 1
fi
if [ $# -lt 6 ]; then
    echo "Usage: $0 v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2
    exit 1
fi
CATEGORY=$2
ONNX_FILE=$3
VNNLIB_FILE=$4
RESULTS_FILE=$5
TIMEOUT=$6
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLI="${NNVERIFY_CLI:-$REPO_DIR/.venv/bin/nnverify}"
echo "Running $TOOL_NAME on category '$CATEGORY', onnx '$ONNX_FILE', vnnlib '$VNNLIB_FILE', timeout $TIMEOUT"

rm -f "$RESULTS_FILE"
"$CLI" verify "$ONNX_FILE" "$VNNLIB_FILE" --timeout "$TIMEOUT" --result-file "$RESULTS_FILE"
RC=$?
# The CLI writes the result file itself; if it died before doing so, say error, never guess.
if [ ! -s "$RESULTS_FILE" ]; then
    echo "$TOOL_NAME exited with code $RC without a result; writing 'error'" >&2
    echo "error" > "$RESULTS_FILE"
fi
exit 0
