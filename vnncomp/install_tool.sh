#!/bin/bash
# VNN-COMP install_tool.sh for nnverify: builds the virtualenv (.venv) with `make install`.
# Usage: install_tool.sh v1
set -u
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" 1 "$0 v1" "$@"
echo "Installing $TOOL_NAME in $REPO_DIR"
cd "$REPO_DIR" || exit 1
make install PYTHON="${PYTHON:-python3}" || exit 1
"$REPO_DIR/.venv/bin/nnverify" --help > /dev/null || { echo "nnverify CLI does not start" >&2; exit 1; }
echo "$TOOL_NAME installed"
exit 0
