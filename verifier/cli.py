"""`nnverify` command line: verify, bounds (more commands join as the engine grows)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time

_STARTED = time.monotonic()
EXIT_ERROR = 2


def _write(path: str | None, text: str) -> None:
    """Write the VNN-COMP result block to ``path`` (when given)."""
    if path:
        with open(path, "w") as fh:
            fh.write(text)


@contextlib.contextmanager
def _stdout_for_results():
    """Send anything libraries print (solver banners) to stderr; yield the real stdout's fd."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield saved
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# seconds of the budget kept back from verify, so that it answers (with its log) before the watchdog:
# its last bound propagation may end after the deadline (one backward chunk; on oval21 and
# cifar10_resnet up to 0.6 s: with 0.3 s, 16 of 51 timeouts reached the watchdog)
RESERVE = 0.6


def _watchdog(seconds: float, result_file: str | None, as_json: bool, started: float, out_fd: int,
              word: str = "timeout") -> threading.Timer:
    """A hard stop: if verification overruns its budget, report timeout and exit at once."""

    def fire():
        _write(result_file, word + "\n")
        if as_json:
            text = json.dumps({"verdict": "timeout", "result": "timeout", "reason": "watchdog: budget overrun",
                               "time": round(time.monotonic() - started, 3)})
        else:
            text = word
        os.write(out_fd, (text + "\n").encode())
        os._exit(0)

    timer = threading.Timer(max(seconds, 0.1), fire)
    timer.daemon = True
    timer.start()
    return timer


