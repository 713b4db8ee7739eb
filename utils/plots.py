"""The tutorial's standard training plots, drawn headless with matplotlib.

From a history table (``epoch`` plus metric columns, as written to
``history.csv``) each run gets ``accuracy.png``, ``loss.png``,
``accuracy_loss.png`` and ``epoch_times.png``. Every figure is titled with the
model name, and each legend entry shows the curve's final value so two runs
can be compared at a glance.
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


def _curves(ax, history: pd.DataFrame, metric: str) -> None:
    for column, label in ((metric, "training"), (f"val_{metric}", "validation")):
        if column in history:
            ax.plot(history["epoch"], history[column],
                    label=f"{label} {metric}: {history[column].iloc[-1]:.4f}")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
    with plt.style.context(STYLE):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.bar(history["epoch"], seconds,
               label=f"median {seconds.median():.3f} s, total {seconds.sum():.2f} s")
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
