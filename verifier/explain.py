"""Verified attribution maps (after EVA, "Don't Lie to Me! Robust and Efficient Explainability with
Verified Perturbation Analysis").

For an input x and a class c the input is cut into patches. For every patch P, bound propagation
gives ``margin_lower`` L_P with

    L_P <= min_{j != c} (y_c(x') - y_j(x'))   for every x' equal to x outside P and within eps of
                                               x inside P (clipped to [LO, HI] when given),

so ``drop_upper`` = margin(x) - L_P bounds how far perturbing P alone can lower c's margin: a
guarantee, not a sampled estimate. ``margin_upper`` is the least margin actually reached inside
the patch's box (x itself and a short signed-gradient attack), so the true worst case lies in
[margin_lower, margin_upper]. Patches rank by ``margin_lower``, lowest (most important) first.
With ``complement``, ``complement_margin_lower`` is the guaranteed margin when everything BUT
the patch is perturbed (the gain from keeping the patch: compare with ``margin_lower_all``, the
bound with the whole input perturbed).

Patches: for a 4-D network input (canonical C x H x W) K x K squares over the last two
dimensions, all channels together; ``grid=(H, W)`` reads a flat input as an H x W image; any
other input is cut into groups of K consecutive features. All patch boxes go through ONE
batched bound computation (in chunks of ``batch``) of the engine in float64.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from verifier.threads import small_net_threads

FORMAT = "nnverify-explain"
VERSION = 1
METHODS = ("crown", "alpha")


class ExplainError(ValueError):
    """Bad input for an attribution map (the message is one line, fit for a user)."""


def patches(input_shape: Sequence[int], patch: int, grid: Sequence[int] | None = None) -> tuple[dict, list[np.ndarray]]:
    """(layout, flat C-order index arrays of every patch), row-major over the patch grid."""
    shape, n = tuple(int(d) for d in input_shape), int(np.prod(input_shape))
    if patch < 1:
        raise ExplainError(f"patch must be >= 1, got {patch}")
    if grid is not None:
        if len(shape) == 3:
            raise ExplainError("--grid is for flat inputs; this model's input is already an image "
                               f"{'x'.join(map(str, shape))}")
        h, w = (int(v) for v in grid)
        if h < 1 or w < 1 or h * w != n:
            raise ExplainError(f"grid {h} x {w} does not fit the model's {n} inputs")
        shape, kind = (1, h, w), "grid"
    elif len(shape) == 3:
        kind = "image"
    else:
        if patch > n:
            raise ExplainError(f"patch {patch} is larger than the input ({n} features)")
        return {"kind": "features", "shape": [n]}, [np.arange(s, min(s + patch, n)) for s in range(0, n, patch)]
    c, h, w = shape
    if patch > h or patch > w:
        raise ExplainError(f"patch {patch} is larger than the input ({h} x {w})")
    index = np.arange(n).reshape(c, h, w)
    out = [index[:, r:r + patch, q:q + patch].reshape(-1) for r in range(0, h, patch) for q in range(0, w, patch)]
    return {"kind": kind, "shape": [c, h, w]}, out


def explain(model, x, label: int, patch: int, eps: float, clip: Sequence[float] | None = None,
            grid: Sequence[int] | None = None, complement: bool = False, method: str = "crown",
            batch: int = 256, attack_steps: int = 20) -> dict:
    """The verified attribution map of ``x`` for class ``label`` as a JSON-able dict (see the module doc).

    ``model``: ONNX path or loaded ``verifier.model.Model``; ``x``: array with the model's input size.
    """
    t0 = time.monotonic()
    m = _model(model)
    graph = m.graph
    x, label, eps, clip = _validate(graph, x, label, eps, clip)
    if method not in METHODS:
        raise ExplainError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    layout, parts = patches(graph.input_shape, int(patch), grid)
    g64 = graph.to(dtype=torch.float64)
    margin_x = float(_margins(g64, x[None], label)[0])
    lower, upper = _patch_boxes(x, parts, eps, clip, inside=True)
    with small_net_threads(graph):
        bounds = _bounds(graph, lower, upper, label, method, batch)
        reached = np.minimum(margin_x, _attack(g64, x, lower, upper, label, attack_steps))
    order = np.argsort(bounds, kind="stable")
    rank = np.empty(len(parts), dtype=int)
    rank[order] = np.arange(1, len(parts) + 1)
    rows = [{"id": i, "indices": [int(k) for k in idx], "margin_lower": float(bounds[i]),
             "margin_upper": float(reached[i]), "drop_upper": float(margin_x - bounds[i]), "rank": int(rank[i])}
            for i, idx in enumerate(parts)]
    out = {"format": FORMAT, "version": VERSION, "model_sha256": m.sha256, "label": label, "eps": eps,
           "clip": clip, "patch": int(patch), "layout": layout, "method": method, "precision": "float64",
           "margin": margin_x, "predicted": _predicted(g64, x), "patches": rows, "ranking": [int(i) for i in order]}
    if complement:
        lo_c, hi_c = _patch_boxes(x, parts + [np.arange(0)], eps, clip, inside=False)   # the last: all perturbed
        with small_net_threads(graph):
            comp = _bounds(graph, lo_c, hi_c, label, method, batch)
        for row, value in zip(rows, comp):
            row["complement_margin_lower"] = float(value)
        out["margin_lower_all"] = float(comp[-1])
    out["time"] = round(time.monotonic() - t0, 4)
    return out


def _model(model):
    """A loaded model from a path (or the model itself); ``ExplainError`` if unreadable."""
    from verifier.model import Model, ModelLoadError, UnsupportedModelError, load_onnx

    if isinstance(model, Model):
        return model
    try:
        return load_onnx(str(model))
    except (ModelLoadError, UnsupportedModelError) as exc:
        raise ExplainError(f"cannot load model {model}: {exc}") from None


def _validate(graph, x, label, eps, clip):
    """Checked (flat float64 x, label, eps, clip) or ``ExplainError``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size != graph.n_inputs:
        raise ExplainError(f"the input has {x.size} values, the model takes {graph.n_inputs}")
    if not np.all(np.isfinite(x)):
        raise ExplainError("the input has non-finite values")
    n_out = graph.n_outputs
    if n_out < 2:
        raise ExplainError("an attribution map needs a model with at least 2 outputs")
    if isinstance(label, bool) or int(label) != label or not 0 <= int(label) < n_out:
        raise ExplainError(f"label {label} is out of range [0, {n_out})")
    if not float(eps) >= 0:
        raise ExplainError(f"eps must be >= 0, got {eps}")
    if clip is not None:
        lo, hi = (float(v) for v in clip)
        if not lo <= hi:
            raise ExplainError(f"clip range [{lo}, {hi}] is empty")
        if np.any(x < lo) or np.any(x > hi):
            raise ExplainError(f"the input has values outside the clip range [{lo}, {hi}]")
        clip = [lo, hi]
    return x, int(label), float(eps), clip


