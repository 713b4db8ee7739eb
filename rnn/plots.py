"""The chapter's own figures: the test-period forecast, and the cell comparison."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed: figures go straight to PNG files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.plots import STYLE  # noqa: E402


def forecast_plot(times, actual: np.ndarray, forecasts: dict[str, np.ndarray], rmse: dict[str, float],
                  title: str, unit: str, path: Path) -> Path:
    """Top: the test period's true values and every forecast. Bottom: each forecast's error."""
    with plt.style.context(STYLE):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 2]})
        top.plot(times, actual, color="black", linewidth=2, label="actual")
        for name, predicted in forecasts.items():
            label = f"{name} (RMSE {rmse[name]:.3g})"
            top.plot(times, predicted, linewidth=1, label=label)
            bottom.plot(times, np.asarray(predicted) - actual, linewidth=1, label=name)
        bottom.axhline(0, color="black", linewidth=1)
        top.set(title=title, ylabel=unit)
        bottom.set(ylabel=f"forecast - actual ({unit})", xlabel="time of the forecast value")
        top.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return Path(path)


def compare_plot(val_curves: dict[str, tuple[np.ndarray, np.ndarray]],
                 gradients: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """Left: validation loss per epoch of each cell. Right: how strongly the prediction
    depends on each step of the window, by how far back that step lies (log scale),
    after training (solid) and before (dashed)."""
    with plt.style.context(STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        for name, (epochs, loss) in val_curves.items():
            left.plot(epochs, loss, label=f"{name}: best {np.nanmin(loss):.3f}")
        left.set(title="validation loss (scaled MSE)", xlabel="epoch", ylabel="loss", yscale="log")
        left.legend(fontsize=8)
        for name, (untrained, trained) in gradients.items():
            lags = np.arange(1, len(trained) + 1)
            line, = right.plot(lags, trained, label=f"{name} trained")
            right.plot(lags, untrained, linestyle="--", color=line.get_color(), label=f"{name} untrained")
        right.set(title="mean |d prediction / d input| by lag", xlabel="steps back from the last input",
                  ylabel="gradient size", yscale="log")
        right.legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return Path(path)
