"""The comparison figures: speedup per variant and run, and the dense baseline's latency per run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from prunebench.analysis import BASELINE
from prunebench.report.plots import RC, batch_axis, legend, new_figure
from prunebench.report.runs import RunEntry, groups
from prunebench.results.cell import DEFAULT_BACKEND


def _styles(entries: Sequence[RunEntry]) -> dict[str, tuple[Any, str]]:
    """Colour per fingerprint group, line style per run within its group."""
    palette = matplotlib.colormaps["tab10"].colors
    styles, dashes = {}, ("-", "--", ":", "-.")
    for gi, members in enumerate(groups(entries).values()):
        for ri, e in enumerate(members):
            styles[e.label] = (palette[gi % len(palette)], dashes[ri % len(dashes)])
    return styles


def speedup_comparison_figure(entries: Sequence[RunEntry]) -> Figure:
    """One panel per pruned variant: speedup vs batch size for each run (colour = environment group)."""
    names = list(dict.fromkeys(v.name for e in entries for v in e.analysis.variants if v.name != BASELINE))
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig = new_figure(width=4.6 * cols, height=3.4 * rows + 0.6)
    styles = _styles(entries)
    batches = sorted({b for e in entries for b in e.analysis.batch_sizes}) or [1]
    with matplotlib.rc_context(RC):
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, name in zip(axes, names, strict=False):
            for e in entries:
                a = e.analysis
                cells = sorted(
                    (c for c in a.cells if c.variant == name and c.seq_len == a.seq_len and c.speedup is not None
                     and c.backend == DEFAULT_BACKEND),  # eager only: other backends are tables, not lines
                    key=lambda c: c.batch_size,
                )
                if not cells:
                    continue
                color, ls = styles[e.label]
                xs = [c.batch_size for c in cells]
                label = f"{e.label} ({e.fingerprint})"
                ax.plot(xs, [c.speedup for c in cells], color=color, ls=ls, marker="o", ms=4, label=label)
                lo = [c.speedup_ci_low if c.speedup_ci_low is not None else c.speedup for c in cells]
                hi = [c.speedup_ci_high if c.speedup_ci_high is not None else c.speedup for c in cells]
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
            ax.axhline(1.0, color="black", lw=0.8)
            batch_axis(ax, batches)
            ax.set_xlabel("batch size (log scale)")
            ax.set_ylabel("speedup vs dense (×)")
            ax.set_title(name)
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        legend_items: dict[str, Any] = {}
        for ax in axes[: len(names)]:
            if not ax.get_legend_handles_labels()[0]:
                ax.text(0.5, 0.5, "no successful measurement", ha="center", va="center", transform=ax.transAxes)
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend_items.setdefault(label, handle)
        if legend_items:
            # In run order, whichever panel a run first appeared in.
            labels = [lab for lab in (f"{e.label} ({e.fingerprint})" for e in entries) if lab in legend_items]
            fig.legend([legend_items[k] for k in labels], labels, loc="outside lower center", ncols=min(4, len(labels)))
        fig.suptitle("Paired speedup vs dense per run (colour = environment fingerprint; band = CI)")
    return fig


def latency_comparison_figure(entries: Sequence[RunEntry]) -> Figure:
    """The dense baseline's latency vs batch size per run: the raw speed of each environment."""
    fig = new_figure()
    styles = _styles(entries)
    batches = sorted({b for e in entries for b in e.analysis.batch_sizes}) or [1]
    with matplotlib.rc_context(RC):
        ax = fig.add_subplot()
        for e in entries:
            a = e.analysis
            cells = sorted(
                (c for c in a.cells if c.variant == BASELINE and c.seq_len == a.seq_len and c.latency_ms is not None
                 and c.backend == DEFAULT_BACKEND),
                key=lambda c: c.batch_size,
            )
            if cells:
                color, ls = styles[e.label]
                ax.plot(
                    [c.batch_size for c in cells],
                    [c.latency_ms for c in cells],
                    color=color,
                    ls=ls,
                    marker="o",
                    label=f"{e.label} ({e.fingerprint})",
                )
        batch_axis(ax, batches)
        ax.set_ylabel("dense latency per batch (ms, median)")
        ax.set_ylim(bottom=0)
        ax.set_title("Dense baseline latency per run (lower is faster hardware/software)")
        legend(ax, loc="upper left")
    return fig
