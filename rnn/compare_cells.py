"""Chapter: recurrent neural networks, SimpleRNN vs GRU vs LSTM on the same windows.

Back-propagation through time sends the error signal back through every step of the
window. In a plain (Simple) RNN that signal is multiplied by the recurrent weights and
the tanh slope once per step, so it usually shrinks geometrically: the far end of a long
window barely affects learning (the vanishing gradient). GRU and LSTM cells add gated,
mostly additive paths that let the signal survive longer.

This script trains the three cells with the same seed on the same (long) windows and
measures two things: test error, and how large d(prediction)/d(input) is at each step
back from the end of the window, before and after training.

Run ``python rnn/compare_cells.py --help`` for the flags.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` and `rnn` import from anywhere

from rnn import data, models  # noqa: E402
from utils import cli, runs  # noqa: E402
from utils.lazy import keras, lazy  # noqa: E402  (Keras loads on first use, after the flags are read)

np, pd = lazy("numpy"), lazy("pandas")
compare_plot = lazy("rnn.plots", "compare_plot")

CHAPTER = "rnn"
GRADIENT_WINDOWS = 256  # test windows the gradient sizes are averaged over


def gradient_by_lag(model: keras.Model, inputs: np.ndarray) -> np.ndarray:
    """Mean |d prediction / d input| per step, ordered by lag: entry 0 is the last step of
    the window (lag 1), entry window - 1 its first step."""
    grads = models.input_gradients(model, inputs[:GRADIENT_WINDOWS])  # (N, window, 1)
    return np.abs(grads).mean(axis=(0, 2))[::-1]


def compare(args, argv: list[str] | None = None) -> runs.RunResult:
    """Train each requested cell on the same windows; measure errors and gradient sizes."""
    data.check_lengths(args)
    series = data.load_series(args)
    window = args.window or 3 * series.season  # longer than forecast.py's default, on purpose
    windows = data.make_windows(series.values, window, series.horizon, args.val_fraction,
                                args.test_fraction)
    run = runs.Run(CHAPTER, "compare_cells", args, argv)
    test_inputs, _ = windows.arrays("test")
    verbose = not args.quiet
    if verbose:
        print(f"series {series.name}: {len(series.values)} values; windows of {window} steps, "
              f"{series.horizon} step(s) ahead; train/val/test windows "
              f"{windows.count('train')}/{windows.count('val')}/{windows.count('test')}, "
              f"each of shape ({window}, 1)\n")

    season_lag = min(series.season, window)
    rows, histories, curves, gradients = [], [], {}, {}
    actual = windows.actual("test")
    for cell in args.cells:
        keras.utils.set_random_seed(args.seed)  # every cell starts from the same seed
        model = models.build_model(cell, (window, 1), tuple(args.units))
        untrained = gradient_by_lag(model, test_inputs)
        if verbose:
            model.summary()
        history, seconds = models.train(
            model, windows, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
            learning_rate=args.learning_rate, patience=args.patience, verbose=verbose, label=cell)
        trained = gradient_by_lag(model, test_inputs)
        frame = runs.history_frame(history.history)
        histories.append(frame.assign(cell=cell))
        curves[cell] = (frame["epoch"].to_numpy(), frame["val_loss"].to_numpy())
        gradients[cell] = (untrained, trained)
        test_errors = models.errors(actual, models.forecast(model, windows, "test"))
        rows.append({
            "cell": cell, "params": model.count_params(), "epochs": len(frame),
            "seconds_per_epoch": seconds / len(frame),
            **{f"test_{k}": v for k, v in test_errors.items()},
            # How much of the lag-1 gradient is left one season back and at the window's far end.
            "grad_season_untrained": float(untrained[season_lag - 1] / untrained[0]),
            "grad_season_trained": float(trained[season_lag - 1] / trained[0]),
            "grad_far_untrained": float(untrained[-1] / untrained[0]),
            "grad_far_trained": float(trained[-1] / trained[0]),
        })
    baseline = models.errors(actual, models.seasonal_naive(windows, "test", series.season))
    rows.append({"cell": "seasonal_naive", "test_rmse": baseline["rmse"], "test_mae": baseline["mae"]})

    table = pd.DataFrame(rows)
    table.to_csv(run.path("results.csv"), index=False)
    compare_plot(curves, gradients, f"{series.name}: cells on {window}-step windows, "
                 f"{series.horizon} step(s) ahead", run.path("compare_cells.png"))
    history = pd.concat(histories, ignore_index=True)
    by_lag = {cell: [before.tolist(), after.tolist()] for cell, (before, after) in gradients.items()}
    return run.finish(history=history, metrics={f"{r['cell']}_test_rmse": r["test_rmse"] for r in rows},
                      results=rows, series=series.name, unit=series.unit, window=window,
                      horizon=series.horizon, season_lag=season_lag, gradients_by_lag=by_lag)


def format_table(rows: list[dict], window: int, season_lag: int) -> str:
    """One line per cell; the last two columns are gradient sizes relative to lag 1,
    before -> after training."""
    lines = [f"{'cell':15} {'params':>6} {'epochs':>6} {'s/epoch':>7} {'test RMSE':>9} {'test MAE':>9}  "
             + "  ".join(f"{f'grad lag {lag} / lag 1':>22}" for lag in dict.fromkeys((season_lag, window)))]
    for r in rows:
        if "params" not in r:
            lines.append(f"{r['cell']:15} {'':>6} {'':>6} {'':>7} {r['test_rmse']:9.4f} {r['test_mae']:9.4f}")
            continue
        lines.append(f"{r['cell']:15} {r['params']:6} {r['epochs']:6} {r['seconds_per_epoch']:7.2f} "
                     f"{r['test_rmse']:9.4f} {r['test_mae']:9.4f}  "
                     + "  ".join(f"{r[f'grad_{at}_untrained']:8.1e} -> {r[f'grad_{at}_trained']:8.1e}"
                                 for at in (["season"] if season_lag == window else ["season", "far"])))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(
        "Train SimpleRNN, GRU and LSTM on the same long windows and compare errors and gradients.",
        epochs=40, batch_size=32,
        epilog="example: python rnn/compare_cells.py --window 52 --cells simple_rnn lstm",
    )
    data.add_data_arguments(parser, window_help="past steps each network sees (None: three seasonal "
                                                "cycles, 156 weeks for co2)")
    net = parser.add_argument_group("networks")
    net.add_argument("--cells", choices=list(models.CELLS), nargs="+", default=list(models.CELLS),
                     help="cells to train, in this order")
    models.add_network_arguments(net)
    return data.one_line_errors(parser).parse_args(argv)


@cli.friendly_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    result = compare(args, argv)
    print(f"\ntest errors in {result.extra['unit']}, {result.extra['horizon']} step(s) ahead:")
    print(format_table(result.extra["results"], result.extra["window"], result.extra["season_lag"]))
    print("(grad: mean |d prediction / d input| that many steps back, relative to the last step; "
          "untrained -> trained)")
    print(f"\nrun folder: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
