"""Generate the soundness suite: planted-counterexample ("unverifiable") and MILP-decided ("clean") instances.

Usage (from the repository root)::

    python -m verifier.soundness.generate OUT_DIR [--tier ci|nightly] [--seed 0]

Writes, VNN-COMP style, ``OUT_DIR/onnx/*.onnx``, ``OUT_DIR/vnnlib/*.vnnlib``, ``instances.csv``
(onnx,vnnlib,timeout; no header), ``truth.csv`` (onnx,vnnlib,timeout,truth,kind,... with a header),
``witnesses/<name>.witness.json`` for every sat instance, and ``manifest.json``.

* **unverifiable** (truth ``sat``): a random network g that the strong attack cannot break on the
  box, plus a narrow ReLU bump (see ``networks``) that lifts a wrong logit only within a tiny L1
  ball around a hidden point x* inside the box. The bump's height exceeds g's margin at x* by a
  small ``overshoot``, so the property is violated at x* and nowhere the attack looks. Kept only
  when the witness validates on onnxruntime and the attack (PGD, many restarts, plus uniform
  sampling) finds nothing; otherwise a smaller box / another x* is tried.
* **clean**: small ReLU MLPs decided exactly by MILP, in pairs: the largest box radius on a
  geometric grid where MILP proves the property (truth ``unsat``), and the next one, where MILP
  finds a violation that onnxruntime confirms (truth ``sat``). Undecided instances are dropped.

Everything is deterministic given ``seed``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from verifier.soundness.networks import Bump, CnnSpec, MlpSpec, cnn_model, mlp_model

TRUTH_COLUMNS = ("onnx", "vnnlib", "timeout", "truth", "kind", "arch", "activation", "n_inputs", "detail", "witness")
KINDS = ("unverifiable", "clean")


@dataclass(frozen=True)
class AttackBudget:
    """The hiddenness check: verifier PGD (restarts x steps) plus uniform samples."""

    restarts: int = 100
    steps: int = 200
    samples: int = 20000


@dataclass(frozen=True)
class Planted:
    """Recipe of one unverifiable instance."""

    name: str
    net: MlpSpec | CnnSpec
    eps: float              # box half-width (before shrinking on a failed check)
    radius: float = 1e-3    # L1 radius of the bump, as a fraction of eps
    overshoot: float = 0.05  # bump height = margin(x*) * (1 + overshoot) + 1e-3
    disjunctive: bool = False  # unsafe: any wrong class (True) or one wrong class
    seed: int = 0


@dataclass(frozen=True)
class Clean:
    """Recipe of one MILP-decided pair (sat + unsat) on one network."""

    name: str
    net: MlpSpec
    disjunctive: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Row:
    """One generated instance: a row of truth.csv."""

    onnx: str
    vnnlib: str
    timeout: float
    truth: str
    kind: str
    arch: str
    activation: str
    n_inputs: int
    detail: str
    witness: str = ""


# ----------------------------------------------------------------------------- recipes

def ci_recipes(seed: int) -> tuple[list[Planted], list[Clean]]:
    """The CI tier: 12 planted instances covering every variation, 6 clean pairs."""
    s = seed * 1000
    planted = [
        Planted("p00_mlp_relu_2", MlpSpec(2, (16, 16), 3), 0.1, 1e-4, seed=s + 0),
        Planted("p01_mlp_relu_5", MlpSpec(5, (20, 20, 20), 4), 0.05, 1e-3, disjunctive=True, seed=s + 1),
        Planted("p02_mlp_relu_10", MlpSpec(10, (32, 32), 3), 0.05, 3e-3, seed=s + 2),
        Planted("p03_mlp_sigmoid_4", MlpSpec(4, (16, 16), 3, "sigmoid"), 0.1, 1e-3, seed=s + 3),
        Planted("p04_mlp_tanh_8", MlpSpec(8, (24,), 3, "tanh"), 0.05, 3e-3, disjunctive=True, seed=s + 4),
        Planted("p05_mlp_relu_bn_6", MlpSpec(6, (16, 16), 3, batchnorm=True), 0.05, 1e-3, seed=s + 5),
        Planted("p06_mlp_relu_100", MlpSpec(100, (32, 32), 5), 0.02, 1e-2, disjunctive=True, seed=s + 6),
        Planted("p07_mlp_relu_3", MlpSpec(3, (12,), 3), 0.1, 3e-4, seed=s + 7),
        Planted("p08_cnn_relu", CnnSpec(), 0.005, 1e-2, seed=s + 8),
        Planted("p09_cnn_relu_maxpool", CnnSpec(pool="max"), 0.01, 1e-2, disjunctive=True, seed=s + 9),
        Planted("p10_cnn_relu_avgpool_bn", CnnSpec(pool="avg", batchnorm=True), 0.02, 1e-2, seed=s + 10),
        Planted("p11_cnn_tanh_maxpool", CnnSpec(activation="tanh", pool="max"), 0.02, 1e-2, seed=s + 11),
    ]
    clean = [Clean(f"c{i:02d}_mlp_relu_{n}", MlpSpec(n, h, 3), i % 2 == 0, s + 500 + i)
             for i, (n, h) in enumerate([(2, (8, 8)), (3, (10,)), (4, (12, 8)), (5, (8, 8, 8)), (3, (16,)), (6, (10, 10))])]
    return planted, clean


def nightly_recipes(seed: int, n_planted: int = 96, n_clean: int = 30) -> tuple[list[Planted], list[Clean]]:
    """The nightly tier: the CI recipes plus many random variations."""
    rng = np.random.default_rng(seed + 7919)
    planted, clean = ci_recipes(seed)
    s = seed * 1000 + 100
    for i in range(n_planted - len(planted)):
        act = str(rng.choice(["relu", "relu", "sigmoid", "tanh"]))
        if rng.random() < 0.3:
            net = CnnSpec(channels=int(rng.integers(2, 6)), hidden=int(rng.integers(8, 32)), activation=act,
                          pool=[None, "max", "avg"][int(rng.integers(3))], batchnorm=bool(rng.random() < 0.3))
            eps, radius = float(rng.choice([0.01, 0.02, 0.03])), float(rng.choice([3e-3, 1e-2, 3e-2]))
        else:
            n = int(rng.choice([2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 100]))
            hidden = tuple(int(rng.integers(8, 48)) for _ in range(int(rng.integers(1, 4))))
            net = MlpSpec(n, hidden, int(rng.integers(2, 6)), act, bool(rng.random() < 0.25))
            eps = float(rng.choice([0.02, 0.05, 0.1]))
            radius = float(10.0 ** rng.uniform(-4, -2)) if n <= 4 else float(rng.choice([1e-3, 3e-3, 1e-2]))
        planted.append(Planted(f"p{len(planted):02d}_{'cnn' if isinstance(net, CnnSpec) else 'mlp'}_{act}",
                               net, eps, radius, float(rng.choice([0.02, 0.05, 0.2])), bool(rng.random() < 0.5), s + i))
    for i in range(n_clean - len(clean)):
        n = int(rng.integers(2, 8))
        hidden = tuple(int(rng.integers(6, 16)) for _ in range(int(rng.integers(1, 4))))
        clean.append(Clean(f"c{len(clean):02d}_mlp_relu_{n}", MlpSpec(n, hidden, int(rng.integers(2, 5))),
                           bool(rng.random() < 0.5), s + 500 + i))
    return planted, clean


TIERS = {"ci": ci_recipes, "nightly": nightly_recipes}
TIMEOUTS = {"ci": 5.0, "nightly": 30.0}


# ----------------------------------------------------------------------------- specs

def _f32(v) -> np.ndarray:
    """Values rounded to float32, kept as float64 (exact in both)."""
    return np.asarray(v, dtype=np.float32).astype(np.float64)


def vnnlib_text(lower: np.ndarray, upper: np.ndarray, n_outputs: int, target: int, wrongs: list[int]) -> str:
    """VNN-LIB for: x in [lower, upper] and Y_target <= Y_w for some w in ``wrongs`` (the unsafe set)."""
    lines = [f"; soundness suite: robustness of class {target} against {wrongs}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(lower.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    for i, (lo, hi) in enumerate(zip(lower, upper)):
        lines.append(f"(assert (<= X_{i} {float(hi)!r}))")
        lines.append(f"(assert (>= X_{i} {float(lo)!r}))")
    if len(wrongs) == 1:
        lines.append(f"(assert (<= Y_{target} Y_{wrongs[0]}))")
    else:
        lines.append("(assert (or " + " ".join(f"(and (<= Y_{target} Y_{w}))" for w in wrongs) + "))")
    return "\n".join(lines) + "\n"


def box(center: np.ndarray, eps: float, image: bool) -> tuple[np.ndarray, np.ndarray]:
    """float32-exact box [center - eps, center + eps], clipped to [0, 1] for images."""
    lo, hi = center - eps, center + eps
    if image:
        lo, hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
    return _f32(lo), _f32(hi)


def _model(net, seed: int, bump: Bump | None) -> onnx.ModelProto:
    """Build the ONNX model of a recipe's network."""
    return cnn_model(net, seed, bump) if isinstance(net, CnnSpec) else mlp_model(net, seed, bump)


