"""Run (or audit) a verifier on a generated soundness suite and report SoundnessBench-style metrics.

Usage (from the repository root)::

    python -m verifier.soundness.run SUITE_DIR [--cli .venv/bin/nnverify] [--timeout 5] [--jobs 1] [--out DIR]
    python -m verifier.soundness.run SUITE_DIR --results OTHER_TOOL_RESULTS_DIR [--out DIR]

Without ``--results`` every instance of ``SUITE_DIR/truth.csv`` runs through
``CLI verify MODEL SPEC --timeout T --result-file F --json`` in its own process (the VNN-COMP
runner ``verifier/soundness/runner.py`` does the launching). With ``--results DIR`` nothing is run: the
VNN-COMP result files another tool wrote are audited. For the instance ``onnx/NAME.onnx`` +
``vnnlib/NAME.vnnlib`` the first of these files that exists is read:

    DIR/NAME__NAME.txt        (<onnx stem>__<vnnlib stem>.txt)
    DIR/NNNN_NAME__NAME.txt   (the runner's naming: row number of instances.csv, 4 digits)
    DIR/NAME.txt, DIR/NAME.counterexample   (<vnnlib stem>: stems are unique in a generated suite)

A missing file counts as ``unknown``. Verdicts (first line ``sat|unsat|timeout|error|unknown``):

* **unsound**: ``unsat`` where the truth is ``sat`` (every unverifiable instance, clean sat ones);
* **wrong**: ``sat`` where the truth is ``unsat`` (clean unsat instances);
* **invalid witness**: ``sat`` whose ``(X_i v)`` witness does not re-validate on onnxruntime
  against the original ONNX file (inside the box exactly, violating the property).

Output: ``summary.json`` and ``summary.md`` in ``--out`` (default ``SUITE/../<suite>-results``),
with per-kind verified / falsified / unknown ratios. Exit code 1 on any unsound, wrong or
invalid-witness answer, 0 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from verifier.soundness import runner
from verifier.soundness.generate import KINDS, Row, read_rows

RESULT_PATTERNS = ("{onnx}__{vnnlib}.txt", "{id}.txt", "{vnnlib}.txt", "{vnnlib}.counterexample")


@dataclass(frozen=True)
class Judged:
    """One instance's answer and how it is scored."""

    onnx: str
    vnnlib: str
    kind: str
    truth: str
    answer: str        # sat | unsat | timeout | error | unknown | missing
    verdict: str       # unsound | wrong | invalid-witness | verified | falsified | unknown
    witness: str = ""  # valid | invalid | unchecked | "" (no sat answer)
    detail: str = ""
    time_s: float | None = None


def judge(row: Row, answer: str, witness: str) -> str:
    """Score one answer against the truth (unsound > wrong > invalid witness > the plain outcome)."""
    if answer == "unsat":
        return "unsound" if row.truth == "sat" else "verified"
    if answer == "sat":
        if row.truth == "unsat":
            return "wrong"
        return "invalid-witness" if witness == "invalid" else "falsified"
    return "unknown"


def _instances(folder: Path, rows: list[Row]) -> list:
    """Runner instances for the rows (row order = instances.csv order)."""
    return [runner.Instance(i, r.onnx, r.vnnlib, r.timeout, str(folder)) for i, r in enumerate(rows)]


def _stem(path: str) -> str:
    """File name without folders and without its last suffix (.onnx / .vnnlib)."""
    return Path(path).name.rsplit(".", 1)[0]


def result_file(results: Path, inst) -> Path | None:
    """The first existing result file of an instance under ``results`` (see module docstring)."""
    names = {"onnx": _stem(inst.onnx), "vnnlib": _stem(inst.vnnlib), "id": inst.id}
    for pattern in RESULT_PATTERNS:
        path = results / pattern.format(**names)
        if path.is_file():
            return path
    return None


def audit_one(folder: Path, row: Row, inst, results: Path) -> Judged:
    """Score another tool's result file for one instance."""
    path = result_file(results, inst)
    if path is None:
        return Judged(row.onnx, row.vnnlib, row.kind, row.truth, "missing", "unknown", "", "no result file")
    word, text = runner.read_result_file(path)
    word = word or "error"
    witness, detail = "", path.name
    if word == "sat":
        witness, detail = runner.check_witness(folder / row.onnx, folder / row.vnnlib, text)
    return Judged(row.onnx, row.vnnlib, row.kind, row.truth, word, judge(row, word, witness), witness, detail)


def run_cli(folder: Path, rows: list[Row], config, out: Path) -> list[Judged]:
    """Run the CLI on every instance (``runner.run_all``) and score each answer."""
    insts = _instances(folder, rows)
    outcomes = runner.run_all(insts, {i.key: runner.Truth(r.truth, {}) for i, r in zip(insts, rows)},
                               config, out, "soundness")
    judged = []
    for row, inst, o in zip(rows, insts, outcomes):
        answer = o.result
        if o.check == "WRONG" and answer not in runner.DECIDED:  # killed after writing a wrong word
            answer = runner.read_result_file(out / "results" / f"{inst.id}.txt")[0] or answer
        judged.append(Judged(row.onnx, row.vnnlib, row.kind, row.truth, answer, judge(row, answer, o.witness),
                             o.witness, o.reason, o.time_s))
    return judged