def _patch_boxes(x, parts, eps, clip, inside: bool) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [P, n]: x perturbed by eps on each patch (``inside``) or everywhere but the patch."""
    lo_all, hi_all = x - eps, x + eps
    if clip is not None:
        lo_all, hi_all = np.maximum(lo_all, clip[0]), np.minimum(hi_all, clip[1])
    lower = np.tile(x if inside else lo_all, (len(parts), 1))
    upper = np.tile(x if inside else hi_all, (len(parts), 1))
    for i, idx in enumerate(parts):
        lower[i, idx] = (lo_all if inside else x)[idx]
        upper[i, idx] = (hi_all if inside else x)[idx]
    return lower, upper


def margin_rows(n_out: int, label: int) -> np.ndarray:
    """Rows [n_out - 1, n_out] of y_label - y_j for every j != label."""
    rows = -np.eye(n_out)[[j for j in range(n_out) if j != label]]
    rows[:, label] = 1.0
    return rows


def _bounds(graph, lower: np.ndarray, upper: np.ndarray, label: int, method: str, batch: int) -> np.ndarray:
    """Guaranteed lower bound [P] of min_j (y_label - y_j) over each box (float64 engine, batched)."""
    from verifier.bounds import BoundEngine

    engine = BoundEngine(graph, device="cpu", dtype=torch.float64)
    C = torch.as_tensor(margin_rows(graph.n_outputs, label)).unsqueeze(0)
    out = []
    for s in range(0, lower.shape[0], max(1, batch)):
        lo, hi = torch.as_tensor(lower[s:s + batch]), torch.as_tensor(upper[s:s + batch])
        res = engine.compute(lo, hi, C, method=method, want_upper=False)
        out.append(res.lower.min(1).values.numpy())
    return np.concatenate(out)


def _predicted(g64, x: np.ndarray) -> int:
    """The class the network gives ``x`` (float64 forward pass)."""
    with torch.no_grad():
        return int(g64.forward(torch.as_tensor(x).reshape((1,) + tuple(g64.input_shape))).reshape(-1).argmax())


def _margins(g64, xs: np.ndarray, label: int) -> np.ndarray:
    """min_j (y_label - y_j) of each row of ``xs`` (float64 forward pass)."""
    with torch.no_grad():
        y = g64.forward(torch.as_tensor(xs).reshape((-1,) + tuple(g64.input_shape))).reshape(xs.shape[0], -1)
    others = torch.cat([y[:, :label], y[:, label + 1:]], 1)
    return (y[:, label] - others.max(1).values).numpy()


def _attack(g64, x, lower, upper, label: int, steps: int) -> np.ndarray:
    """The least margin reached per patch box [P]: signed-gradient descent from x and from each box's low corner."""
    lo, hi = torch.as_tensor(lower), torch.as_tensor(upper)
    best = np.full(lower.shape[0], np.inf)
    for start in (torch.as_tensor(np.tile(x, (lower.shape[0], 1))), lo.clone()):
        z, step = start.clone(), (hi - lo) / 4
        for _ in range(max(1, steps)):
            z.requires_grad_(True)
            y = g64.forward(z.reshape((-1,) + tuple(g64.input_shape))).reshape(z.shape[0], -1)
            others = torch.cat([y[:, :label], y[:, label + 1:]], 1)
            margin = y[:, label] - others.max(1).values
            best = np.minimum(best, margin.detach().numpy())
            grad, = torch.autograd.grad(margin.sum(), z)
            z = torch.minimum(torch.maximum(z.detach() - step * grad.sign(), lo), hi)
            step = step * 0.8
        best = np.minimum(best, _margins(g64, z.detach().numpy(), label))
    return best


