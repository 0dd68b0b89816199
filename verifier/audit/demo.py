"""``make audit-demo``: train two digits classifiers, state claims about them, audit the claims.

``python -m verifier.audit.demo --out audit-demo`` uses scikit-learn's bundled 8x8 digits (no
download): a small MLP trained normally (with normalisation outside the model) and a small CNN
trained with IBP certified training. It writes the ONNX models, the test data, and three claims:

* ``cnn-true``: the CNN's certified accuracy at eps 0.05 and 0.1 as plain CROWN certifies it
  (rounded down) -- a true, conservative claim: confirmed;
* ``mlp-inflated``: the MLP is "90 % certifiably robust" at eps 0.05 -- refuted by counterexamples;
* ``mlp-true``: the MLP's CROWN-certified accuracy at eps 0.02, rounded down: confirmed;
and audits each into ``OUT/<claim>/`` (report.json, report.html, evidence/).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from verifier.threads import cpu_threads

DIGITS_MEAN, DIGITS_STD = 0.3, 0.4   # normalisation of the MLP, applied outside the model


def digits(n_test: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 8x8 images in [0, 1] (float32), a fixed random split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return x[train], d.target[train].astype(np.int64), x[test], d.target[test].astype(np.int64)


def mlp(seed: int = 0) -> nn.Sequential:
    """64-32-32-10 ReLU MLP on a flat 64-vector (weights initialised from ``seed``)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn(seed: int = 0) -> nn.Sequential:
    """Two small convolutions and two linear layers on a 1x8x8 image (weights initialised from ``seed``)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10))


def interval_forward(net: nn.Sequential, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IBP through Linear / Conv2d / ReLU / Flatten (centre and radius through the affine layers)."""
    for layer in net:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            mid = layer(mid)
            if isinstance(layer, nn.Linear):
                rad = rad @ layer.weight.abs().T
            else:
                rad = nn.functional.conv2d(rad, layer.weight.abs(), None, layer.stride, layer.padding)
            lo, hi = mid - rad, mid + rad
        elif isinstance(layer, (nn.ReLU, nn.Flatten)):
            lo, hi = layer(lo), layer(hi)
        else:
            raise TypeError(f"no interval rule for {type(layer).__name__}")
    return lo, hi


