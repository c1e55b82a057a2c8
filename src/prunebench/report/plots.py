"""The report's figures, drawn with matplotlib's object API on the Agg canvas and saved as PNG and SVG.

No pyplot: figures are built as ``Figure`` objects, so nothing here touches matplotlib's global figure
registry or backend, and report code can run inside any program (a notebook, a test, the CLI). Output bytes
are a pure function of the data: the SVG hash salt is fixed, and the date/software metadata is left out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from prunebench.analysis import BASELINE, Analysis, CellAnalysis, VariantAnalysis
from prunebench.results import write_bytes_atomic

#: rc settings applied (locally, via rc_context) while a figure is drawn and saved.
RC = {
    "svg.hashsalt": "prunebench",
    "svg.fonttype": "path",
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
}
_DPI = 100


def _color(names: Sequence[str], name: str) -> str:
    """A stable colour per variant (dense always black) so a variant looks the same in every figure."""
    if name == BASELINE:
        return "black"
    palette = matplotlib.colormaps["tab10"].colors
    others = [n for n in names if n != BASELINE]
    return mcolors.to_hex(palette[others.index(name) % len(palette)] if name in others else "grey")


def _label(v: VariantAnalysis | None, name: str) -> str:
    if v is not None and v.fidelity_ok is False:
        return f"{name} (fidelity FAILED)"
    return name


def _series(a: Analysis, name: str) -> list[CellAnalysis]:
    return sorted(
        (c for c in a.cells if c.variant == name and c.seq_len == a.seq_len and c.status == "ok"),
        key=lambda c: c.batch_size,
    )


def batch_axis(ax: Axes, batches: Sequence[int]) -> None:
    """Log-2 batch-size x axis with a tick at every measured batch size."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batches), [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("batch size (samples per forward pass, log scale)")


def legend(ax: Axes, **kwargs: object) -> None:
    """Draw the legend only when something is labelled (an empty run has nothing to explain)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def save_figure(fig: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.svg`` in ``out_dir``, byte-stable; returns ``{"png", "svg"}``."""
    paths = {}
    with matplotlib.rc_context(RC):
        for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=_DPI, metadata=meta, pad_inches=0.15)
            paths[ext] = write_bytes_atomic(out_dir / f"{stem}.{ext}", buf.getvalue())
    return paths