def _outputs(model: onnx.ModelProto, xs: np.ndarray) -> np.ndarray:
    """onnxruntime outputs [B, n_outputs] (float64) for flat inputs [B, n]."""
    from verifier.model.reference import OnnxRunner

    return OnnxRunner(model.SerializeToString()).run(xs)


def _save(model: onnx.ModelProto, out: Path, name: str, text: str) -> tuple[str, str]:
    """Write ``onnx/<name>.onnx`` and ``vnnlib/<name>.vnnlib``; return both relative paths."""
    rel_onnx, rel_spec = f"onnx/{name}.onnx", f"vnnlib/{name}.vnnlib"
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    (out / "vnnlib").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / rel_onnx))
    (out / rel_spec).write_text(text)
    return rel_onnx, rel_spec


def _write_witness(out: Path, name: str, data: dict) -> str:
    """Write ``witnesses/<name>.witness.json``; return its relative path."""
    rel = f"witnesses/{name}.witness.json"
    (out / "witnesses").mkdir(parents=True, exist_ok=True)
    (out / rel).write_text(json.dumps(data, indent=1) + "\n")
    return rel


# ----------------------------------------------------------------------------- checks

def attack_finds(onnx_path: Path, vnnlib_path: Path, budget: AttackBudget, seed: int) -> bool:
    """True when the strong attack or uniform sampling gets (near) a violation of the property.

    PGD candidates count only when onnxruntime confirms them; uniform samples count already at
    a float32 margin <= 1e-6 (conservative: such an instance would not be hidden).
    """
    import torch

    from verifier.config import AttackConfig
    from verifier.model.onnx_loader import load_onnx
    from verifier.model.reference import OnnxRunner
    from verifier.search.attack import attack
    from verifier.spec.vnnlib import load_vnnlib

    graph, spec = load_onnx(str(onnx_path)).graph, load_vnnlib(str(vnnlib_path))
    config = AttackConfig(restarts=budget.restarts, steps=budget.steps, seed=seed)
    if attack(graph, spec, OnnxRunner(str(onnx_path)), config) is not None:
        return True
    gen = torch.Generator().manual_seed(seed)
    for region in spec.regions:
        lo, hi = (torch.tensor(v, dtype=torch.float32) for v in (region.lower, region.upper))
        x = lo + (hi - lo) * torch.rand((budget.samples, lo.numel()), generator=gen)
        with torch.no_grad():
            y = graph.forward(x.reshape((-1,) + tuple(graph.input_shape))).reshape(x.shape[0], -1).double()
        for poly in region.unsafe:
            A, b = (torch.tensor(v, dtype=torch.float64) for v in (poly.A, poly.b))
            if float((y @ A.T - b).max(dim=1).values.min()) <= 1e-6:
                return True
    return False


