#!/bin/bash
# VNN-COMP run_instance.sh for nnverify: verifies one instance and writes RESULTS_FILE
# (first line sat / unsat / timeout / error / unknown; the witness follows a sat).
# Usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
set -u
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" 6 "$0 v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT" "$@"
CATEGORY=$2
ONNX_FILE=$3
VNNLIB_FILE=$4
RESULTS_FILE=$5
TIMEOUT=$6
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
