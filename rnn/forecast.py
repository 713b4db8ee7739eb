"""Chapter: recurrent neural networks, forecasting a time series with an LSTM.

The default series is the weekly CO2 concentration measured at Mauna Loa (ships with
statsmodels, so nothing is downloaded). A window of recent weekly changes goes into an
LSTM, which predicts where the series will be ``--horizon`` steps later. Every forecast
is judged against two rules of thumb (the last value; the same week one year before) and
against a linear model reading the same window.

Run ``python rnn/forecast.py --help`` for the flags; every run leaves a folder under
``outputs/rnn/`` with run.json, history.csv, results.csv, the plots and model.keras.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` and `rnn` import from anywhere

from rnn import data, models  # noqa: E402
from utils import cli, plots, runs  # noqa: E402
from utils.lazy import keras, lazy  # noqa: E402  (Keras loads on first use, after the flags are read)

pd = lazy("pandas")
forecast_plot = lazy("rnn.plots", "forecast_plot")

CHAPTER = "rnn"


def describe_splits(series: data.Series, windows: data.Windows) -> None:
    """Print which stretch of time each split covers and the shape of its arrays."""
    print(f"{'split':6} {'forecast times':28} {'windows':>7}  inputs -> targets")
    for split in ("train", "val", "test"):
        times = series.index[windows.target_time(split)]
        count = windows.count(split)
        print(f"{split:6} {str(times[0])[:10] + ' .. ' + str(times[-1])[:10]:28} {count:7}  "
              f"({count}, {windows.window}, 1) -> ({count},)")


def results_table(rows: list[dict], reference: str = "seasonal_naive") -> str:
    """The test errors of every forecaster, with each RMSE relative to ``reference``."""
    ref = next(row["rmse"] for row in rows if row["model"] == reference)
    lines = [f"{'model':18} {'kind':9} {'RMSE':>9} {'MAE':>9}  RMSE vs {reference}"]
    for row in rows:
        change = f"{row['rmse'] / ref - 1:+.0%}" if row["model"] != reference else "-"
        lines.append(f"{row['model']:18} {row['kind']:9} {row['rmse']:9.4f} {row['mae']:9.4f}  {change:>8}")
    return "\n".join(lines)


def train_and_evaluate(args, argv: list[str] | None = None) -> runs.RunResult:
    """Load the series, train the network and the linear model, compare every forecaster."""
    data.check_lengths(args)
    keras.utils.set_random_seed(args.seed)
    series = data.load_series(args)
    window = args.window or 2 * series.season  # default: two seasonal cycles of history
    windows = data.make_windows(series.values, window, series.horizon, args.val_fraction,
                                args.test_fraction)
    model = models.build_model(args.cell, (window, 1), tuple(args.units))
    run = runs.Run(CHAPTER, model.name, args, argv)
    verbose = not args.quiet
    if verbose:
        gaps = f", {series.filled} gaps interpolated" if series.filled else ""
        print(f"series {series.name}: {series.description}\n{len(series.values)} values{gaps}; "
              f"season {series.season} steps; forecasting {series.horizon} step(s) ahead from the "
              f"last {window} changes\n")
        describe_splits(series, windows)
        model.summary()

    train_kwargs = dict(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                        learning_rate=args.learning_rate, patience=args.patience, verbose=verbose)
    history, fit_seconds = models.train(model, windows, label=args.cell, **train_kwargs)
    linear = models.build_model("linear", (window, 1))
    linear_history, linear_seconds = models.train(linear, windows, label="linear", **train_kwargs)

    actual = windows.actual("test")
    forecasts = {model.name: models.forecast(model, windows, "test"),
                 "linear": models.forecast(linear, windows, "test")}
    for name, baseline in models.BASELINES.items():
        forecasts[name] = baseline(windows, "test", series.season)
    rows = [{"model": name, "kind": "network" if i < 2 else "baseline", **models.errors(actual, predicted)}
            for i, (name, predicted) in enumerate(forecasts.items())]
    pd.DataFrame(rows).to_csv(run.path("results.csv"), index=False)

    frame = runs.history_frame(history.history)
    plots.save_standard_plots(frame, model.name, run.dir)
    times = series.index[windows.target_time("test")]
    forecast_plot(times, actual, forecasts, {row["model"]: row["rmse"] for row in rows},
                  f"{series.name}: test period, {series.horizon} step(s) ahead", series.unit,
                  run.path("forecast.png"))
    metrics = {"test_rmse": rows[0]["rmse"], "test_mae": rows[0]["mae"], "fit_seconds": fit_seconds,
               "epochs_run": len(frame), "params": model.count_params()}
    for row in rows[1:]:
        metrics.update({f"{row['model']}_rmse": row["rmse"], f"{row['model']}_mae": row["mae"]})
    return run.finish(
        model=model, history=frame, metrics=metrics, results=rows, dataset=series.description,
        series=series.name, unit=series.unit, values=len(series.values), window=window,
        horizon=series.horizon, season=series.season, gaps_filled=series.filled,
        split_windows={s: windows.count(s) for s in ("train", "val", "test")},
        linear_fit_seconds=round(linear_seconds, 3), linear_epochs_run=len(linear_history.epoch),
    )


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(
        "Forecast a time series with a recurrent network, next to simple baselines.",
        epochs=40, batch_size=32,
        epilog="examples:\n  python rnn/forecast.py --cell gru --units 64 32\n"
               "  python rnn/forecast.py --series sunspots\n"
               "  python rnn/forecast.py --csv meter.csv --column kwh --time-column timestamp",
    )
    data.add_data_arguments(parser, window_help="past steps the network sees (None: two seasonal "
                                                "cycles, 104 weeks for co2)")
    net = parser.add_argument_group("network")
    net.add_argument("--cell", choices=sorted(models.CELLS), default="lstm", help="recurrent layer type")
    models.add_network_arguments(net)
    return data.one_line_errors(parser).parse_args(argv)


@cli.friendly_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    result = train_and_evaluate(args, argv)
    extra = result.extra
    print(f"\ntest period: {extra['split_windows']['test']} forecasts, {extra['horizon']} step(s) "
          f"ahead, errors in {extra['unit']}")
    print(results_table(extra["results"]))
    m = result.metrics
    print(f"\n{result.history.shape[0]} epochs, fit() {m['fit_seconds']:.1f} s\nrun folder: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