def save(result: dict, x, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``explain.json`` and ``explain.png`` into ``out_dir`` (created); their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, png = out / "explain.json", out / "explain.png"
    js.write_text(json.dumps(result, indent=1))
    plot(result, np.asarray(x, dtype=np.float64).reshape(-1), png)
    return js, png


def _patch_map(result: dict, key: str, n: int) -> np.ndarray:
    """A per-input-value array holding each patch's ``key`` value."""
    values = np.full(n, np.nan)
    for row in result["patches"]:
        values[row["indices"]] = row[key]
    return values


def plot(result: dict, x: np.ndarray, path: str | Path) -> None:
    """The heat-map PNG: input and guaranteed-drop map side by side (a bar chart for feature groups)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout, has_comp = result["layout"], "margin_lower_all" in result
    panels = 3 if has_comp else 2
    fig = Figure(figsize=(4.2 * panels, 4.0) if layout["kind"] != "features" else (10, 4), dpi=110)
    FigureCanvasAgg(fig)
    title = (f"label {result['label']} (predicted {result['predicted']}), eps {result['eps']:g}, patch "
             f"{result['patch']}: margin at x {result['margin']:.3g}")
    if layout["kind"] == "features":
        _plot_features(fig, result)
    else:
        _plot_image(fig, result, x, panels)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(str(path))


def _plot_image(fig, result: dict, x: np.ndarray, panels: int) -> None:
    """Input image | map of drop_upper per pixel (patch ranks written in) [| complement margins]."""
    from matplotlib.patches import Rectangle
    from matplotlib.patheffects import withStroke

    c, h, w = result["layout"]["shape"]
    img = x.reshape(c, h, w)
    ax = fig.add_subplot(1, panels, 1)
    if c == 3:
        lo, hi = img.min(), img.max()
        ax.imshow(np.transpose((img - lo) / max(hi - lo, 1e-12), (1, 2, 0)))
    else:
        ax.imshow(img.mean(0), cmap="gray")
    ax.set_title("input", fontsize=9)
    drop = _patch_map(result, "drop_upper", x.size).reshape(c, h, w)[0]
    ax2 = fig.add_subplot(1, panels, 2)
    im = ax2.imshow(drop, cmap="inferno")
    fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04)
    ax2.set_title("guaranteed max margin drop (margin(x) - L)\n(#rank, L per patch)", fontsize=9)
    k = result["patch"]
    outline = [withStroke(linewidth=1.5, foreground="black")]
    if len(result["patches"]) <= 64:
        for row in result["patches"]:
            r, q = np.unravel_index(row["indices"][0] % (h * w), (h, w))
            label = f"#{row['rank']}\n{row['margin_lower']:.2g}"
            ax2.text(q + (min(k, w - q) - 1) / 2, r + (min(k, h - r) - 1) / 2, label, ha="center", va="center",
                     fontsize=6, color="white", path_effects=outline)
    first = result["patches"][result["ranking"][0]]
    r, q = np.unravel_index(first["indices"][0] % (h * w), (h, w))
    for a in (ax, ax2):
        a.add_patch(Rectangle((q - 0.5, r - 0.5), min(k, w - q), min(k, h - r), fill=False, edgecolor="lime", lw=2))
        a.set_xticks([])
        a.set_yticks([])
    if panels == 3:
        ax3 = fig.add_subplot(1, 3, 3)
        comp = _patch_map(result, "complement_margin_lower", x.size).reshape(c, h, w)[0]
        im3 = ax3.imshow(comp, cmap="viridis")
        fig.colorbar(im3, ax=ax3, fraction=0.046, pad=0.04)
        ax3.set_title(f"margin bound, all but patch perturbed\n(all perturbed: {result['margin_lower_all']:.3g})",
                      fontsize=9)
        ax3.set_xticks([])
        ax3.set_yticks([])


def _plot_features(fig, result: dict) -> None:
    """Bar chart of drop_upper per feature group (the top-ranked group highlighted)."""
    ax = fig.add_subplot(1, 1, 1)
    rows = result["patches"]
    colours = ["tab:red" if r["rank"] == 1 else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), [r["drop_upper"] for r in rows], color=colours)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r['indices'][0]}-{r['indices'][-1]}" for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("guaranteed max margin drop")
    ax.set_xlabel("feature group")
