"""Run a VNN-COMP-style verifier CLI on instances and score its answers (the soundness suite's runner).

Each instance runs ``CLI verify MODEL SPEC --timeout T --result-file F --json`` in a fresh
subprocess (its own process group, killed on overrun); the answer is read from the result file
(falling back to the JSON on stdout), and every ``sat`` witness is re-executed on onnxruntime
against the original ONNX file. ``benchmarks/vnncomp.py`` builds its benchmark runs on this module.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CLI = Path(sys.executable).with_name("nnverify")   # the console script installed beside this Python
WORDS = ("sat", "unsat", "timeout", "error", "unknown")
DECIDED = ("sat", "unsat")


# ----------------------------------------------------------------------------- data

@dataclass(frozen=True)
class RunnerConfig:
    """How instances are run: CLI, time limits, selection, parallelism."""

    cli: str = str(DEFAULT_CLI)
    timeout_scale: float = 1.0
    max_timeout: float | None = None
    grace: float = 5.0
    filter: str | None = None
    limit: int | None = None
    jobs: int = 1
    check_witness: bool = True   # re-run every sat witness on onnxruntime


@dataclass(frozen=True)
class Instance:
    """One row of instances.csv, with paths resolved against the benchmark folder."""

    index: int
    onnx: str           # as written in instances.csv (relative to the folder)
    vnnlib: str
    timeout: float      # seconds, as published
    folder: str

    @property
    def id(self) -> str:
        """A file-name-safe, unique id: row number + network and property stems."""
        stem = f"{file_stem(self.onnx)}__{file_stem(self.vnnlib)}"
        return f"{self.index:04d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)}"

    @property
    def key(self) -> tuple[str, str]:
        """The (onnx, vnnlib) pair used to join with truth.csv and other runs."""
        return (norm_path(self.onnx), norm_path(self.vnnlib))


@dataclass(frozen=True)
class Truth:
    """The published verdict of one instance and the reference tools' answers and times."""

    truth: str
    references: dict   # tool column name -> (word, seconds or None)


@dataclass(frozen=True)
class Outcome:
    """What our CLI answered on one instance (one row of results.csv)."""

    id: str
    onnx: str
    vnnlib: str
    timeout_s: float
    result: str          # VNN-COMP word
    time_s: float        # wall clock of the subprocess
    tool_time_s: float | None
    method: str
    reason: str
    truth: str
    check: str           # correct | WRONG | unconfirmed | "" (no sat/unsat answer)
    witness: str = ""    # valid | invalid | unchecked | "" (not sat, or check off)

    @property
    def solved(self) -> bool:
        """A sat/unsat answer that does not contradict the truth."""
        return self.result in DECIDED and self.check != "WRONG"


def file_stem(path: str) -> str:
    """File name without directories and without .onnx/.vnnlib(.gz) suffixes."""
    name = Path(path).name
    for suffix in (".gz", ".onnx", ".vnnlib"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def norm_path(path: str) -> str:
    """Normalise a relative path from a CSV so that './a/b' and 'a/b' join."""
    return os.path.normpath(path.strip())


def float_or_none(text) -> float | None:
    """Parse a float, or None for an empty / unparsable cell."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None



def effective_timeout(instance: Instance, config: RunnerConfig) -> float:
    """The published timeout, scaled and capped."""
    t = instance.timeout * config.timeout_scale
    return min(t, config.max_timeout) if config.max_timeout is not None else t



# ----------------------------------------------------------------------------- running

def _kill_group(pgid: int) -> None:
    """SIGKILL a process group we started; quiet if it is already gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_unreaped(pid: int, limit: float) -> bool:
    """Wait up to ``limit`` s for ``pid`` to exit, leaving it a zombie (so its group id stays ours)."""
    deadline = time.monotonic() + limit
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(0.05, max(deadline - time.monotonic(), 0.001)))
    return True


def _launch(cmd: list[str], log_stem: Path, limit: float) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group, stdout/stderr to files; (returncode or None if killed, wall).

    The whole group is killed when the leader exits or overruns, before the leader is reaped, so
    the group id cannot have been reused by an unrelated process.
    """
    start = time.monotonic()
    with open(f"{log_stem}.out", "wb") as out, open(f"{log_stem}.err", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        finished = _wait_unreaped(proc.pid, limit)
        wall = time.monotonic() - start
        _kill_group(proc.pid)   # the overrunning CLI, or stray children of a finished one
        rc = proc.wait()
    return (rc if finished else None), wall


def parse_json_stdout(text: str) -> dict:
    """The CLI's JSON object from stdout (whole text, else the last line that parses)."""
    candidates = [text] + [line for line in reversed(text.splitlines()) if line.lstrip().startswith("{")]
    if "{" in text:
        candidates.append(text[text.index("{"): text.rindex("}") + 1])
    for chunk in candidates:
        try:
            value = json.loads(chunk)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    return {}


