"""What the MNIST chapter shows after training: where and how a model errs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import ConfusionMatrixDisplay, classification_report

from utils.plots import STYLE, overlaid_curves, plt  # pyplot set up headless (Agg)


def confusion_matrix_png(y_true, y_pred, class_names, title: str, path: Path) -> Path:
    """Rows: true class, columns: predicted class; the diagonal is what is right."""
    fig, ax = plt.subplots(figsize=(8, 7))
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, display_labels=class_names, ax=ax,
                                            colorbar=False, cmap="Blues", xticks_rotation=45)
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
        ax.imshow(images[index].reshape(images.shape[1], images.shape[2]), cmap="gray_r")
        ax.set_title(f"pred {class_names[y_pred[index]]}\ntrue {class_names[y_true[index]]}", fontsize=8)
    fig.suptitle(f"{title}: {len(np.flatnonzero(y_true != y_pred))} test images misclassified"
                 f" (first {len(wrong)})")
    fig.tight_layout()
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