def new_figure(width: float = 8.0, height: float = 4.8) -> Figure:
    """A figure (inches) with constrained layout, built under the report's rc settings."""
    with matplotlib.rc_context(RC):
        return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def throughput_figure(a: Analysis) -> Figure:
    """Throughput (samples/s) vs batch size, one line per variant."""
    fig = new_figure()
    with matplotlib.rc_context(RC):
        ax = fig.add_subplot()
        names = [v.name for v in a.variants]
        for v in a.variants:
            cells = [c for c in _series(a, v.name) if c.throughput_samples_s is not None]
            if cells:
                ax.plot(
                    [c.batch_size for c in cells],
                    [c.throughput_samples_s for c in cells],
                    marker="o",
                    color=_color(names, v.name),
                    lw=2.2 if v.name == BASELINE else 1.4,
                    label=_label(v, v.name),
                )
        batch_axis(ax, a.batch_sizes or (1,))
        ax.set_ylabel("throughput (samples / s)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"Throughput vs batch size (seq len {a.seq_len}; higher is better)")
        legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def speedup_figure(a: Analysis) -> Figure:
    """Paired speedup vs batch size with CI bands; each variant's FLOP-ideal speedup as a dashed line."""
    fig = new_figure()
    with matplotlib.rc_context(RC):
        ax = fig.add_subplot()
        names = [v.name for v in a.variants]
        ax.axhline(1.0, color="black", lw=1.0, label="dense (1×)")
        for v in a.variants:
            if v.name == BASELINE:
                continue
            cells = [c for c in _series(a, v.name) if c.speedup is not None]
            if not cells:
                continue
            color, xs = _color(names, v.name), [c.batch_size for c in cells]
            ax.plot(xs, [c.speedup for c in cells], marker="o", color=color, label=_label(v, v.name))
            ci = [c for c in cells if c.speedup_ci_low is not None and c.speedup_ci_high is not None]
            if ci:
                ax.fill_between(
                    [c.batch_size for c in ci],
                    [c.speedup_ci_low for c in ci],
                    [c.speedup_ci_high for c in ci],
                    color=color,
                    alpha=0.18,
                    lw=0,
                )
            ideal = [c for c in cells if c.flop_ideal_speedup is not None]
            if ideal:
                ax.plot(
                    [c.batch_size for c in ideal],
                    [c.flop_ideal_speedup for c in ideal],
                    ls="--",
                    color=color,
                    lw=1.0,
                    alpha=0.8,
                )
        ax.plot([], [], ls="--", color="grey", label="FLOP-ideal (dashed, per variant)")
        batch_axis(ax, a.batch_sizes or (1,))
        ax.set_ylabel("speedup vs dense (×, paired median; band = CI)")
        ax.set_title(f"Measured vs FLOP-ideal speedup (seq len {a.seq_len}; above 1 = faster)")
        legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def degradation_figure(a: Analysis) -> Figure:
    """Accuracy vs measured sparsity, one curve per method, all starting from the dense model at 0."""
    fig = new_figure()
    with matplotlib.rc_context(RC):
        ax = fig.add_subplot()
        dense = a.variant(BASELINE)
        names = [v.name for v in a.variants]
        methods = sorted({v.method for v in a.variants if v.method and v.name != BASELINE})
        for method in methods:
            members = [
                v
                for v in a.variants
                if v.method == method
                and v.name != BASELINE
                and v.measured_sparsity is not None
                and v.accuracy is not None
            ]
            if not members:  # e.g. every variant of the method failed: nothing to draw
                continue
            pts = sorted((v.measured_sparsity, v.accuracy) for v in members)
            if dense is not None and dense.accuracy is not None:
                pts = [(0.0, dense.accuracy), *pts]
            # The colour of the method's first variant, so that it matches the other figures.
            ax.plot(
                [100 * sp for sp, _ in pts],
                [100 * acc for _, acc in pts],
                marker="o",
                label=method,
                color=_color(names, members[0].name),
            )
        if dense is not None and dense.accuracy is not None:
            ax.axhline(100 * dense.accuracy, color="black", lw=0.8, ls=":", label="dense accuracy")
        trivial = next((v.trivial_accuracy for v in a.variants if v.trivial_accuracy is not None), None)
        if trivial is not None:
            ax.axhline(100 * trivial, color="grey", lw=0.8, ls="-.", label="trivial baseline (constant prediction)")
        metric = next((v.metric_name for v in a.variants if v.metric_name), "accuracy")
        ax.set_xlabel("measured sparsity of prunable weights (%)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_xlim(-2, 100)
        ax.set_title("Accuracy degradation vs sparsity, per pruning method")
        legend(ax, loc="lower left")
    return fig


def pareto_figure(a: Analysis) -> Figure:
    """Accuracy vs latency at the smallest and the largest batch size, Pareto front highlighted."""
    batches = sorted(a.pareto)
    fig = new_figure(width=5.0 * max(1, len(batches)), height=4.8)
    with matplotlib.rc_context(RC):
        axes = fig.subplots(1, max(1, len(batches)), squeeze=False)[0]
        names = [v.name for v in a.variants]
        for ax, b in zip(axes, batches or [None], strict=False):
            points = a.pareto.get(b, ()) if b is not None else ()
            for p in points:
                ax.scatter(
                    [p.latency_ms],
                    [100 * p.accuracy],
                    color=_color(names, p.variant),
                    zorder=3,
                    s=60 if p.on_front else 25,
                    edgecolors="black" if p.on_front else "none",
                )
                ax.annotate(
                    _label(a.variant(p.variant), p.variant),
                    (p.latency_ms, 100 * p.accuracy),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=8,
                )
            front = [p for p in points if p.on_front]
            if len(front) > 1:  # one point draws no line: the ring says it is on the front, a legend would lie
                ax.step(
                    [p.latency_ms for p in front],
                    [100 * p.accuracy for p in front],
                    where="post",
                    color="black",
                    lw=1.0,
                    ls="--",
                    label="Pareto front",
                    zorder=2,
                )
                legend(ax, loc="best")
            ax.margins(x=0.2, y=0.08)
            ax.set_xlabel("latency per batch (ms, median; lower is better)")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"Accuracy vs latency at batch size {b}" if b is not None else "no measurements")
    return fig


#: Figure name -> (builder, caption); the report embeds them in this order.
FIGURES = {
    "speedup": (speedup_figure, "Paired speedup against dense with its CI (band) and the FLOP-ideal (dashed)."),
    "throughput": (throughput_figure, "Throughput of every variant across batch sizes."),
    "degradation": (degradation_figure, "Accuracy as sparsity grows, one curve per method."),
    "pareto": (pareto_figure, "Accuracy vs latency; ringed points are on the Pareto front."),
}


def write_figures(a: Analysis, out_dir: Path) -> dict[str, dict[str, Path]]:
    """Draw every figure of :data:`FIGURES` into ``out_dir``; returns ``{name: {"png": path, "svg": path}}``."""
    return {name: save_figure(build(a), out_dir, name) for name, (build, _) in FIGURES.items()}