def planted_witness(model: onnx.ModelProto, x: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    target: int, wrong: int) -> dict | None:
    """The witness record if x lies in the box exactly and onnxruntime gives Y_target < Y_wrong."""
    if not (np.array_equal(x, _f32(x)) and np.all(x >= lo) and np.all(x <= hi)):
        return None
    y = _outputs(model, x[None])[0]
    margin = float(y[target] - y[wrong])
    if not margin < 0:
        return None
    return {"x": [float(v) for v in x], "y": [float(v) for v in y], "target": target, "wrong": wrong,
            "margin": margin, "checked_with": "onnxruntime"}


# ----------------------------------------------------------------------------- planted instances

def _pick(rng: np.random.Generator, y: np.ndarray, disjunctive: bool) -> tuple[int, int, list[int]]:
    """(target = argmax, planted wrong class = runner-up, unsafe classes)."""
    order = [int(j) for j in np.argsort(-y, kind="stable")]
    target, wrong = order[0], order[1]
    wrongs = sorted(order[1:]) if disjunctive else [wrong]
    return target, wrong, wrongs


def plant(r: Planted, out: Path, timeout: float, budget: AttackBudget, attempts: int = 4) -> tuple[Row | None, list[str]]:
    """Try up to ``attempts`` boxes (eps halved each time); the instance row, and why attempts failed."""
    rng = np.random.default_rng(r.seed)
    image = isinstance(r.net, CnnSpec)
    n, base = r.net.n_inputs, _model(r.net, r.seed, None)
    notes = []
    for attempt in range(attempts):
        eps = r.eps / 2 ** attempt
        lo, hi = box(rng.uniform(0.0, 1.0, n) if image else rng.uniform(-1.0, 1.0, n), eps, image)
        target, wrong, wrongs = _pick(rng, _outputs(base, ((lo + hi) / 2)[None])[0], r.disjunctive)
        x_star = np.clip(_f32(lo + (hi - lo) * rng.uniform(0.15, 0.85, n)), lo, hi)
        y_star = _outputs(base, x_star[None])[0]
        m_star = float(y_star[target] - y_star[wrong])
        if m_star <= 0:
            notes.append(f"eps {eps:g}: g already misclassifies x*")
            continue
        bump = Bump(x_star, 1.0 / (r.radius * eps), m_star * (1 + r.overshoot) + 1e-3, wrong)
        model = _model(r.net, r.seed, bump)
        rel_onnx, rel_spec = _save(model, out, r.name, vnnlib_text(lo, hi, r.net.n_outputs, target, wrongs))
        witness = planted_witness(model, x_star, lo, hi, target, wrong)
        if witness is None:
            notes.append(f"eps {eps:g}: planted witness does not validate")
        elif attack_finds(out / rel_onnx, out / rel_spec, budget, r.seed):
            notes.append(f"eps {eps:g}: attack finds a violation")
        else:
            witness.update(name=r.name, onnx=rel_onnx, vnnlib=rel_spec, eps=eps, l1_radius=r.radius * eps,
                           bump_slope=bump.slope, bump_height=bump.height, margin_g=m_star)
            rel_w = _write_witness(out, r.name, witness)
            arch = "cnn" if image else "mlp"
            detail = (f"eps={eps:g};l1_radius={r.radius * eps:.3g};overshoot={r.overshoot:g};"
                      f"disjunctive={r.disjunctive};{_describe(r.net)}")
            return Row(rel_onnx, rel_spec, timeout, "sat", "unverifiable", arch, r.net.activation, n, detail, rel_w), notes
        for rel in (rel_onnx, rel_spec):
            (out / rel).unlink(missing_ok=True)
    return None, notes


