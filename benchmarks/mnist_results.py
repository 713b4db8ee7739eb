"""Chapter 4's results as one chart: Fashion-MNIST test accuracy per model and recipe.

Draws the numbers of the chapter's two results tables (mnist/README.md), measured with the
commands in the comments below (seed 0, TensorFlow backend, 2-core AMD EPYC), into
assets/mnist/test_accuracy.png. It trains nothing: rerun a command to check its number.

    python benchmarks/mnist_results.py
    python benchmarks/mnist_results.py --output /tmp/test_accuracy.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "assets" / "mnist" / "test_accuracy.png"

P = "python mnist/mnist.py --dataset fashion_mnist"
ORIGINAL = "the original tutorial's recipe: batch 256, adam, constant rate"
TUNED = "plus a schedule, augmentation or smaller batches"

# (model, recipe, test accuracy, group). Each number was measured with the command in its comment.
RESULTS = [
    # P -m mlp_one_layer --epochs 20
    ("mlp_one_layer", "20 epochs", 0.8896, ORIGINAL),
    # P -m mlp_two_layers --epochs 20
    ("mlp_two_layers", "20 epochs", 0.8922, ORIGINAL),
    # P -m mlp_two_layers_dropout --epochs 20
    ("mlp_two_layers_dropout", "20 epochs", 0.8827, ORIGINAL),
    # P -m le_net --epochs 20
    ("le_net", "20 epochs", 0.8863, ORIGINAL),
    # P -m conv_net --epochs 20
    ("conv_net", "20 epochs", 0.9038, ORIGINAL),
    # P -m conv_net_dropout --epochs 20
    ("conv_net_dropout", "20 epochs", 0.9071, ORIGINAL),
    # P -m conv_net_batch_norm --epochs 20
    ("conv_net_batch_norm", "20 epochs", 0.9064, ORIGINAL),
    # P -m conv_net_l1 --epochs 20
    ("conv_net_l1", "20 epochs", 0.8959, ORIGINAL),
    # P -m conv_net_l2 --epochs 20
    ("conv_net_l2", "20 epochs", 0.9058, ORIGINAL),
    # P -m best_conv_net --epochs 30
    ("best_conv_net", "30 epochs", 0.9232, ORIGINAL),
    # P -m conv_net --epochs 20 --schedule cosine
    ("conv_net", "20 epochs, cosine", 0.9043, TUNED),
    # P -m conv_net --epochs 60 --augment original
    ("conv_net", "60 epochs, --augment original", 0.8851, TUNED),
    # P -m conv_net --epochs 60 --schedule cosine --augment flip_shift
    ("conv_net", "60 epochs, flip_shift, cosine", 0.9095, TUNED),
    # P -m conv_net --epochs 40 --batch-size 64 --schedule cosine --augment flip
    ("conv_net", "40 epochs, batch 64, flip, cosine", 0.9154, TUNED),
    # P -m best_conv_net --epochs 30 --schedule cosine
    ("best_conv_net", "30 epochs, cosine", 0.9288, TUNED),
    # P -m best_conv_net --epochs 60 --schedule cosine --augment flip_shift
    ("best_conv_net", "60 epochs, flip_shift, cosine", 0.9242, TUNED),
    # P -m best_conv_net --epochs 40 --batch-size 128 --schedule cosine --augment flip
    ("best_conv_net", "40 epochs, batch 128, flip, cosine", 0.9343, TUNED),
    # P -m best_conv_net --epochs 60 --batch-size 128 --schedule cosine --augment flip
    ("best_conv_net", "60 epochs, batch 128, flip, cosine", 0.9348, TUNED),
    # P -m best_conv_net --epochs 60 --batch-size 64 --schedule cosine --augment flip
    ("best_conv_net", "60 epochs, batch 64, flip, cosine", 0.9364, TUNED),
]


def draw(output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {ORIGINAL: "#7f7f7f", TUNED: "#1f77b4"}
    rows = list(reversed(RESULTS))  # first row at the top
    labels = [f"{model}  ({recipe})" for model, recipe, _, _ in rows]
    values = [accuracy for _, _, accuracy, _ in rows]

    fig, ax = plt.subplots(figsize=(9, 7.5))
    bars = ax.barh(range(len(rows)), values, color=[colours[group] for *_, group in rows])
    for bar, value in zip(bars, values):
        ax.text(value + 0.0005, bar.get_y() + bar.get_height() / 2, f"{value:.4f}", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xlim(0.875, 0.942)  # every result lies in this band; a 0-1 axis would hide the differences
    ax.set_xlabel("test accuracy on the 10,000 Fashion-MNIST test images (best validation epoch)")
    ax.set_title("Chapter 4: test accuracy per model and recipe (seed 0)")
    ax.grid(axis="x", alpha=0.4)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[group]) for group in (ORIGINAL, TUNED)]
    ax.legend(handles, [ORIGINAL, TUNED], loc="upper right", fontsize=8)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=90)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the chart (default: {DEFAULT_OUTPUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    path = draw(args.output)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
