"""The tutorial's standard training plots, drawn headless with matplotlib.

From a history table (``epoch`` plus metric columns, as written to
``history.csv``) each run gets ``accuracy.png``, ``loss.png``,
``accuracy_loss.png`` and ``epoch_times.png``. Every figure is titled with the
model name, and each legend entry shows the curve's final value so two runs
can be compared at a glance.

The helpers below keep every chart of the tutorial readable: whole-number
epoch ticks, dots on runs too short to draw a line, a y-range fitted to where
the curves spend their time (:func:`focus_y`), and for many runs on one chart
a colour *and* a line style per run (:func:`run_styles`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from utils.lazy import Lazy

if TYPE_CHECKING:
    import pandas as pd


class _Pyplot(Lazy):
    """``matplotlib.pyplot``, imported on first use with the headless backend."""

    def _lazy_load(self):
        if not self.loaded:
            import matplotlib

            matplotlib.use("Agg")  # no display needed: figures go straight to PNG files
        return super()._lazy_load()


plt = _Pyplot("matplotlib.pyplot")

STYLE = "ggplot"
SHORT_RUN = 2  # epochs; a curve this short gets a dot per epoch, or it would be invisible
MAX_STYLED_RUNS = 12
# Twelve colours that stay apart (tab10 plus two), and four line styles: run i
# gets colour i and style i % 4, so no two of twelve runs look alike, and runs
# next to each other in the legend differ in both.
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
               "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8")
LINE_STYLES = ("-", "--", "-.", ":")

#: The last figure a plot function drew (closed, still inspectable): tests read its axes.
last_figure = None


def run_styles(count: int) -> list[dict]:
    """``ax.plot`` keyword arguments for ``count`` runs on one chart: a distinct colour
    and a line style for each of up to 12 runs (then the pattern repeats)."""
    return [{"color": RUN_COLOURS[i % len(RUN_COLOURS)], "linestyle": LINE_STYLES[i % len(LINE_STYLES)]}
            for i in range(count)]


def marker_for(points: int) -> dict:
    """A dot on every point when a curve is too short to be seen as a line."""
    return {"marker": "o"} if points <= SHORT_RUN else {}


def integer_epochs(ax) -> None:
    """Epoch ticks at whole numbers only (no epoch 2.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def focus_y(ax, series, low: float = 5, high: float = 95) -> tuple[float, float] | None:
    """Fit the y-axis to the band the curves spend their time in.

    From the ``low``-th to the ``high``-th percentile of the values after the
    first epoch, widened to include where every curve ends (the numbers the
    legend quotes): the first epoch's very low accuracy or very high loss runs
    off the chart instead of flattening the rest against the frame. Returns
    the limits, or None (autoscale) for curves under 4 epochs.
    """
    import numpy as np

    arrays = [np.asarray(s, dtype=float) for s in series]
    if not arrays or max(len(a) for a in arrays) < 4:
        return None
    arrays = [a[1:][np.isfinite(a[1:])] for a in arrays]
    arrays = [a for a in arrays if a.size]
    values = np.concatenate(arrays) if arrays else np.array([])
    if values.size < 5:
        return None
    ends = [a[-1] for a in arrays]
    bottom = min(np.percentile(values, low), *ends)
    top = max(np.percentile(values, high), *ends)
    if top <= bottom:
        return None
    pad = (top - bottom) * 0.08
    ax.set_ylim(bottom - pad, top + pad)
    return bottom - pad, top + pad


def _curves(ax, history: pd.DataFrame, metric: str) -> None:
    drawn = []
    for column, label in ((metric, "training"), (f"val_{metric}", "validation")):
        if column in history:
            ax.plot(history["epoch"], history[column], **marker_for(len(history)),
                    label=f"{label} {metric}: {history[column].iloc[-1]:.4f}")
            drawn.append(history[column])
    integer_epochs(ax)
    focus_y(ax, drawn)


def _save(fig, path: Path) -> Path:
    global last_figure
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    last_figure = fig
    return path


def overlaid_curves(ax, histories: dict, metric: str) -> None:
    """One curve per run on ``ax``, each with its own colour and line style."""
    present = {name: h for name, h in histories.items() if metric in h}
    drawn = []
    for (name, history), style in zip(present.items(), run_styles(len(present))):
        values = history[metric]
        finite = values.dropna()
        ax.plot(history["epoch"], values, **style, **marker_for(len(history)),
                label=f"{name}: {finite.iloc[-1]:.4f}" if len(finite) else name)
        drawn.append(values)
    integer_epochs(ax)
    focus_y(ax, drawn)


def plot_metric(history: pd.DataFrame, metric: str, model_name: str, path: Path,
                xlabel: str = "epoch") -> Path:
    """Training (and validation, when present) curve of one metric."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _curves(ax, history, metric)
        ax.set(title=f"{model_name}: {metric}", xlabel=xlabel, ylabel=metric)
        ax.legend()
        return _save(fig, path)


def plot_accuracy_loss(history: pd.DataFrame, model_name: str, path: Path,
                       xlabel: str = "epoch") -> Path:
    """Accuracy and loss on one figure, sharing the epoch axis."""
    with plt.style.context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
        _curves(top, history, "accuracy")
        _curves(bottom, history, "loss")
        top.set(title=f"{model_name}: accuracy and loss", ylabel="accuracy")
        bottom.set(xlabel=xlabel, ylabel="loss")
        top.legend()
        bottom.legend()
        return _save(fig, path)


def plot_epoch_times(history: pd.DataFrame, model_name: str, path: Path,
                     xlabel: str = "epoch") -> Path:
    """Seconds each epoch took; the first is slower because it compiles."""
    seconds = history["epoch_seconds"]
    epochs = history["epoch"]
    later = seconds.iloc[1:]
    with plt.style.context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # The first epoch also compiles the model: drawn apart, in its own colour,
        # and kept from setting the scale, so the steady epochs stay readable.
        ax.bar(epochs.iloc[:1], seconds.iloc[:1], color="#999999",
               label=f"first epoch (includes compiling): {seconds.iloc[0]:.2f} s")
        if len(later):
            ax.bar(epochs.iloc[1:], later, color="#1f77b4",
                   label=f"later epochs: median {later.median():.3f} s, total {later.sum():.2f} s")
            top = float(later.max()) * 1.6
            if seconds.iloc[0] > top > 0:
                ax.set_ylim(0, top)
                ax.annotate(f"{seconds.iloc[0]:.2f} s ↑", (epochs.iloc[0], top), xytext=(0, -14),
                            textcoords="offset points", ha="center", fontsize=9)
        integer_epochs(ax)
        ax.set(title=f"{model_name}: time per epoch", xlabel=xlabel, ylabel="seconds")
        ax.legend()
        return _save(fig, path)


def save_standard_plots(history: pd.DataFrame, model_name: str, run_dir: Path,
                        xlabel: str = "epoch") -> list[Path]:
    """Draw whichever of the four standard plots the history has data for."""
    run_dir = Path(run_dir)
    saved = []
    for metric in ("accuracy", "loss"):
        if metric in history:
            saved.append(plot_metric(history, metric, model_name, run_dir / f"{metric}.png", xlabel))
    if {"accuracy", "loss"} <= set(history.columns):
        saved.append(plot_accuracy_loss(history, model_name, run_dir / "accuracy_loss.png", xlabel))
    if "epoch_seconds" in history:
        saved.append(plot_epoch_times(history, model_name, run_dir / "epoch_times.png", xlabel))
    return saved
