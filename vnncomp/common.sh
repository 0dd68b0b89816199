# Shared preamble of the VNN-COMP scripts (sourced, not run): the version check, the argument
# count, the repository and the CLI. Usage: source common.sh MIN_ARGS "USAGE" "$@"
TOOL_NAME=nnverify
VERSION_STRING=v1
_min=$1; _usage=$2; shift 2
if [ "${1:-}" != "$VERSION_STRING" ]; then
    echo "Expected first argument (version string) '$VERSION_STRING', got '${1:-}'" >&2
    exit 1
fi
if [ $# -lt "$_min" ]; then
    echo "Usage: $_usage" >&2
    exit 1
fi
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLI="${NNVERIFY_CLI:-$REPO_DIR/.venv/bin/nnverify}"
