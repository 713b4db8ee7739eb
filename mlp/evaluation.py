"""Scoring a churn model beyond accuracy: confusion matrix, per-class
precision / recall / F1, ROC AUC, and the confusion-matrix picture.

About 80% of customers stay, so a "model" that always answers "stays" is 80%
accurate and useless; the numbers here show what accuracy hides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from utils import plots  # noqa: F401  (sets the headless matplotlib backend first)

CLASSES = ("stayed", "left")  # Exited = 0, Exited = 1


def classification_metrics(y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> dict:
    """Flat dict of test metrics from targets (rows, 1) and probabilities of leaving (rows, 1)."""
    y_true = np.asarray(y_true).ravel().astype(int)
    probability = np.asarray(probability).ravel()
    predicted = (probability > threshold).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, predicted, labels=[0, 1], zero_division=0)
    metrics = {
        "accuracy": float(np.mean(predicted == y_true)),
        # what "always predict the larger class" would score on the same rows
        "majority_baseline": float(max(np.mean(y_true), 1 - np.mean(y_true))),
        "roc_auc": float(roc_auc_score(y_true, probability)) if len(set(y_true)) == 2 else float("nan"),
    }
    for i, name in enumerate(CLASSES):
        metrics[f"precision_{name}"] = float(precision[i])
        metrics[f"recall_{name}"] = float(recall[i])
        metrics[f"f1_{name}"] = float(f1[i])
        metrics[f"support_{name}"] = int(support[i])
    return metrics


def format_auc(value: float) -> str:
    """ROC AUC needs customers of both classes; with one class it is undefined, and says so."""
    return "undefined (these rows hold one class only)" if np.isnan(value) else f"{value:.4f}"


def confusion(y_true: np.ndarray, probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """2x2 counts: rows are the truth (stayed, left), columns the prediction."""
    predicted = (np.asarray(probability).ravel() > threshold).astype(int)
    return confusion_matrix(np.asarray(y_true).ravel().astype(int), predicted, labels=[0, 1])


def format_report(metrics: dict, matrix: np.ndarray) -> str:
    """The confusion matrix and per-class scores as a small text table."""
    width = max(map(len, CLASSES)) + 7
    lines = ["confusion matrix (rows: truth, columns: prediction)",
             " " * width + "".join(f"{'pred. ' + c:>14}" for c in CLASSES)]
    for name, row in zip(CLASSES, matrix):
        lines.append(f"{'truly ' + name:<{width}}" + "".join(f"{n:>14,d}" for n in row))
    lines += ["", f"{'class':<8}{'precision':>11}{'recall':>9}{'F1':>8}{'customers':>11}"]
    for name in CLASSES:
        lines.append(f"{name:<8}{metrics[f'precision_{name}']:>11.3f}{metrics[f'recall_{name}']:>9.3f}"
                     f"{metrics[f'f1_{name}']:>8.3f}{metrics[f'support_{name}']:>11,d}")
    lines += ["", f"accuracy {metrics['accuracy']:.4f} (always answering 'stayed' would score "
                  f"{metrics['majority_baseline']:.4f})   ROC AUC {format_auc(metrics['roc_auc'])}"]
    return "\n".join(lines)


def plot_confusion_matrix(matrix: np.ndarray, title: str, path: Path) -> Path:
    """Counts and row shares (recall of each class) in a coloured 2x2 grid."""
    from utils.plots import plt  # pyplot on the headless backend

    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    with plt.style.context(plots.STYLE):
        fig, ax = plt.subplots(figsize=(5, 4.4))
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        ax.grid(False)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, f"{count:,}\n{shares[i, j]:.0%} of row", ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASSES, yticklabels=CLASSES,
               xlabel="predicted", ylabel="true", title=title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return Path(path)