def worst_logits(lo: torch.Tensor, hi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The label's lower bound and every other class's upper bound (the IBP worst case)."""
    onehot = nn.functional.one_hot(y, lo.shape[1]).bool()
    return torch.where(onehot, lo, hi)


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, ibp_eps: float = 0.0, seed: int = 0,
          lr: float = 5e-3) -> nn.Module:
    """Adam on cross-entropy; with ``ibp_eps`` > 0, IBP certified training on [x - eps, x + eps] clipped to [0, 1].

    IBP training ramps eps from 0 over the middle half of the epochs and mixes clean and worst-case
    losses, the clean share falling from 1 to 1/2 (Gowal et al.'s schedule, shortened).
    """
    torch.manual_seed(seed)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr)
    batches = math.ceil(len(xs) / 128)
    with cpu_threads(1):
        for epoch in range(epochs):
            ramp = min(max((epoch + 1 - epochs / 4) / (epochs / 2), 0.0), 1.0)
            perm = torch.randperm(len(xs))
            for b in range(batches):
                idx = perm[b * 128:(b + 1) * 128]
                xb, yb = xs[idx], ys[idx]
                loss = nn.functional.cross_entropy(net(xb), yb)
                if ibp_eps > 0 and ramp > 0:
                    eps = ibp_eps * ramp
                    lo, hi = interval_forward(net, (xb - eps).clamp(0, 1), (xb + eps).clamp(0, 1))
                    robust = nn.functional.cross_entropy(worst_logits(lo, hi, yb), yb)
                    kappa = 1 - ramp / 2
                    loss = kappa * loss + (1 - kappa) * robust
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


def export(net: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Write ``net`` as ONNX with input [1, *input_shape]."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros((1,) + input_shape), str(path), input_names=["x"], output_names=["logits"],
                          dynamo=False)
    return path


def train_models(folder: Path, epochs: int = 30, seed: int = 0) -> dict:
    """Train and export both models, write the test data; return paths and accuracies."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = digits(seed=seed)
    norm = (x_train.reshape(-1, 64) - DIGITS_MEAN) / DIGITS_STD
    plain = train(mlp(seed), norm.astype(np.float32), y_train, epochs, seed=seed)
    certified = train(cnn(seed), x_train[:, None], y_train, epochs, ibp_eps=0.15, seed=seed)
    np.savez_compressed(folder / "digits-test.npz", x=x_test, y=y_test)
    with torch.no_grad():
        acc_mlp = float((plain(torch.from_numpy((x_test.reshape(-1, 64) - DIGITS_MEAN) / DIGITS_STD)).argmax(1).numpy()
                         == y_test).mean())
        acc_cnn = float((certified(torch.from_numpy(x_test[:, None])).argmax(1).numpy() == y_test).mean())
    return {"mlp": export(plain, (64,), folder / "mlp.onnx"), "cnn": export(certified, (1, 8, 8), folder / "cnn-ibp.onnx"),
            "data": folder / "digits-test.npz", "accuracy": {"mlp": acc_mlp, "cnn": acc_cnn}}


def crown_certified(claim, eps: float) -> float:
    """Fraction of the claim's samples correctly classified and certified by one plain CROWN pass."""
    from verifier.audit.plan import input_box, plan_items
    from verifier.bounds import BoundEngine
    from verifier.model import load_onnx

    graph = load_onnx(str(claim.model)).graph
    engine = BoundEngine(graph)
    good = [it for it in plan_items(claim) if it.eps_index == 0 and not it.misclassified]
    boxes = [input_box(claim.x[it.sample], eps, claim.clip, claim.mean, claim.std, claim.input_shape) for it in good]
    if not boxes:
        return 0.0
    lo = torch.tensor(np.stack([b[0] for b in boxes]), dtype=torch.float32)
    hi = torch.tensor(np.stack([b[1] for b in boxes]), dtype=torch.float32)
    labels = [it.label for it in good]
    eye = torch.eye(claim.n_outputs)
    C = torch.stack([eye[lab] - eye[[j for j in range(claim.n_outputs) if j != lab]] for lab in labels])
    with cpu_threads(1):
        lower = engine.compute(lo, hi, C, method="crown", want_upper=False).lower
    return float((lower > 0).all(dim=1).sum()) / claim.n_samples


def write_claim(path: Path, **fields) -> Path:
    """A claim file with ``fields`` (paths relative to it)."""
    path.write_text(json.dumps(fields, indent=1) + "\n")
    return path


def floor_to(value: float, step: float = 0.05) -> float:
    """``value`` rounded down to a multiple of ``step`` (as a short decimal)."""
    return round(math.floor(value / step + 1e-9) * step, 4)


def demo_claims(folder: Path, models: dict, samples: int) -> list[Path]:
    """The three demo claims (see module docstring), with true values measured by plain CROWN."""
    from verifier.audit.claim import claim_from_dict

    with np.load(models["data"]) as test:
        np.savez_compressed(folder / "digits-audit.npz", x=test["x"][:samples], y=test["y"][:samples])
    common = {"data": "digits-audit.npz", "norm": "linf", "clip": [0, 1], "timeout_per_sample": 10}
    mlp_norm = {"model": "mlp.onnx", "mean": [DIGITS_MEAN], "std": [DIGITS_STD]}
    probe = claim_from_dict({**common, **mlp_norm, "eps": 0.02, "claimed_certified_accuracy": 0}, folder)
    mlp_true = floor_to(crown_certified(probe, 0.02))
    probe = claim_from_dict({**common, "model": "cnn-ibp.onnx", "eps": 0.05, "claimed_certified_accuracy": 0}, folder)
    cnn_true = [floor_to(crown_certified(probe, eps)) for eps in (0.05, 0.1)]
    return [write_claim(folder / "cnn-true.json", **common, model="cnn-ibp.onnx", eps=[0.05, 0.1],
                        claimed_certified_accuracy=cnn_true, name="IBP-trained CNN on digits: true claim"),
            write_claim(folder / "mlp-inflated.json", **common, **mlp_norm, eps=0.05, claimed_certified_accuracy=0.9,
                        claimed_clean_accuracy=0.9, name="Normally trained MLP on digits: inflated claim"),
            write_claim(folder / "mlp-true.json", **common, **mlp_norm, eps=0.02, claimed_certified_accuracy=mlp_true,
                        name="Normally trained MLP on digits: true claim")]


def main(argv: list[str] | None = None) -> int:
    """Train, write the claims, audit each; print one summary per claim."""
    from verifier.audit.claim import load_claim
    from verifier.audit.cli import ProgressBar, summary_lines
    from verifier.audit.run import run_audit

    ap = argparse.ArgumentParser(prog="python -m verifier.audit.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="audit-demo", help="output folder (default audit-demo)")
    ap.add_argument("--samples", type=int, default=60, help="test samples audited per claim (default 60)")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs per model (default 30)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    t0 = time.monotonic()
    models = train_models(out / "models", args.epochs)
    print(f"trained in {time.monotonic() - t0:.1f}s: clean test accuracy MLP {models['accuracy']['mlp']:.1%}, "
          f"IBP-trained CNN {models['accuracy']['cnn']:.1%}")
    for path in demo_claims(out / "models", models, args.samples):
        claim = load_claim(path)
        print(f"\n== {path.stem}: {claim.name}")
        report = run_audit(claim, out / path.stem, progress=ProgressBar())
        print("\n".join(summary_lines(report)))
        print(f"report: {out / path.stem / 'report.html'}")
    print(f"\ndone in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
