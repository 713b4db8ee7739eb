"""What the MNIST chapter shows after training: where and how a model errs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay, classification_report, confusion_matrix

from utils.plots import STYLE, overlaid_curves, plt  # pyplot set up headless (Agg)


def confusion_counts(y_true, y_pred, classes: int) -> np.ndarray:
    """(classes, classes) counts, rows: true class, columns: predicted class; a class that
    neither the labels nor the predictions hold still gets its row and column."""
    return confusion_matrix(y_true, y_pred, labels=list(range(classes)))


def confusion_matrix_png(y_true, y_pred, class_names, title: str, path: Path) -> Path:
    """Rows: true class, columns: predicted class; the diagonal is what is right.

    The counts are also written beside the picture, as ``<name>.csv``."""
    counts = confusion_counts(y_true, y_pred, len(class_names))
    pd.DataFrame(counts, index=pd.Index(class_names, name="true"),
                 columns=class_names).to_csv(Path(path).with_suffix(".csv"))
    side = min(max(4.0, 0.6 * len(class_names) + 2), 24)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    ConfusionMatrixDisplay(counts, display_labels=class_names).plot(
        ax=ax, colorbar=False, cmap="Blues", xticks_rotation=45,
        include_values=len(class_names) <= 30)
    ax.set_title(f"{title}: confusion matrix (test set)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def misclassified_png(images, y_true, y_pred, class_names, title: str, path: Path, limit: int = 25) -> Path:
    """A grid of test images the model got wrong, each with its two labels."""
    wrong = np.flatnonzero(y_true != y_pred)[:limit]
    columns = 5
    rows = max(1, int(np.ceil(len(wrong) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2, rows * 2.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), wrong):
        image = images[index]
        if image.shape[-1] == 1:  # grayscale: dark ink on white, as on paper
            ax.imshow(image[..., 0], cmap="gray_r", vmin=0, vmax=1)
        else:
            ax.imshow(np.clip(image, 0, 1))
        ax.set_title(f"pred {class_names[y_pred[index]]}\ntrue {class_names[y_true[index]]}", fontsize=8)
    # Fixed margins in inches instead of tight_layout: every cell is alike, and measuring
    # the text of 25 small axes took most of the time this picture costs.
    height = fig.get_figheight()
    fig.suptitle(f"{title}: {len(np.flatnonzero(y_true != y_pred))} test images misclassified"
                 f" (first {len(wrong)})", y=1 - 0.08 / height, va="top")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.1 / height, top=1 - 0.85 / height,
                        wspace=0.1, hspace=0.45)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def report_text(y_true, y_pred, class_names) -> str:
    """Precision, recall and F1 per class (scikit-learn's classification report)."""
    return classification_report(y_true, y_pred, labels=list(range(len(class_names))),
                                 target_names=class_names, digits=4, zero_division=0)


def overlaid_curves_png(histories: dict[str, pd.DataFrame], metric: str, path: Path) -> Path:
    """One curve per model, for comparing runs on one figure."""
    with plt.style.context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 5))
        overlaid_curves(ax, histories, metric)  # a colour and a line style per model
        ax.set(title=f"{metric} of every model", xlabel="epoch", ylabel=metric)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path
