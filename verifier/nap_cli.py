"""`nnverify nap mine | nap verify` and `nnverify explain`: activation-pattern specs and verified attribution maps.

Bad input (a sample or point whose size does not fit the model, a label out of range, a patch
larger than the input, a NAP file mined on another model, ...) is one line on stderr and exit
status 2, with nothing written.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

EXIT_ERROR = 2


def register(sub) -> None:
    """Add the ``nap`` (mine, verify) and ``explain`` commands to ``nnverify``'s subparsers."""
    nap = sub.add_parser("nap", help="neural activation patterns: mine them from data, verify them")
    actions = nap.add_subparsers(dest="nap_command", required=True)
    m = actions.add_parser("mine", help="mine each class's NAP from labelled data; write the NAPs JSON")
    m.add_argument("model")
    m.add_argument("data", help=".npz with x [N, ...] and y [N] (optionally x_test, y_test: held-out data)")
    m.add_argument("--delta", type=float, default=0.99, help="share of a class's samples a neuron state needs (0.5, 1]")
    m.add_argument("--layers", nargs="+", help="ReLU layers to use: node names or positions (default: all)")
    m.add_argument("--holdout", type=float, default=0.2, help="held-out share when DATA has no x_test (default 0.2)")
    m.add_argument("--out", required=True, help="where to write the NAPs JSON")
    m.set_defaults(func=cmd_mine)
    v = actions.add_parser("verify", help="verify NAP_c => class c per class, and pairwise non-ambiguity")
    v.add_argument("model")
    v.add_argument("naps")
    v.add_argument("--class", dest="classes", type=int, nargs="+", help="classes whose NAP property to verify")
    v.add_argument("--pair", type=int, nargs=2, action="append", metavar=("A", "B"),
                   help="check that no input matches both NAP_A and NAP_B (repeatable)")
    v.add_argument("--eps", type=float, help="region: the eps-ball (L-inf) around --point, within the input range")
    v.add_argument("--point", help=".npy input the eps-ball is centred on")
    v.add_argument("--clip", type=float, nargs=2, metavar=("LO", "HI"), help="valid input range (default: the data's)")
    v.add_argument("--timeout", type=float, default=60.0, help="budget in seconds for all properties (default 60)")
    v.add_argument("--out", help="write the full report (certificates and witnesses included) as JSON")
    v.set_defaults(func=cmd_verify)
    e = sub.add_parser("explain", help="verified attribution map: guaranteed margin bound per input patch")
    e.add_argument("model")
    e.add_argument("input", help=".npy input")
    e.add_argument("--label", type=int, required=True)
    e.add_argument("--patch", type=int, required=True, help="patch side K (images) or group size (features)")
    e.add_argument("--eps", type=float, required=True)
    e.add_argument("--clip", type=float, nargs=2, metavar=("LO", "HI"), help="valid input range")
    e.add_argument("--grid", type=int, nargs=2, metavar=("H", "W"), help="read a flat input as an H x W image")
    e.add_argument("--complement", action="store_true", help="also bound the margin with all but the patch perturbed")
    e.add_argument("--method", default="crown", choices=["crown", "alpha"])
    e.add_argument("--out", required=True, help="directory for explain.json and explain.png")
    e.set_defaults(func=cmd_explain)


def _fail(message: str) -> int:
    """Print the one-line error and return the error status."""
    print(f"nnverify: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _load_array(path: str, what: str) -> np.ndarray:
    """A .npy array; ValueError with a one-line message if unreadable."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from None


def _load_data(path: str) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """(x, y, held-out (x, y) or None) from an .npz file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"cannot read data {path}: an .npz with x and y is expected ({exc})") from None
    if "x" not in arrays or "y" not in arrays:
        raise ValueError(f"data {path} needs arrays x and y (it has {', '.join(sorted(arrays)) or 'none'})")
    test = None
    if "x_test" in arrays or "y_test" in arrays:
        if "x_test" not in arrays or "y_test" not in arrays:
            raise ValueError(f"data {path}: x_test and y_test go together")
        test = (arrays["x_test"], arrays["y_test"])
    return arrays["x"], arrays["y"], test


def cmd_mine(args) -> int:
    """Mine the NAPs and write them (prints a one-line summary per class)."""
    from verifier.nap import NapError, mine, save_naps

    try:
        x, y, test = _load_data(args.data)
        naps = mine(args.model, x, y, args.delta, args.layers, heldout=test, holdout=args.holdout)
    except (NapError, ValueError) as exc:
        return _fail(str(exc))
    save_naps(naps, args.out)
    for e in naps["classes"]:
        print(f"class {e['label']}: {e['size']} neurons, recall {_pct(e['recall'])}, precision {_pct(e['precision'])}")
    s = naps["summary"]
    print(f"mean: {s['mean_size']:.1f} neurons, recall {_pct(s['mean_recall'])}, precision {_pct(s['mean_precision'])}"
          f" -> {args.out}")
    return 0


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def cmd_verify(args) -> int:
    """Verify the NAP properties asked for; one line per property, the full report to --out."""
    from verifier.nap import NapError, verify_naps

    try:
        point = _load_array(args.point, "point") if args.point else None
        pairs = [tuple(p) for p in args.pair] if args.pair else None
        classes = args.classes if args.classes is not None or pairs is None else []
        report = verify_naps(args.model, args.naps, classes, pairs, point=point, eps=args.eps, clip=args.clip,
                             timeout=args.timeout)
    except (NapError, ValueError) as exc:
        return _fail(str(exc))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    for r in report["classes"]:
        print(f"class {r['label']}: {r['verdict']} ({_how(r)})")
    for r in report["non_ambiguity"]:
        print(f"classes {r['labels'][0]} and {r['labels'][1]} non-ambiguous: {r['verdict']} ({_how(r)})")
    return 0


def _how(r: dict) -> str:
    """How a verdict was reached, in a few words."""
    if r["verdict"] == "holds":
        extra = "certificate checked" if r.get("certificate_checked") else "no search needed"
    elif r["verdict"] == "violated":
        extra = "witness confirmed on onnxruntime"
    else:
        extra = r.get("reason", "")
    return f"{r['method']}, {r['time']:.2f} s, {extra}"


def cmd_explain(args) -> int:
    """Compute the verified attribution map; write explain.json and explain.png."""
    from verifier.explain import ExplainError, explain, save

    try:
        x = _load_array(args.input, "input")
        result = explain(args.model, x, args.label, args.patch, args.eps, args.clip, args.grid, args.complement,
                         args.method)
    except (ExplainError, ValueError) as exc:
        return _fail(str(exc))
    js, png = save(result, x, args.out)
    first = result["patches"][result["ranking"][0]]
    print(f"{len(result['patches'])} patches, margin at input {result['margin']:.4g}; most important patch "
          f"{first['id']} (margin >= {first['margin_lower']:.4g}) -> {js}, {png}")
    return 0