def read_result_file(path: Path) -> tuple[str | None, str]:
    """(first word of a VNN-COMP result file or None, full text)."""
    if not path.is_file():
        return None, ""
    text = path.read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    word = lines[0].lower() if lines else None
    return (word if word in WORDS else None), text


def _tail(path: Path, n: int = 300) -> str:
    """Last ``n`` characters of a log file, on one line."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    return " ".join(text[-n:].split())


def _interpret(rc, wall, limit, result_path: Path, log_stem: Path) -> tuple[str, float | None, str, str]:
    """(word, tool time, method, reason) from the process outcome, result file and JSON stdout."""
    info = parse_json_stdout(Path(f"{log_stem}.out").read_text(errors="replace"))
    method = str(info.get("method") or "")
    tool_time = float_or_none(info.get("time"))
    word, text = read_result_file(result_path)
    if rc is None:
        said = f"; result file said {word} before the kill" if word else ""
        return "timeout", tool_time, method, f"killed after {wall:.1f} s (limit {limit:g} s + grace){said}"
    notes = []
    json_word = str(info.get("result") or "").lower()
    if word is None and json_word in WORDS:
        word = json_word
        notes.append("no result file; word from --json output")
    if word is None:
        return "error", tool_time, method, f"exit {rc}, no result: {_tail(Path(f'{log_stem}.err'))}"
    if json_word in WORDS and json_word != word:
        notes.append(f"MISMATCH: result file says {word}, JSON says {json_word}")
    if rc != 0:
        notes.append(f"exit code {rc}")
    if wall > limit:
        notes.append(f"answered {wall - limit:.1f} s past the limit")
    reason = "; ".join([str(info.get("reason") or "")] + notes).strip("; ")
    return word, tool_time, method, reason


# ----------------------------------------------------------------------------- witness check

WITNESS_PAIR = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")
ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16"}


def parse_witness(text: str) -> tuple[list[float], list[float]]:
    """(x, y) from a sat result block's ``(X_i v)`` / ``(Y_j v)`` pairs; ValueError if malformed."""
    found: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, index, value in WITNESS_PAIR.findall(text):
        found[kind][int(index)] = float(value)
    for kind, got in found.items():
        if sorted(got) != list(range(len(got))):
            raise ValueError(f"{kind} variables are not numbered 0..{len(got) - 1}")
    if not found["X"]:
        raise ValueError("no (X_i value) pairs")
    return [found["X"][i] for i in range(len(found["X"]))], [found["Y"][j] for j in range(len(found["Y"]))]


def run_onnx(onnx_path: Path, x: list[float]):
    """(point fed, output) of the ONNX model on flat input ``x``, both flat float64 (onnxruntime, CPU).

    The point fed is ``x`` cast to the model's input dtype: that is where the network was evaluated.
    """
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    dtype = ORT_DTYPES.get(inp.type, "float32")
    fed = np.asarray(x, dtype=np.float64).astype(dtype).reshape(shape)
    y = session.run(None, {inp.name: fed})[0]
    return fed.astype(np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)


def check_witness(onnx_path: Path, vnnlib_path: Path, text: str) -> tuple[str, str]:
    """('valid' | 'invalid' | 'unchecked', detail) for a sat answer, re-executed on onnxruntime.

    Valid means: x lies in some region's box exactly, and the onnxruntime output on x satisfies
    every row of one of that region's unsafe polytopes. The spec comes from nnverify's VNN-LIB
    parser (shared with the tool); the network is run on onnxruntime (independent of it).
    Where x is in the box but its cast to the model's input dtype is not (a box edge, or a
    fixed input, that float32 cannot represent), the network's value at x is the value at the
    cast, as nnverify's default ``exact_inputs=False`` defines it: valid, with the detail
    starting "input rounded".
    """
    import numpy as np

    try:
        x, y_claimed = parse_witness(text)
    except ValueError as exc:
        return "invalid", f"witness: {exc}"
    try:
        from verifier.spec import load_vnnlib

        spec = load_vnnlib(vnnlib_path)
    except Exception as exc:   # noqa: BLE001 -- a checker failure means "could not check", never "wrong"
        return "unchecked", f"spec not loaded: {type(exc).__name__}: {exc}"
    if len(x) != spec.n_inputs:
        return "invalid", f"witness has {len(x)} inputs, the spec declares {spec.n_inputs}"
    try:
        fed, y = run_onnx(onnx_path, x)
    except Exception as exc:   # noqa: BLE001 -- same: unchecked, reported as such
        return "unchecked", f"onnxruntime failed: {type(exc).__name__}: {exc}"
    if y.size != spec.n_outputs:
        return "unchecked", f"model gives {y.size} outputs, the spec declares {spec.n_outputs}"
    xv = np.asarray(x, dtype=np.float64)
    boxes = [r for r in spec.regions if r.contains(xv)]
    if not boxes:
        gap = min(float(np.max(np.maximum(r.lower - xv, xv - r.upper))) for r in spec.regions)
        return "invalid", f"x lies outside every input box (by {gap:.3g})"
    rounded = "" if any(r.contains(fed) for r in boxes) else "input rounded (x is in the box, its float cast is not); "
    margins = [float(np.max(p.A @ y - p.b)) for r in boxes for p in r.unsafe]
    drift = float(np.max(np.abs(np.asarray(y_claimed) - y))) if len(y_claimed) == y.size else float("nan")
    if min(margins) > 0:
        return "invalid", f"onnxruntime output violates no unsafe polytope (best margin {min(margins):.3g})"
    return "valid", f"{rounded}onnxruntime confirms; |y_claimed - y_ort| max {drift:.3g}"


