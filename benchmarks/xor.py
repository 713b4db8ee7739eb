"""XOR: the naive Keras 3 port against the chapter's training, in one process.

Both make the same 2,000 weight updates (500 epochs x 4 samples, batch size 1)
with adam and binary cross-entropy. Runs alternate (naive, tuned, naive, ...)
so that a busy machine slows both alike; the report gives medians and their
ratio, then how many seeds each variant solves.

    python benchmarks/xor.py [--repeats 3] [--seeds 20]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import cli, runs  # noqa: E402
from utils.lazy import keras  # noqa: E402  (Keras loads on first use, after the flags are read)
from xor import xor  # noqa: E402


def seed_model() -> keras.Model:
    """The original tutorial's network exactly as it was written, Keras's default initialisers."""
    return keras.Sequential([
        keras.Input(shape=(2,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(4, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def naive(seed: int, epochs: int, callbacks=()) -> tuple[float, float]:
    """``model.fit(x, y, batch_size=1, epochs=500)``, as a first port would.

    ``callbacks`` lets benchmarks/run.py time each epoch; none are used here."""
    keras.utils.set_random_seed(seed)
    x, y = xor.load_data()
    model = seed_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=1, epochs=epochs, verbose=0, callbacks=list(callbacks))
    seconds = time.perf_counter() - start
    return seconds, float(model.evaluate(x, y, verbose=0)[1])


def tuned(seed: int, epochs: int, model_fn=xor.build_model, callbacks=()) -> tuple[float, float]:
    """The chapter's ``fit``: one input pipeline, 10 passes per execution."""
    keras.utils.set_random_seed(seed)
    x, y = xor.load_data()
    model = model_fn()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    xor.fit(model, x, y, epochs=epochs, batch_size=1, log_every=10, seed=seed, callbacks=callbacks)
    seconds = time.perf_counter() - start
    return seconds, float(model.evaluate(x, y, verbose=0)[1])


def main(argv: list[str] | None = None) -> int:
    parser = cli.make_parser(__doc__.splitlines()[0], epochs=500, batch_size=1)
    parser.add_argument("--repeats", type=cli.positive_int, default=3,
                        help="timed runs of each variant; the table shows medians")
    parser.add_argument("--seeds", type=int, default=20,
                        help="seeds 0..N-1 trained to count how often each model solves XOR "
                             "(0 skips this part)")
    args = parser.parse_args(argv)
    run = runs.Run("benchmarks", "xor", args, argv)
    times: dict[str, list[float]] = {"naive": [], "tuned": []}
    accuracy: dict[str, list[float]] = {"naive": [], "tuned": []}
    for repeat in range(args.repeats):
        for name, fn in (("naive", naive), ("tuned", tuned)):
            seconds, acc = fn(args.seed + repeat, args.epochs)
            times[name].append(seconds)
            accuracy[name].append(acc)
            print(f"repeat {repeat + 1}/{args.repeats} {name}: fit {seconds:.2f} s, "
                  f"accuracy {acc:.0%}", flush=True)
    naive_s, tuned_s = statistics.median(times["naive"]), statistics.median(times["tuned"])
    device = runs.device_info()
    lines = [
        f"XOR, {args.epochs} epochs, batch size 1, {keras.backend.backend()} backend, "
        f"{device['cpu_count']} x {device['cpu']}",
        "",
        "| fit() variant | median seconds | runs | accuracy |",
        "|---|---|---|---|",
        f"| naive port: `fit(x, y, batch_size=1, epochs={args.epochs})` | {naive_s:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times['naive'])} | "
        f"{', '.join(f'{a:.0%}' for a in accuracy['naive'])} |",
        f"| chapter: tf.data stream, 10 passes per execution | {tuned_s:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times['tuned'])} | "
        f"{', '.join(f'{a:.0%}' for a in accuracy['tuned'])} |",
        "",
        f"speed-up (ratio of medians): **{naive_s / tuned_s:.1f}x**",
    ]
    if args.seeds > 0:
        lines += ["", "| model | seeds solved (100% accuracy) |", "|---|---|"]
        for label, model_fn in (("original network, biases start at 0", seed_model),
                                ("chapter's network, hidden biases start at 0.1", xor.build_model)):
            solved = [s for s in range(args.seeds) if tuned(s, args.epochs, model_fn)[1] == 1.0]
            failed = sorted(set(range(args.seeds)) - set(solved))
            lines.append(f"| {label} | {len(solved)}/{args.seeds} (failed: "
                         f"{', '.join(map(str, failed)) or 'none'}) |")
    report = "\n".join(lines)
    print("\n" + report)
    run.path("results.md").write_text(report + "\n")
    run.finish(metrics={"naive_median_s": naive_s, "tuned_median_s": tuned_s,
                        "speedup": naive_s / tuned_s}, times=times, accuracy=accuracy)
    print(f"\nwritten to {run.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
