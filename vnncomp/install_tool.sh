#!/bin/bash
# VNN-COMP install_tool.sh for nnverify: builds the virtualenv (.venv) with `make install`.
# Usage: install_tool.sh v1
set -u
TOOL_NAME=nnverify
VERSION_STRING=v1
if [ "${1:-}" != "$VERSION_STRING" ]; then
    echo "Expected first argument (version string) '$VERSION_STRING', got '${1:-}'" >&2
    exit 1
fi
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
echo "Installing $TOOL_NAME in $REPO_DIR"
cd "$REPO_DIR" || exit 1
make install PYTHON="${PYTHON:-python3}" || exit 1
"$REPO_DIR/.venv/bin/nnverify" --help > /dev/null || { echo "nnverify CLI does not start" >&2; exit 1; }
echo "$TOOL_NAME installed"
exit 0