def judge(word: str, truth: str) -> str:
    """correct / WRONG / unconfirmed (truth unknown) / '' (no sat-unsat answer)."""
    if word not in DECIDED:
        return ""
    if truth in DECIDED:
        return "correct" if word == truth else "WRONG"
    return "unconfirmed"


def run_instance(instance: Instance, truth: str, config: RunnerConfig, out_dir: Path) -> Outcome:
    """Run the CLI on one instance in a fresh process group and score its answer."""
    limit = effective_timeout(instance, config)
    result_path = out_dir / "results" / f"{instance.id}.txt"
    log_stem = out_dir / "logs" / instance.id
    folder = Path(instance.folder)
    cmd = [config.cli, "verify", str(folder / instance.onnx), str(folder / instance.vnnlib),
           "--timeout", f"{limit:g}", "--result-file", str(result_path), "--json"]
    result_path.unlink(missing_ok=True)
    try:
        rc, wall = _launch(cmd, log_stem, limit + config.grace)
        word, tool_time, method, reason = _interpret(rc, wall, limit, result_path, log_stem)
    except OSError as exc:   # CLI missing / not executable
        word, tool_time, method, reason, wall = "error", None, "", f"cannot start {config.cli}: {exc}", 0.0
    check, witness = judge(word, truth), ""
    if word == "timeout":   # a killed run may still have written a wrong word: never hide it
        late_word, _ = read_result_file(result_path)
        check = "WRONG" if judge(late_word or "", truth) == "WRONG" else ""
    if word == "sat" and config.check_witness:
        witness, detail = check_witness(folder / instance.onnx, folder / instance.vnnlib,
                                        read_result_file(result_path)[1])
        check = "WRONG" if witness == "invalid" else check
        label = "INVALID" if witness == "invalid" else witness
        reason = "; ".join(x for x in (reason, f"{label} witness: {detail}") if x)
    return Outcome(instance.id, instance.onnx, instance.vnnlib, limit, word, round(wall, 3),
                   tool_time, method, reason, truth, check, witness)


class Progress:
    """A progress bar on stderr: tqdm when installed, else one line per instance."""

    def __init__(self, total: int, label: str):
        """Open the bar."""
        self.total, self.label, self.done, self.counts = total, label, 0, {}
        self.lock = threading.Lock()
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, desc=label, file=sys.stderr, unit="inst", dynamic_ncols=True)

    def update(self, outcome: Outcome) -> None:
        """Advance by one finished instance (thread-safe)."""
        with self.lock:
            self._update(outcome)

    def _update(self, outcome: Outcome) -> None:
        """Advance by one finished instance."""
        self.done += 1
        key = "WRONG" if outcome.check == "WRONG" else outcome.result
        self.counts[key] = self.counts.get(key, 0) + 1
        if outcome.check == "WRONG":
            shout_wrong(outcome)
        if self.bar is not None:
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)
        else:
            print(f"[{self.label} {self.done}/{self.total}] {outcome.id}: {outcome.result} "
                  f"{outcome.time_s:.1f}s {outcome.check}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


def shout_wrong(outcome: Outcome) -> None:
    """Print a WRONG answer so nobody can miss it."""
    why = "invalid witness" if outcome.witness == "invalid" else f"truth is {outcome.truth}"
    print(f"\n{'!' * 72}\n!!! WRONG ANSWER: {outcome.id} answered {outcome.result}, {why}"
          f"\n!!!   {outcome.onnx} {outcome.vnnlib} (method {outcome.method or '?'})\n{'!' * 72}",
          file=sys.stderr, flush=True)


def run_all(instances: list[Instance], truth: dict, config: RunnerConfig, out_dir: Path, label: str) -> list[Outcome]:
    """Run every instance (``config.jobs`` at a time), in instance order."""
    for sub in ("results", "logs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    progress = Progress(len(instances), label)

    def one(inst: Instance) -> Outcome:
        """Run and report one instance."""
        outcome = run_instance(inst, truth.get(inst.key, Truth("unknown", {})).truth, config, out_dir)
        progress.update(outcome)
        return outcome

    try:
        if config.jobs <= 1:
            return [one(i) for i in instances]
        with ThreadPoolExecutor(max_workers=config.jobs) as pool:
            return list(pool.map(one, instances))
    finally:
        progress.close()
