"""``nnverify audit``, ``nnverify audit-check`` and ``nnverify audit-data``: the audit commands."""
from __future__ import annotations

import argparse
import sys
import time

EXIT_ERROR = 2


def _clock(seconds: float | None) -> str:
    """h:mm:ss (or '?')."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class ProgressBar:
    """One line on stderr: samples done, verdict counts so far, ETA (redrawn in place on a terminal)."""

    def __init__(self, stream=None, every: float = 5.0):
        """Draw on ``stream`` (stderr); off a terminal, a line at most every ``every`` seconds."""
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every, self.last = every, 0.0

    def __call__(self, state) -> None:
        """Show ``state`` (a ``verifier.audit.run.Progress``)."""
        width = 24
        filled = int(width * state.done / max(state.total, 1))
        counts = " ".join(f"{k} {v}" for k, v in sorted(state.counts.items()))
        line = (f"audit [{'#' * filled}{'.' * (width - filled)}] {state.done}/{state.total}  {counts}  "
                f"elapsed {_clock(state.elapsed)}  ETA {_clock(state.eta)}")
        finished = state.done >= state.total
        if self.tty:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        elif finished or time.monotonic() - self.last >= self.every:
            self.stream.write(line + "\n")
            self.last = time.monotonic()
        self.stream.flush()


def summary_lines(report: dict) -> list[str]:
    """The report in a few lines: one per eps, the claim verdict, the clean-accuracy claim."""
    lines = []
    for e in report["per_eps"]:
        lo, hi = e["interval"]
        t = e["time_per_sample"]
        mean = "-" if t["mean"] is None else f"{t['mean']:.2f}s"
        lines.append(f"eps {e['eps']:g}: n {e['n']}, clean {e['clean']} ({e['clean_accuracy']:.1%}), "
                     f"certified {e['certified']} ({e['certified_accuracy']:.1%}), falsified {e['falsified']}, "
                     f"unknown {e['unknown']}; certified accuracy in [{lo:.1%}, {hi:.1%}], "
                     f"claimed {e['claimed_certified_accuracy']:.1%}: {e['claim_verdict']}; {mean} per sample")
    if report.get("clean_claim"):
        c = report["clean_claim"]
        lines.append(f"clean accuracy {c['measured']:.1%}, claimed {c['claimed']:.1%}: {c['verdict']}")
    lines.append(f"claim: {report['claim_verdict']}")
    return lines


def cmd_audit(args) -> int:
    """Audit a claim locally; write DIR/report.json and DIR/report.html."""
    from verifier.audit.claim import ClaimError, load_claim

    try:
        claim = load_claim(args.claim)
    except ClaimError as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    from verifier.audit.run import require_plotting, run_audit
    from verifier.config import VerifyConfig

    try:
        require_plotting()
    except ImportError as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    t0 = time.monotonic()
    report = run_audit(claim, args.out, args.timeout_per_sample, ProgressBar(),
                       config=VerifyConfig(method=args.method), tightness_samples=args.tightness_samples,
                       tightness_bounds=args.tightness_bounds)
    for line in summary_lines(report):
        print(line)
    print(f"report: {args.out}/report.json, {args.out}/report.html ({time.monotonic() - t0:.1f}s)")
    return 0


def cmd_audit_check(args) -> int:
    """Re-check every certificate and counterexample kept with a report."""
    from verifier.audit.check import audit_check

    result = audit_check(args.report)
    word = "ok" if result.ok else "REJECTED"
    print(f"{word}: {result.certificates} certificates and {result.counterexamples} counterexamples re-checked "
          f"in {result.seconds:.1f}s")
    if result.unchecked:
        print(f"  {len(result.unchecked)} holds without a certificate (exact proofs, not re-checkable): "
              f"{', '.join(result.unchecked[:10])}")
    for line in result.failures:
        print(f"  failure: {line}")
    return 0 if result.ok else 1


def cmd_audit_data(args) -> int:
    """Build an audit dataset (.npz) from robustness properties."""
    from verifier.audit.props import write_dataset

    try:
        arrays = write_dataset(args.folder, args.out, args.eps)
    except (ValueError, OSError) as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    x, y = arrays["x"], arrays["y"]
    print(f"wrote {args.out}: {x.shape[0]} samples of shape {list(x.shape[1:])}, labels {y.tolist()}")
    return 0


def register(sub) -> None:
    """Add the audit commands to the ``nnverify`` subparsers ``sub``."""
    a = sub.add_parser("audit", help="audit a robustness claim (claim JSON): report.json + report.html")
    a.add_argument("claim", help="the claim file (JSON; see verifier/audit/claim.py)")
    a.add_argument("--out", required=True, help="folder for the report and the evidence")
    a.add_argument("--timeout-per-sample", type=float, help="seconds per (sample, eps) (default: the claim's, else 30)")
    a.add_argument("--tightness-samples", type=int, default=8,
                   help="samples per eps for the IBP tightness table (0: skip; default 8)")
    a.add_argument("--tightness-bounds", default="crown", choices=["crown", "alpha"],
                   help="outer bounds of the tightness table's upper estimate (alpha: tighter, slower)")
    a.add_argument("--method", default="auto", choices=["auto", "attack", "ibp", "crown", "alpha", "bab", "milp"],
                   help="verification method per sample (default auto)")
    a.set_defaults(func=cmd_audit)
    c = sub.add_parser("audit-check", help="re-check every certificate and counterexample of an audit report")
    c.add_argument("report", help="the report.json of an audit")
    c.set_defaults(func=cmd_audit_check)
    d = sub.add_parser("audit-data", help="build an audit dataset: `mnist-props FOLDER --out data.npz`")
    d.add_argument("kind", choices=["mnist-props"], help="mnist-props: images recovered from mnist_fc eps-ball properties")
    d.add_argument("folder", help="a benchmark folder with vnnlib/, or a folder of prop_<i>_<eps>.vnnlib files")
    d.add_argument("--out", required=True, help="the .npz to write (arrays x, y, index, eps)")
    d.add_argument("--eps", type=float, help="use only the properties of this eps")
    d.set_defaults(func=cmd_audit_data)


def main(argv: list[str] | None = None) -> int:
    """Run one audit command (``python -m verifier.audit.cli audit ...``)."""
    parser = argparse.ArgumentParser(prog="nnverify")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