def _describe(net) -> str:
    """Short architecture string for truth.csv."""
    if isinstance(net, CnnSpec):
        return f"cnn{net.image}x{net.channels}ch,pool={net.pool},bn={net.batchnorm},hidden={net.hidden}"
    return f"mlp{net.hidden},bn={net.batchnorm}"


# ----------------------------------------------------------------------------- clean instances

EPS_GRID = tuple(0.01 * 1.5 ** j for j in range(16))


def milp_decide(graph, spec, timeout: float) -> tuple[str, np.ndarray | None]:
    """('holds' | 'violated' | 'unknown', witness x) over every (region, polytope) by exact MILP."""
    from verifier.exact.milp import verify_milp

    for region in spec.regions:
        for poly in region.unsafe:
            res = verify_milp(graph, region, poly, timeout=timeout)
            if res.status != "holds":
                return res.status, (None if res.x is None else np.asarray(res.x, dtype=np.float64))
    return "holds", None


def clean_pair(r: Clean, out: Path, timeout: float, milp_timeout: float = 20.0) -> tuple[list[Row], list[str]]:
    """The unsat instance at the largest proved radius and the sat one at the next radius."""
    from verifier.counterexample import validate
    from verifier.model.onnx_loader import load_onnx_bytes
    from verifier.model.reference import OnnxRunner
    from verifier.spec.vnnlib import parse_vnnlib

    rng = np.random.default_rng(r.seed)
    model = _model(r.net, r.seed, None)
    graph, runner = load_onnx_bytes(model.SerializeToString()).graph, OnnxRunner(model.SerializeToString())
    center = rng.uniform(-1.0, 1.0, r.net.n_inputs)
    target, _, wrongs = _pick(rng, _outputs(model, _f32(center)[None])[0], r.disjunctive)
    proved = None
    for eps in EPS_GRID:
        lo, hi = box(center, eps, False)
        text = vnnlib_text(lo, hi, r.net.n_outputs, target, wrongs)
        spec = parse_vnnlib(text)
        status, x = milp_decide(graph, spec, milp_timeout)
        if status == "holds":
            proved = (eps, text)
            continue
        if status == "unknown" or proved is None:
            return [], [f"eps {eps:g}: MILP {status}{'' if proved else ' at the smallest radius'}"]
        cex = validate(runner, spec, x, source="milp") if x is not None else None
        if cex is None:
            return [], [f"eps {eps:g}: MILP witness not confirmed by onnxruntime"]
        return _clean_rows(r, out, model, timeout, proved, (eps, text), cex, target), []
    return [], ["MILP proves every radius on the grid"]


