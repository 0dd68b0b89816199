"""``nnverify supports --OPTION``: the VNN-LIB 2.0 capability queries, answered from what the code does."""
from __future__ import annotations

import sys

VNNLIB_VERSIONS = ("1.0", "2.0")
OPSET_RANGE = (7, 21)          # the opsets the loader's lowering rules were written and tested against
ELEMENT_TYPES = ("real",)      # proofs are over real arithmetic; float types only with --float-as-real
ARITHMETIC = ("bounds", "output-comparisons", "linear", "polynomial")


def answers() -> dict[str, list[str]]:
    """Option -> the lines it prints."""
    from verifier.model.onnx_lowering import ONNX_OPS

    yes = ["true"]
    return {
        "vnnlib-versions": [VNNLIB_VERSIONS[0], VNNLIB_VERSIONS[-1]],
        "onnx-opset-versions": [str(OPSET_RANGE[0]), str(OPSET_RANGE[1])],
        "onnx-element-types": list(ELEMENT_TYPES),
        "onnx-operators": sorted(ONNX_OPS),
        "multiple-input-outputs": yes,
        "hidden-nodes": yes,
        "multiple-networks": yes,
        "multiple-node-comparisons": yes,
        "arithmetic-complexity": list(ARITHMETIC),
    }


def cmd_supports(args) -> int:
    """Print the answer to one capability query."""
    table = answers()
    chosen = [k for k in table if getattr(args, k.replace("-", "_"))]
    if args.logics:
        chosen.append("arithmetic-complexity")
    if len(chosen) != 1:
        print(f"nnverify: error: give exactly one of {', '.join('--' + k for k in table)}", file=sys.stderr)
        return 2
    print("\n".join(table[chosen[0]]))
    return 0


def register(sub, root) -> None:
    """Add ``supports`` and the global ``--name`` / ``--version`` options."""
    from verifier.certificate import tool_version

    name, version = "nnverify", tool_version().split(" ", 1)[-1]
    root.add_argument("--name", action="version", version=name, help="print the verifier's name")
    root.add_argument("--version", action="version", version=version, help="print the verifier's version")
    s = sub.add_parser("supports", help="VNN-LIB 2.0 capability queries (e.g. --vnnlib-versions)")
    for key in ("vnnlib-versions", "onnx-opset-versions", "onnx-element-types", "onnx-operators",
                "multiple-input-outputs", "hidden-nodes", "multiple-networks", "multiple-node-comparisons",
                "arithmetic-complexity"):
        s.add_argument(f"--{key}", action="store_true")
    s.add_argument("--logics", action="store_true", help="same as --arithmetic-complexity")
    s.set_defaults(func=cmd_supports)