BAD = ("unsound", "wrong", "invalid-witness")


def summarize(judged: list[Judged]) -> dict:
    """Per-kind counts and ratios, plus every bad answer."""
    per_kind = {}
    for kind in KINDS:
        mine = [j for j in judged if j.kind == kind]
        counts = {v: sum(j.verdict == v for j in mine) for v in ("verified", "falsified", "unknown") + BAD}
        ratios = {v: (round(c / len(mine), 4) if mine else None) for v, c in counts.items()}
        truths = {t: sum(j.truth == t for j in mine) for t in ("sat", "unsat")}
        per_kind[kind] = {"instances": len(mine), "truth": truths, "counts": counts, "ratios": ratios}
    bad = [asdict(j) for j in judged if j.verdict in BAD]
    return {"instances": len(judged), "per_kind": per_kind, "bad": bad,
            "sound": not any(j.verdict == "unsound" for j in judged), "ok": not bad,
            "instances_detail": [asdict(j) for j in judged]}


def markdown(summary: dict, title: str) -> str:
    """The summary as a markdown table (one row per kind) plus the list of bad answers."""
    lines = [f"# Soundness suite: {title}", "",
             "| kind | instances | sat / unsat | verified | falsified | unknown | UNSOUND | WRONG | invalid witness |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, s in summary["per_kind"].items():
        c, r = s["counts"], s["ratios"]

        def cell(v):
            """'count (ratio)' of one verdict."""
            return f"{c[v]} ({r[v]:.0%})" if r[v] is not None else "0"

        lines.append(f"| {kind} | {s['instances']} | {s['truth']['sat']} / {s['truth']['unsat']} | " +
                     " | ".join(cell(v) for v in ("verified", "falsified", "unknown") + BAD) + " |")
    lines.append("")
    if summary["bad"]:
        lines.append("## Bad answers")
        lines += [f"* **{b['verdict'].upper()}**: `{b['onnx']}` `{b['vnnlib']}` answered {b['answer']} "
                  f"(truth {b['truth']}) {b['detail']}" for b in summary["bad"]]
    else:
        lines.append("No unsound, wrong or invalid-witness answers.")
    return "\n".join(lines) + "\n"


def run(folder, cli: str = str(runner.DEFAULT_CLI), timeout: float | None = None, results=None,
        out=None, jobs: int = 1, grace: float = 5.0) -> dict:
    """Run the CLI (or audit ``results``) on a suite; write summary.json/.md into ``out``; return the summary.

    ``timeout`` replaces every instance's timeout from truth.csv (None: as written).
    """
    folder = Path(folder)
    rows = read_rows(folder)
    if timeout is not None:
        rows = [replace(r, timeout=float(timeout)) for r in rows]
    out = Path(out) if out is not None else folder.parent / f"{folder.name}-results"
    out.mkdir(parents=True, exist_ok=True)
    if results is not None:
        insts = _instances(folder, rows)
        judged = [audit_one(folder, r, i, Path(results)) for r, i in zip(rows, insts)]
        title = f"audit of {results}"
    else:
        config = runner.RunnerConfig(cli=str(cli), grace=grace, jobs=jobs)
        judged = run_cli(folder, rows, config, out)
        title = f"{cli} (timeout {timeout if timeout is not None else 'as written'})"
    summary = summarize(judged)
    summary["title"] = title
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(summary, title))
    return summary


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``nnverify soundness run``."""
    ap = argparse.ArgumentParser(prog="nnverify soundness run", description=__doc__.splitlines()[0])
    ap.add_argument("suite", help="a folder written by `nnverify soundness generate`")
    ap.add_argument("--cli", default=str(runner.DEFAULT_CLI), help="the nnverify executable to run")
    ap.add_argument("--timeout", type=float, help="per-instance timeout in seconds (default: as in truth.csv)")
    ap.add_argument("--results", help="audit another tool's VNN-COMP result files in this folder (runs nothing)")
    ap.add_argument("--out", help="where summary.json / summary.md (and logs) go")
    ap.add_argument("--jobs", type=int, default=1, help="instances run in parallel")
    ap.add_argument("--grace", type=float, default=5.0, help="seconds past the timeout before a run is killed")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run or audit; print the markdown summary. Exit 1 on any unsound, wrong or invalid-witness answer."""
    args = build_parser().parse_args(argv)
    summary = run(args.suite, args.cli, args.timeout, args.results, args.out, args.jobs, args.grace)
    print(markdown(summary, summary["title"]), end="")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