def _clean_rows(r: Clean, out: Path, model, timeout: float, unsat: tuple, sat: tuple, cex, target: int) -> list[Row]:
    """Write the pair's files and return their rows (unsat first)."""
    rows = []
    for truth, (eps, text) in (("unsat", unsat), ("sat", sat)):
        name = f"{r.name}_{truth}"
        rel_onnx, rel_spec = _save(model, out, name, text)
        rel_w = ""
        if truth == "sat":
            rel_w = _write_witness(out, name, {
                "name": name, "onnx": rel_onnx, "vnnlib": rel_spec, "x": [float(v) for v in cex.x],
                "y": [float(v) for v in cex.y], "target": target, "margin": float(cex.margin),
                "eps": eps, "checked_with": "onnxruntime", "source": "milp"})
        detail = f"eps={eps:g};disjunctive={r.disjunctive};{_describe(r.net)};truth=milp"
        rows.append(Row(rel_onnx, rel_spec, timeout, truth, "clean", "mlp", "relu", r.net.n_inputs, detail, rel_w))
    return rows


# ----------------------------------------------------------------------------- the suite

def write_tables(out: Path, rows: list[Row]) -> None:
    """instances.csv (VNN-COMP: onnx,vnnlib,timeout, no header) and truth.csv (with a header)."""
    with (out / "instances.csv").open("w", newline="") as f:
        csv.writer(f).writerows([(r.onnx, r.vnnlib, f"{r.timeout:g}") for r in rows])
    with (out / "truth.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TRUTH_COLUMNS)
        writer.writerows([[getattr(r, c) if c != "timeout" else f"{r.timeout:g}" for c in TRUTH_COLUMNS] for r in rows])


def read_rows(folder: Path) -> list[Row]:
    """The rows of a generated suite's truth.csv."""
    with (Path(folder) / "truth.csv").open(newline="") as f:
        return [Row(d["onnx"], d["vnnlib"], float(d["timeout"]), d["truth"], d["kind"], d["arch"], d["activation"],
                    int(d["n_inputs"]), d["detail"], d.get("witness", "")) for d in csv.DictReader(f)]


def generate(out_dir, tier: str = "ci", seed: int = 0, budget: AttackBudget = AttackBudget(),
             timeout: float | None = None, verbose: bool = False) -> dict:
    """Write the tier's instances into ``out_dir``; return the manifest (also written as manifest.json)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r} (known: {', '.join(TIERS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timeout = TIMEOUTS[tier] if timeout is None else timeout
    planted, clean = TIERS[tier](seed)
    t0, rows, dropped = time.monotonic(), [], {}
    with single_thread():
        _build_all(out, planted, clean, timeout, budget, verbose, rows, dropped)
    write_tables(out, rows)
    manifest = {"tier": tier, "seed": seed, "budget": asdict(budget), "timeout": timeout,
                "counts": _counts(rows), "dropped": dropped, "seconds": round(time.monotonic() - t0, 2)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def single_thread():
    """Run torch on one thread (tiny nets: extra threads only add contention), then restore."""
    from verifier.threads import cpu_threads

    return cpu_threads(1)


def _build_all(out: Path, planted: list[Planted], clean: list[Clean], timeout: float, budget: AttackBudget,
               verbose: bool, rows: list[Row], dropped: dict) -> None:
    """Plant every recipe, then build every clean pair; append rows, record dropped recipes."""
    for recipe in planted:
        row, notes = plant(recipe, out, timeout, budget)
        rows += [row] if row else []
        if row is None:
            dropped[recipe.name] = notes
        _say(verbose, f"{recipe.name}: {'kept' if row else 'dropped'} {'; '.join(notes)}")
    for recipe in clean:
        pair, notes = clean_pair(recipe, out, timeout)
        rows += pair
        if not pair:
            dropped[recipe.name] = notes
        _say(verbose, f"{recipe.name}: {'kept' if pair else 'dropped'} {'; '.join(notes)}")


def _counts(rows: list[Row]) -> dict:
    """Instances per kind and truth."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[f"{r.kind}/{r.truth}"] = counts.get(f"{r.kind}/{r.truth}", 0) + 1
    return counts


def _say(verbose: bool, text: str) -> None:
    """Progress line on stderr when verbose."""
    if verbose:
        print(text, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``nnverify soundness generate``."""
    ap = argparse.ArgumentParser(prog="nnverify soundness generate", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="folder to write the suite into")
    ap.add_argument("--tier", default="ci", choices=sorted(TIERS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, help="per-instance timeout written to instances.csv")
    ap.add_argument("--restarts", type=int, default=AttackBudget.restarts, help="hiddenness check: PGD restarts")
    ap.add_argument("--steps", type=int, default=AttackBudget.steps, help="hiddenness check: PGD steps")
    ap.add_argument("--samples", type=int, default=AttackBudget.samples, help="hiddenness check: uniform samples")
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Generate a tier; print the manifest as JSON. Exit 1 when no instance could be kept."""
    args = build_parser().parse_args(argv)
    budget = AttackBudget(args.restarts, args.steps, args.samples)
    manifest = generate(args.out_dir, args.tier, args.seed, budget, args.timeout, verbose=not args.quiet)
    print(json.dumps(manifest, indent=1))
    return 0 if manifest["counts"] else 1


if __name__ == "__main__":
    sys.exit(main())
