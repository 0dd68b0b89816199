"""`make demo`: verify the bundled example network against two properties, no server needed."""
from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> int:
    """Run the CLI on examples/mlp.onnx with a property that holds and one that is violated."""
    from verifier.cli import main as cli

    status = 0
    for prop in ("robust.vnnlib", "fragile.vnnlib"):
        print(f"$ nnverify verify examples/mlp.onnx examples/{prop} --timeout 30")
        status |= cli(["verify", str(EXAMPLES / "mlp.onnx"), str(EXAMPLES / prop), "--timeout", "30"])
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
