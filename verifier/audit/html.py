"""The audit report as one self-contained HTML page: tables, and plots as base64 PNG (matplotlib Agg).

Nothing is fetched when the page opens: styles are inline, images are data URIs, and the only
links are relative ones to the evidence files kept beside the report.
"""
from __future__ import annotations

import base64
import html
import io
import math

import numpy as np

from verifier.audit.extras import Extras, Picture

VERDICT_COLOURS = {"holds": "#2e7d32", "violated": "#c62828", "unknown": "#757575", "timeout": "#9e9e9e",
                   "error": "#6a1b9a", "misclassified": "#ef6c00", "pending": "#90a4ae"}
CLAIM_COLOURS = {"confirmed": "#2e7d32", "refuted": "#c62828", "undecided": "#f9a825"}
MAX_SAMPLE_ROWS = 2000

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #212121; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 12em; max-width: 24em; }
.samples table { font-size: 0.85em; }
th { background: #f5f5f5; white-space: normal; } td.l, th.l { text-align: left; }
.badge { display: inline-block; padding: 0.15em 0.7em; border-radius: 0.3em; color: white; font-weight: 600; }
.muted { color: #616161; font-size: 0.9em; } code { background: #f5f5f5; padding: 0 0.25em; }
img.plot { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
.samples { max-height: 480px; max-width: 100%; overflow: auto; }
"""


def _esc(value) -> str:
    """HTML-escaped text of any value."""
    return html.escape("" if value is None else str(value))


def _pct(x) -> str:
    """A fraction as a percentage with one decimal."""
    return "-" if x is None else f"{100 * x:.1f}%"


def _badge(word: str) -> str:
    """A coloured verdict badge."""
    colour = CLAIM_COLOURS.get(word) or VERDICT_COLOURS.get(word, "#616161")
    return f'<span class="badge" style="background:{colour}">{_esc(word)}</span>'


def _png(fig) -> str:
    """An <img> with the figure as an embedded PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{data}">'


def _figure(width: float, height: float):
    """A matplotlib Figure not registered with pyplot (no global state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


# ----------------------------------------------------------------------------- plots

def plot_accuracy(report: dict) -> str:
    """Certified accuracy against eps: the certified interval, clean accuracy and the claim."""
    per = report["per_eps"]
    eps = [e["eps"] for e in per]
    lower = [e["interval"][0] for e in per]
    upper = [e["interval"][1] for e in per]
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.fill_between(eps, lower, upper, color="#90caf9", alpha=0.5, label="undecided interval")
    ax.vlines(eps, lower, upper, color="#90caf9", linewidth=8, alpha=0.7)
    ax.plot(eps, upper, "v--", color="#1565c0", label="upper bound: (clean - falsified) / n")
    ax.plot(eps, lower, "o-", color="#0d47a1", label="certified accuracy (lower bound)")
    ax.plot(eps, [e["clean_accuracy"] for e in per], "s:", color="#616161", markerfacecolor="none",
            label="clean accuracy")
    ax.plot(eps, [e["claimed_certified_accuracy"] for e in per], "*", color="#d32f2f", markersize=13,
            label="claimed certified accuracy")
    ax.set_xlabel("eps (L-inf, pixel units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.03, 1.03)
    if len(eps) == 1:
        ax.set_xlim(eps[0] * 0.5 if eps[0] > 0 else -0.01, eps[0] * 1.5 if eps[0] > 0 else 0.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _png(fig)


def plot_times(report: dict) -> str:
    """Histogram of seconds per verified sample, stacked by verdict."""
    rows = [r for r in report["samples"] if r["seconds"] is not None]
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no sample verified yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    secs = np.array([r["seconds"] for r in rows])
    top = max(float(secs.max()), 1e-3)
    use_log = top / max(float(secs[secs > 0].min()) if np.any(secs > 0) else top, 1e-6) > 100
    bins = np.geomspace(max(secs[secs > 0].min(), 1e-3), top * 1.01, 25) if use_log else np.linspace(0, top * 1.01, 25)
    groups = [(v, [r["seconds"] for r in rows if r["verdict"] == v]) for v in VERDICT_COLOURS]
    groups = [(v, s) for v, s in groups if s]
    ax.hist([np.clip(s, bins[0], None) for _, s in groups], bins=bins, stacked=True,
            color=[VERDICT_COLOURS[v] for v, _ in groups], label=[f"{v} ({len(s)})" for v, s in groups])
    if use_log:
        ax.set_xscale("log")
    ax.set_xlabel("seconds per sample")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def image_layout(shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]] | None:
    """How to draw a sample of ``shape``: ('gray', (H, W)) or ('rgb', (H, W, 3)); None: not an image."""
    shape = tuple(int(d) for d in shape)
    squeezed = tuple(d for d in shape if d != 1) or (1,)
    if len(squeezed) == 2 and min(squeezed) >= 4:
        return "gray", squeezed
    if len(shape) == 3 and shape[0] == 3 and min(shape[1:]) >= 4:
        return "rgb-chw", shape
    if len(shape) == 3 and shape[2] == 3 and min(shape[:2]) >= 4:
        return "rgb", shape
    if len(squeezed) == 1:
        side = math.isqrt(squeezed[0])
        if side >= 4 and side * side == squeezed[0]:
            return "gray", (side, side)
    return None


def _as_image(values: np.ndarray, layout) -> np.ndarray:
    """The sample reshaped for imshow."""
    kind, shape = layout
    a = np.asarray(values, dtype=np.float64).reshape(shape)
    return np.moveaxis(a, 0, -1) if kind == "rgb-chw" else a


def plot_counterexamples(pictures: tuple[Picture, ...], sample_shape: tuple[int, ...]) -> str:
    """Original, counterexample and amplified perturbation: two counterexamples per row for images."""
    layout = image_layout(sample_shape)
    per_row = 2 if layout and len(pictures) > 1 else 1
    rows = math.ceil(len(pictures) / per_row)
    fig = _figure(5.2 * per_row if layout else 9.0, 2.0 * rows + 0.3)
    lo = min(float(min(p.original.min(), p.adversarial.min())) for p in pictures)
    hi = max(float(max(p.original.max(), p.adversarial.max())) for p in pictures)
    for r, pic in enumerate(pictures):
        delta = (pic.adversarial - pic.original).reshape(-1)
        scale = float(np.abs(delta).max()) or 1.0
        titles = (f"sample {pic.sample}: label {pic.label}", f"counterexample: class {pic.prediction}",
                  f"perturbation x{1 / scale:.3g}\n(max |d| = {scale:.3g}, eps {pic.eps:g})")
        if layout is None:
            ax = fig.add_subplot(rows, 1, r + 1)
            ax.plot(pic.original.reshape(-1), label="original", color="#1565c0")
            ax.plot(pic.adversarial.reshape(-1), label="counterexample", color="#c62828", alpha=0.8)
            ax.set_title(f"{titles[0]}; {titles[1]}", fontsize=9)
            ax.legend(fontsize=7)
            continue
        images = (_as_image(pic.original, layout), _as_image(pic.adversarial, layout),
                  _as_image(delta / scale, layout))
        for c, (img, title) in enumerate(zip(images, titles)):
            ax = fig.add_subplot(rows, 3 * per_row, 3 * r + c + 1)
            if c == 2:
                shown = img.mean(axis=-1) if img.ndim == 3 else img
                ax.imshow(shown, cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
            elif img.ndim == 3:
                ax.imshow(np.clip((img - lo) / ((hi - lo) or 1.0), 0, 1), interpolation="nearest")
            else:
                ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return _png(fig)


def plot_tightness(tightness: dict) -> str:
    """Per-layer tightness estimates (inner = lower, outer = upper) for every eps."""
    outer = tightness.get("outer_method", "CROWN")
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    names = None
    for k, block in enumerate(tightness["per_eps"]):
        layers = block["layers"]
        names = [f"{i}: {layer['layer']}" for i, layer in enumerate(layers)]
        xs = np.arange(len(layers)) + (k - (len(tightness["per_eps"]) - 1) / 2) * 0.08
        low = [layer["tightness_lower"] for layer in layers]
        up = [layer["tightness_upper"] for layer in layers]
        line = ax.plot(xs, up, "v-", label=f"upper estimate ({outer} / IBP), eps {block['eps']:g}")[0]
        ax.plot(xs, low, "^--", color=line.get_color(), label=f"lower estimate (inner / IBP), eps {block['eps']:g}")
        ax.vlines(xs, low, up, color=line.get_color(), alpha=0.3, linewidth=4)
    ax.set_xticks(range(len(names or [])))
    ax.set_xticklabels(names or [], rotation=20, fontsize=8, ha="right")
    lowest = min(layer["tightness_lower"] for b in tightness["per_eps"] for layer in b["layers"])
    if lowest < 0.2:
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(max(0.0, lowest - 0.05), 1.02)
    ax.set_ylabel("tightness (optimal box / IBP box)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _png(fig)


# ----------------------------------------------------------------------------- sections

def _summary_table(report: dict) -> str:
    """Per-eps counts, accuracies, interval and claim verdict."""
    head = ("eps", "n", "clean", "certified", "falsified", "unknown", "pending", "certified interval",
            "claimed", "verdict", "s/sample (mean / median / max)")
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for e in report["per_eps"]:
        t = e["time_per_sample"]
        times = "-" if t["mean"] is None else f"{t['mean']:.2f} / {t['median']:.2f} / {t['max']:.2f}"
        interval = f"[{_pct(e['interval'][0])}, {_pct(e['interval'][1])}]"
        cells = (f"{e['eps']:g}", e["n"], f"{e['clean']} ({_pct(e['clean_accuracy'])})",
                 f"{e['certified']} ({_pct(e['certified_accuracy'])})", e["falsified"], e["unknown"], e["pending"],
                 interval, _pct(e["claimed_certified_accuracy"]), _badge(e["claim_verdict"]), times)
        out.append("<tr>" + "".join(f"<td>{c if str(c).startswith('<span') else _esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    notes = [f"eps {e['eps']:g}: {e['certified_without_certificate']} certified sample(s) have no certificate "
             "(exact MILP proof): `audit-check` cannot re-check them" for e in report["per_eps"]
             if e["certified_without_certificate"]]
    return "\n".join(out + [f'<p class="muted">{_esc(n)}</p>' for n in notes])


def _claim_section(report: dict) -> str:
    """The claim as audited: model, data, norm, clip, normalisation."""
    c = report["claim"]
    norm = "none (inside the model, or none)" if c["mean"] is None and c["std"] is None else \
        f"outside the model: (x - {c['mean']}) / {c['std']}"
    rows = [("model", f"{c['model']} (sha256 {c['model_sha256'][:16]}...)"),
            ("data", f"{c['data']}: {c['n_samples']} samples of shape {c['sample_shape']} "
                     f"(model input {c['input_shape']}, {c['n_outputs']} classes)"),
            ("norm", c["norm"]), ("eps", ", ".join(f"{e:g}" for e in c["eps"])),
            ("clip", "none" if c["clip"] is None else f"[{c['clip'][0]:g}, {c['clip'][1]:g}]"),
            ("normalisation", norm),
            ("claimed certified accuracy", ", ".join(_pct(a) for a in c["claimed_certified_accuracy"]))]
    if report.get("clean_claim"):
        cc = report["clean_claim"]
        rows.append(("claimed clean accuracy", f"{_pct(cc['claimed'])}; measured {_pct(cc['measured'])}: "
                                               f"{cc['verdict']}"))
    return "<table>" + "".join(f'<tr><th class="l">{_esc(k)}</th><td class="l">{_esc(v)}</td></tr>'
                               for k, v in rows) + "</table>"


def _tightness_section(tightness: dict | None) -> str:
    """The IBP tightness table(s) and plot."""
    if not tightness:
        return "<p class='muted'>Not computed.</p>"
    if not tightness["per_eps"]:
        return "<p class='muted'>No correctly classified sample to measure it on.</p>"
    parts = [f"<p>{_esc(tightness['definition'])}</p>", f"<p class='muted'>{_esc(tightness['estimates'])}</p>"]
    outer = tightness.get("outer_method", "CROWN")
    head = ("layer", "op", "neurons", "IBP width", f"{outer} width", "inner (sampled) width",
            "tightness lower (inner / IBP)", f"tightness upper ({outer} / IBP)", f"unstable ReLU inputs IBP / {outer}")
    for block in tightness["per_eps"]:
        parts.append(f"<h3>eps {block['eps']:g} ({block['samples']} samples)</h3>")
        parts.append(f"<table><tr><th class='l'>{head[0]}</th>" + "".join(f"<th>{h}</th>" for h in head[1:]) + "</tr>")
        for layer in block["layers"]:
            unstable = "-" if layer["unstable_ibp"] is None else f"{layer['unstable_ibp']:.1f} / {layer['unstable_outer']:.1f}"
            cells = (layer["layer"], layer["op"], layer["neurons"], f"{layer['ibp_width']:.4g}",
                     f"{layer['outer_width']:.4g}", f"{layer['inner_width']:.4g}", f"{layer['tightness_lower']:.4f}",
                     f"{layer['tightness_upper']:.4f}", unstable)
            parts.append(f"<tr><td class='l'>{_esc(cells[0])}</td>" + "".join(f"<td>{_esc(c)}</td>" for c in cells[1:]) +
                         "</tr>")
        parts.append("</table>")
    parts.append(plot_tightness(tightness))
    return "\n".join(parts)


def _link(path) -> str:
    """A relative link to an evidence file (or a dash)."""
    return "-" if not path else f'<a href="{_esc(path)}">{_esc(path.rsplit("/", 1)[-1])}</a>'


def _samples_table(report: dict) -> str:
    """Every (sample, eps): verdict, time, method and evidence."""
    rows = report["samples"]
    head = ("sample", "eps", "label", "clean pred.", "verdict", "seconds", "method", "certificate",
            "counterexample", "reason")
    out = ['<div class="samples"><table><tr>' + "".join(f"<th class='l'>{h}</th>" for h in head) + "</tr>"]
    for r in rows[:MAX_SAMPLE_ROWS]:
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.2f}"
        cells = (r["sample"], f"{r['eps']:g}", r["label"], r["prediction"], _badge(r["verdict"]),
                 secs, _esc(r["method"]), _link(r["certificate"]), _link(r["counterexample"]),
                 _esc(r["reason"][:120]))
        out.append("<tr>" + "".join(f"<td class='l'>{c}</td>" for c in cells[:-1]) +
                   f"<td class='l wrap'>{cells[-1]}</td></tr>")
    out.append("</table></div>")
    if len(rows) > MAX_SAMPLE_ROWS:
        out.append(f"<p class='muted'>{len(rows) - MAX_SAMPLE_ROWS} more rows in report.json.</p>")
    return "\n".join(out)


DEFINITIONS = """
<ul>
<li><b>certified</b>: correctly classified and proved robust (<code>holds</code>) over the eps-ball clipped to the
valid range; <b>falsified</b>: a counterexample in that region, re-executed on onnxruntime; <b>unknown</b>:
neither within the time per sample (timeouts and errors included).</li>
<li>The true certified accuracy lies in <b>[certified / n, (clean - falsified) / n]</b>. The claim is
<b>confirmed</b> when the lower end reaches it, <b>refuted</b> when the upper end is below it, else
<b>undecided</b>.</li>
<li>Every certificate and counterexample is kept beside this report; <code>nnverify audit-check report.json</code>
re-checks them all with the independent checker and onnxruntime.</li>
</ul>
"""


def render_html(report: dict, extras: Extras) -> str:
    """The whole page."""
    c = report["claim"]
    title = c["name"] or f"Audit of {c['model']}"
    status = "" if report.get("complete", True) else " <span class='muted'>(partial: samples still pending)</span>"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>{_esc(title)}</h1>",
             f"<p>Verdict on the claim: {_badge(report['claim_verdict'])}{status}</p>",
             "<h2>Claim</h2>", _claim_section(report),
             "<h2>Results</h2>", _summary_table(report), plot_accuracy(report),
             "<h2>Time per sample</h2>", plot_times(report),
             "<h2>Counterexamples</h2>"]
    if extras.pictures:
        shown = len(extras.pictures)
        parts.append(f"<p class='muted'>{shown} of {max(extras.pictures_total, shown)} counterexamples; "
                     "the perturbation is scaled so that its largest entry fills the colour range "
                     "(red: brighter, blue: darker).</p>")
        parts.append(plot_counterexamples(extras.pictures, extras.sample_shape))
    else:
        parts.append("<p class='muted'>No counterexample found.</p>")
    parts += ["<h2>IBP tightness per layer</h2>", _tightness_section(extras.tightness),
              "<h2>Samples</h2>", _samples_table(report), "<h2>Definitions</h2>", DEFINITIONS, "</body></html>"]
    return "\n".join(parts) + "\n"