def cmd_verify(args) -> int:
    """Verify one (model, spec) pair or a 2.0 query; print the result block (or JSON)."""
    from verifier.config import VerifyConfig
    from verifier.portfolio import verify
    from verifier.result import Verdict

    try:
        query, networks = _query_args(args)
    except ValueError as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    budget = args.timeout - (time.monotonic() - args.started)
    config = VerifyConfig(timeout=max(budget - RESERVE, 0.1), method=args.method,
                          check_certificates=not args.no_check)
    with _stdout_for_results() as out_fd:
        timer = _watchdog(budget - 0.05, args.result_file, args.json, args.started, out_fd,
                          "timed-out" if query else "timeout")
        if query:
            from verifier.query import verify_query

            result, compiled = verify_query(query, networks, config, float_as_real=args.float_as_real)
        else:
            result, compiled = verify(args.paths[0], args.paths[1], config), None
        timer.cancel()
    result.timings["process"] = time.monotonic() - args.started
    text = _query_text(result, compiled) if query else result.vnncomp_text()
    _write(args.result_file, text)
    _write_evidence(result, args.certificate, args.counterexample)
    if args.json:
        print(json.dumps(result.to_json(), default=float))
    else:
        print(text, end="")
        if result.reason:
            print(f"; {result.verdict.value}: {result.reason}", file=sys.stderr)
    if result.verdict is Verdict.ERROR:
        print(f"nnverify: error: {result.reason}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _query_args(args) -> tuple[object, dict[str, str]]:
    """(2.0 query path or parsed ``Query``, or None; network name -> ONNX path) from ``verify``/``check`` positionals.

    ``QUERY --network NAME=PATH ...`` is a 2.0 query; ``MODEL SPEC`` is a 1.0 pair, or a 2.0 query
    with one network when SPEC starts with a ``(vnnlib-version <2.0>)`` header.
    """
    from verifier.spec.vnnlib2 import version_of

    networks = {}
    for item in args.network or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--network takes NAME=PATH, got {item!r}")
        networks[name] = path
    paths = list(args.paths)
    if networks:
        if len(paths) != args.n_positional - 1:
            raise ValueError(f"with --network give the query file only ({len(paths)} paths given)")
        return paths[0], networks
    if len(paths) != args.n_positional:
        raise ValueError(f"expected MODEL SPEC (VNN-LIB 1.0) or QUERY --network NAME=PATH (2.0), got {len(paths)} paths")
    try:
        with open(paths[1], "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None, {}      # the loader reports the missing file in the usual way
    if version_of(head) is None:
        return None, {}
    from verifier.spec.vnnlib2 import QueryError, load_query

    try:
        query = load_query(paths[1])            # parsed once: verify / check compile this object
        return query, {query.only_network(): paths[0]}
    except QueryError as exc:
        raise ValueError(str(exc)) from None


_QUERY_WORDS = {"holds": "unsat", "violated": "sat", "timeout": "timed-out", "unknown": "unknown", "error": "unknown"}


def _query_text(result, compiled) -> str:
    """The 2.0 verifier-interface result: one word, and on ``sat`` the witness lines."""
    word = _QUERY_WORDS[result.verdict.value]
    if word == "sat" and result.counterexample is not None:
        from verifier.query import witness_lines

        lines = witness_lines(compiled, result.counterexample.x, result.counterexample.y)
        return "sat\n" + "\n".join(lines) + "\n"
    return word + "\n"


def _write_evidence(result, certificate_path: str | None, counterexample_path: str | None) -> None:
    """Save the holds certificate / the violated counterexample record where asked."""
    if certificate_path and result.certificate is not None:
        from verifier.certificate import save_certificate

        save_certificate(result.certificate, certificate_path)
    if counterexample_path and result.counterexample is not None:
        _write(counterexample_path, json.dumps(result.counterexample_json(), indent=1) + "\n")


def cmd_bounds(args) -> int:
    """Print per-constraint lower bounds of the spec's unsafe polytopes."""
    import torch

    from verifier.bounds import BoundEngine
    from verifier.bounds.box import outward_box
    from verifier.portfolio import InputError, load_inputs

    try:
        model, spec, _ = load_inputs(args.model, args.spec)
    except InputError as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    graph = model.graph
    engine = BoundEngine(graph)
    for ri, region in enumerate(spec.regions):
        lo, hi = outward_box(region.lower, region.upper, torch.float32, None, (1,) + graph.input_shape)
        for pi, poly in enumerate(region.unsafe):
            t0 = time.monotonic()
            res = engine.compute(lo, hi, torch.tensor(poly.A, dtype=torch.float32).unsqueeze(0), method=args.method)
            margins = res.lower[0].double().numpy() - poly.b
            cells = " ".join(f"{m:+.6g}" for m in margins)
            print(f"region {ri} polytope {pi} [{args.method}, {time.monotonic() - t0:.3f}s] "
                  f"lower(A y - b): {cells}  -> {'refuted' if margins.max() > 0 else 'open'}")
    return 0


def cmd_check(args) -> int:
    """Re-validate a certificate with the independent float64 checker."""
    from verifier.check import check_files

    try:
        query, networks = _query_args(args)
    except ValueError as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if query:
        from verifier.query import check_query

        report = check_query(query, networks, args.paths[-1], strict=args.strict, float_as_real=args.float_as_real)
    else:
        report = check_files(args.paths[0], args.paths[1], args.paths[2], strict=args.strict)
    print(f"{'ok' if report.ok else 'REJECTED'}: {report.leaves} leaves checked in {report.time:.3f}s")
    for line in report.reasons:
        print(f"  reason: {line}")
    for line in report.notes[:20]:
        print(f"  note: {line}")
    return 0 if report.ok else 1


def cmd_soundness(args) -> int:
    """Generate or run the soundness suite (planted counterexamples + exact ground truth)."""
    if args.action == "generate":
        from verifier.soundness.generate import main as run_main
    else:
        from verifier.soundness.run import main as run_main
    return run_main(args.rest)


def cmd_inspect(args) -> int:
    """Print the lowered graph, what the loader folded, and with a spec the unstable count and route."""
    from verifier.model import load_onnx

    try:
        model = load_onnx(args.model)
        info = _inspect_model(model)
        if args.spec:
            info["spec"] = _inspect_spec(model, args.spec)
    except (ValueError, OSError) as exc:     # load / parse errors (InputError is a ValueError)
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"model {args.model} (sha256 {model.sha256[:16]}...)")
    print(f"input {info['input_shape']} ({info['n_inputs']} values) -> output {info['output_shape']}; "
          f"{len(info['nodes'])} nodes, {info['parameters']} parameters")
    print("ops: " + ", ".join(f"{op} x{k}" for op, k in info["ops"].items()))
    print("bound rules (IBP | CROWN | checker):")
    for op, rule in info["rules"].items():
        print(f"  {op:<11} {rule['ibp']} | {rule['crown']} | {rule['checker']}")
    for n in info["nodes"]:
        print(f"  {n['op']:<11} {str(n['shape']):<18} {n['name']}  <- {', '.join(n['inputs'])}")
    print(f"loader log ({len(info['folded'])} entries):")
    for line in info["folded"]:
        print(f"  {line}")
    if "spec" in info:
        sp = info["spec"]
        print(f"spec: {sp['regions']} region(s), {sp['polytopes']} unsafe polytope(s)")
        print(f"unstable ReLU-like neurons (CROWN, region 0): {sp['unstable']} {sp['bounds_note']}")
        print(f"route: {sp['route']} ({sp['route_reason']})")
    return 0


def _inspect_model(model) -> dict:
    """The lowered graph as plain data: shapes, op counts, parameters, nodes, the loader log."""
    from collections import Counter

    from verifier.bounds.registry import op_rules

    g = model.graph
    return {"input_shape": list(g.input_shape), "n_inputs": g.n_inputs, "output_shape": list(g.output_shape),
            "parameters": sum(t.numel() for n in g.nodes for t in n.params.values() if t is not None),
            "ops": dict(sorted(Counter(n.op for n in g.nodes).items())),
            "nodes": [{"name": n.name, "op": n.op, "shape": list(n.shape), "inputs": list(n.inputs)} for n in g.nodes],
            "folded": list(model.folded), "rules": op_rules(g)}


def _inspect_spec(model, spec_path: str) -> dict:
    """Unstable ReLU-like neurons under the first region's box (CROWN) and the route verify() takes."""
    import torch

    from verifier.bounds import BoundEngine
    from verifier.bounds.box import outward_box
    from verifier.config import VerifyConfig
    from verifier.portfolio import Run, choose_route, count_unstable, load_inputs
    from verifier.result import Result, Verdict

    model, spec, sha = load_inputs(model, spec_path)
    g, region = model.graph, spec.regions[0]
    out = {"regions": len(spec.regions), "polytopes": sum(len(r.unsafe) for r in spec.regions)}
    lo, hi = outward_box(region.lower, region.upper, torch.float32, None, (1,) + tuple(g.input_shape))
    t0 = time.monotonic()
    try:
        res = BoundEngine(g).compute(lo, hi, method="crown")
        out["unstable"], out["bounds_note"] = count_unstable(g, res.intermediate), f"[{time.monotonic() - t0:.2f}s]"
    except (ValueError, NotImplementedError) as exc:
        out["unstable"], out["bounds_note"] = None, f"(cannot bound: {exc})"
    config = VerifyConfig()
    run = Run(model, spec, sha, config, time.monotonic() + config.timeout, torch.device("cpu"), Result(Verdict.UNKNOWN))
    out["route"], out["route_reason"], _ = choose_route(run)
    return out


def _query_paths(parser, metavar: str, n_positional: int) -> None:
    """The positionals of a command that takes a 1.0 pair or a 2.0 query, and the 2.0 options (see ``_query_args``)."""
    parser.add_argument("paths", nargs="+", metavar=metavar)
    parser.add_argument("--network", action="append", metavar="NAME=PATH", help="bind a network of a 2.0 query (repeat)")
    parser.add_argument("--float-as-real", action="store_true",
                        help="2.0 queries: decide float32/float64 declarations under real arithmetic (see docs/vnnlib2.md)")
    parser.set_defaults(n_positional=n_positional)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    ap = argparse.ArgumentParser(prog="nnverify", description="Neural-network verification (ONNX + VNN-LIB).")
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="verify MODEL SPEC (VNN-LIB 1.0) or QUERY --network NAME=PATH (VNN-LIB 2.0)")
    _query_paths(v, "MODEL SPEC | QUERY", 2)
    v.add_argument("--timeout", type=float, default=60.0, help="wall-clock budget in seconds (default 60)")
    v.add_argument("--result-file", help="also write the VNN-COMP result block to this file")
    v.add_argument("--json", action="store_true", help="print the full result as JSON")
    v.add_argument("--certificate", help="write the checked certificate of a holds verdict here (JSON)")
    v.add_argument("--counterexample", help="write the counterexample record of a violated verdict here (JSON)")
    v.add_argument("--method", default="auto", choices=["auto", "attack", "ibp", "crown", "alpha", "bab", "milp", "sat"])
    v.add_argument("--no-check", action="store_true", help="skip the float64 re-check of holds (labelled unchecked)")
    v.set_defaults(func=cmd_verify)
    b = sub.add_parser("bounds", help="print lower bounds of each unsafe constraint")
    b.add_argument("model")
    b.add_argument("spec")
    b.add_argument("--method", default="crown", choices=["ibp", "crown", "alpha"])
    b.set_defaults(func=cmd_bounds)
    i = sub.add_parser("inspect", help="show the lowered graph, folded ops, and (with a spec) the route")
    i.add_argument("model")
    i.add_argument("spec", nargs="?", help="VNN-LIB property: adds unstable-neuron count and route")
    i.add_argument("--json", action="store_true", help="print the report as JSON")
    i.set_defaults(func=cmd_inspect)
    c = sub.add_parser("check", help="re-validate a holds certificate: MODEL SPEC CERT, or QUERY CERT --network NAME=PATH")
    _query_paths(c, "MODEL SPEC CERT | QUERY CERT", 3)
    c.add_argument("--strict", action="store_true", help="also reject leaves whose claimed bound exceeds the re-derived one")
    c.set_defaults(func=cmd_check)
    sb = sub.add_parser("soundness", help="soundness suite: `generate DIR [--tier ci|nightly]` or `run DIR`")
    sb.add_argument("action", choices=["generate", "run"])
    sb.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the action (see --help of each)")
    sb.set_defaults(func=cmd_soundness)
    from verifier.supports import register as register_supports; register_supports(sub, ap)  # noqa: E702
    from verifier.audit.cli import register as register_audit; register_audit(sub)  # noqa: E702 -- audit commands
    from verifier.nap_cli import register as register_nap; register_nap(sub)  # noqa: E702 -- nap mine / verify, explain
    return ap


def main(argv: list[str] | None = None, extend=None) -> int:
    """Entry point of the ``nnverify`` script; ``extend(subparsers)`` may add commands (the service's)."""
    parser = build_parser()
    if extend is not None:
        extend(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)))
    args = parser.parse_args(argv)
    # Budgets count from process start for the console script (start-up is part of the time).
    args.started = _STARTED if argv is None else time.monotonic()
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    if argv is None:   # the console script: everything is written; skip torch's ~0.3 s interpreter teardown
        _leave(code)
    return code


def _leave(code: int | None) -> None:
    """Flush every output stream and end the process now with ``code``."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())
