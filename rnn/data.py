"""The series the chapter forecasts, and the windows cut from it.

A series is a 1-D array of numbers in time order. It comes either from a data set that
ships inside statsmodels (so the chapter runs offline) or from the learner's own CSV file.

The network never sees raw levels. It sees the *changes* from one step to the next and
predicts how far the series will move over the next ``horizon`` steps. The test period of
a trending series (CO2 keeps rising) lies above every value seen in training; a network fed
levels would have to extrapolate outside its training range, which tanh units cannot do.
Changes stay in the same range throughout, and adding the predicted change to the last
known value gives the forecast in the original units.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

from utils import cli
from utils.errors import TutorialError
from utils.lazy import lazy

np, pd = lazy("numpy"), lazy("pandas")  # imported on first use: --help stays fast


class SeriesError(TutorialError):
    """The series cannot be read, or is too short for the requested windows."""


#: Largest magnitude accepted in a CSV cell: beyond it the squares behind a standard
#: deviation overflow float64 and every result turns into NaN.
MAX_ABS = 1e100


# --------------------------------------------------------------------------- the series


@dataclass(frozen=True)
class SeriesSpec:
    """A packaged series: how to load it and the facts the baselines need."""

    description: str
    season: int  # steps per seasonal cycle, for the seasonal naive baseline
    horizon: int  # default number of steps ahead to forecast
    unit: str
    loader: str  # name of the loading function below


@dataclass
class Series:
    name: str
    values: np.ndarray  # shape (n,), float64, original units
    index: pd.Index  # time stamps (or row numbers) of the values, for plots
    season: int | None
    horizon: int
    unit: str
    description: str
    filled: int = 0  # gaps filled by linear interpolation


def _co2() -> pd.Series:
    from statsmodels.datasets import co2

    return co2.load_pandas().data["co2"]


def _sunspots() -> pd.Series:
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    return pd.Series(frame["SUNACTIVITY"].to_numpy(), index=frame["YEAR"].astype(int), name="sunspots")


def _elec_equip() -> pd.Series:
    from statsmodels.datasets import elec_equip

    frame = elec_equip.load_pandas().data
    return frame.iloc[:, 0].rename("elec_equip")


def _elnino() -> pd.Series:
    from statsmodels.datasets import elnino

    # One row per year, one column per month: stack the months into one long series.
    frame = elnino.load_pandas().data.set_index("YEAR")
    stacked = frame.stack()
    dates = pd.to_datetime([f"{int(year)}-{month}-01" for year, month in stacked.index], format="%Y-%b-%d")
    return pd.Series(stacked.to_numpy(), index=dates, name="elnino")


SERIES = {
    "co2": SeriesSpec("weekly atmospheric CO2 at Mauna Loa, 1958-2001 (ppm)", 52, 4, "ppm", "_co2"),
    "sunspots": SeriesSpec("yearly mean sunspot number, 1700-2008", 11, 1, "sunspots", "_sunspots"),
    "elec_equip": SeriesSpec("monthly EU new orders, electrical equipment (index), 1995-2016", 12, 1,
                             "index points", "_elec_equip"),
    "elnino": SeriesSpec("monthly Pacific sea surface temperature (El Nino), 1950-2010", 12, 1,
                         "deg C", "_elnino"),
}


def _fill_gaps(values: pd.Series) -> tuple[pd.Series, int]:
    """Interpolate missing values linearly; leading/trailing gaps are dropped."""
    missing = int(values.isna().sum())
    return values.interpolate(method="linear", limit_area="inside").dropna(), missing


def load_packaged(name: str, season: int | None = None, horizon: int | None = None) -> Series:
    spec = SERIES[name]
    raw = globals()[spec.loader]().astype("float64")
    values, filled = _fill_gaps(raw)
    return Series(name, values.to_numpy(), values.index, season or spec.season,
                  horizon or spec.horizon, spec.unit, spec.description, filled)


def read_csv_series(path: Path, column: str, time_column: str | None = None) -> tuple[pd.Series, int]:
    """One numeric column of a CSV file, in time order, gaps interpolated.

    Raises :class:`SeriesError` for a missing file or column and for cells that
    hold text instead of numbers; empty cells count as gaps, not errors.
    """
    path = Path(path)
    if path.is_dir():
        raise SeriesError(f"--csv {path} is a folder: give the CSV file in it")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise SeriesError(f"no file {path}: check the path given to --csv") from None
    except OSError as err:
        raise SeriesError(f"cannot read {path}: {err.strerror or err}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SeriesError(f"{path} is not a readable CSV file ({err}); save it as comma-separated text") \
            from None
    for flag, name in (("--column", column), ("--time-column", time_column)):
        if name is not None and name not in frame.columns:
            raise SeriesError(f"{path} has no column {name!r} (its columns: {', '.join(frame.columns)}); "
                              f"pass one of them with {flag}")
    text = frame[column].str.strip()
    numbers = pd.to_numeric(text.replace("", None), errors="coerce")
    bad = numbers.isna() & (text != "")
    if bad.any():
        row = int(bad.idxmax())
        raise SeriesError(
            f"column {column!r} of {path} holds {int(bad.sum())} non-numeric value(s), the first "
            f"{text[row]!r} on data row {row + 1}; fix or empty those cells (empty cells are interpolated)")
    huge = numbers.notna() & ~(numbers.abs() <= MAX_ABS)  # inf, -inf, 1e400 (read as inf), 1e300
    if huge.any():
        row = int(huge.idxmax())
        what = "is infinite as a float64 number" if not np.isfinite(numbers[row]) else \
            f"is too large to forecast with (at most {MAX_ABS:g} in size)"
        raise SeriesError(f"column {column!r} of {path}: data row {row + 1} holds {text[row]!r}, which "
                          f"{what}; fix or empty that cell")
    if time_column is not None:
        times = pd.to_datetime(frame[time_column], errors="coerce")
        if times.isna().any():
            row = int(times.isna().idxmax())
            raise SeriesError(f"column {time_column!r} of {path} has a value that is not a date or time, "
                              f"{frame[time_column][row]!r} on data row {row + 1}; fix it or leave out "
                              "--time-column to use the rows in file order")
        numbers.index = pd.DatetimeIndex(times)
        numbers = numbers.sort_index()  # the windows assume time order, whatever the file's order
    return _fill_gaps(numbers.astype("float64"))


def infer_season(index: pd.Index) -> int | None:
    """Steps per natural cycle, guessed from the spacing of the time stamps."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 3:
        return None
    try:
        freq = pd.infer_freq(index)
    except (TypeError, ValueError):
        return None
    if freq is None:
        return None
    code = freq.split("-")[0].lstrip("0123456789").upper()
    # hourly -> one day, daily -> one week, weekly -> one year, monthly -> one year, ...
    cycles = {"H": 24, "D": 7, "B": 5, "W": 52, "MS": 12, "M": 12, "ME": 12, "QS": 4, "Q": 4, "QE": 4}
    return cycles.get(code)


def load_series(args) -> Series:
    """The series the flags ask for: ``--csv`` if given, else the packaged ``--series``."""
    if args.csv is None:
        return load_packaged(args.series, args.season, args.horizon)
    if args.column is None:
        raise SeriesError("--csv needs --column NAME: the column holding the numbers to forecast")
    values, filled = read_csv_series(args.csv, args.column, args.time_column)
    if len(values) < 3:
        raise SeriesError(f"column {args.column!r} of {args.csv} has {len(values)} number(s); a series to "
                          "forecast needs many more rows (at least window + horizon + 1)")
    if values.nunique() == 1:
        raise SeriesError(f"column {args.column!r} of {args.csv} holds the same value ({values.iloc[0]:g}) "
                          f"in all {len(values)} rows: there is nothing to forecast, and every error "
                          "would be 0; give a column that changes")
    season = args.season or infer_season(values.index)
    if season is None:
        raise SeriesError(f"cannot tell the seasonal cycle of {args.csv}: pass --season N (steps per "
                          "cycle, e.g. 24 for hourly data with a daily rhythm, 7 for daily, 12 for monthly)")
    return Series(f"{Path(args.csv).stem}:{args.column}", values.to_numpy(), values.index, season,
                  args.horizon or 1, "units of " + args.column, f"column {args.column!r} of {args.csv}",
                  filled)


# -------------------------------------------------------------------------- the windows


@dataclass
class Scaler:
    """Standardise with a mean and spread measured on the training part only."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        std = float(np.std(values))
        return cls(float(np.mean(values)), std if std > 0 else 1.0)

    def transform(self, values):
        return (np.asarray(values) - self.mean) / self.std

    def inverse(self, values):
        return np.asarray(values) * self.std + self.mean


@dataclass
class Windows:
    """Every window of the series, and which of them belong to which split.

    Window ``j`` shows the network the ``window`` changes ``features[j : j + window]``,
    the last of which leads to time ``t = j + window``. Its target is the change
    ``values[t + horizon] - values[t]``, scaled. A window belongs to the split that
    holds its *target* time, so no training target comes from validation or test time;
    the inputs of the first validation and test windows reach back into the preceding
    split, which is fair: at forecast time those values are already known.
    """

    values: np.ndarray  # (n,) original units
    features: np.ndarray  # (n - 1, 1) float32: scaled changes, features[j] = change into time j + 1
    targets: np.ndarray  # (n - window - horizon,) float32: scaled change over the horizon, per window
    window: int
    horizon: int
    bounds: dict[str, tuple[int, int]]  # split -> range of window numbers j
    train_end: int  # values[:train_end] is the training part
    val_end: int
    input_scaler: Scaler
    target_scaler: Scaler
    cache: dict = field(default_factory=dict, repr=False)

    def count(self, split: str) -> int:
        start, stop = self.bounds[split]
        return stop - start

    def last_time(self, split: str) -> np.ndarray:
        """Index of the last known value of each window of ``split``."""
        start, stop = self.bounds[split]
        return np.arange(start, stop) + self.window

    def target_time(self, split: str) -> np.ndarray:
        return self.last_time(split) + self.horizon

    def actual(self, split: str) -> np.ndarray:
        """The true values being forecast, original units."""
        return self.values[self.target_time(split)]

    def to_units(self, split: str, scaled_prediction) -> np.ndarray:
        """A network's scaled predicted change -> forecast in original units."""
        change = self.target_scaler.inverse(np.asarray(scaled_prediction).reshape(-1))
        return self.values[self.last_time(split)] + change

    def dataset(self, split: str, batch_size: int, shuffle: bool = False, seed: int | None = None):
        """Batches of (inputs (batch, window, 1), targets (batch,)) for ``fit``/``predict``."""
        import keras

        start, stop = self.bounds[split]
        # Slicing makes window number j of the split start at features[start + j], with
        # target targets[start + j]; the slice holds exactly stop - start windows.
        return keras.utils.timeseries_dataset_from_array(
            self.features[start:stop + self.window - 1], self.targets[start:stop],
            sequence_length=self.window, batch_size=batch_size, shuffle=shuffle, seed=seed)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole split as NumPy arrays: inputs (N, window, 1), targets (N,)."""
        if split not in self.cache:
            batches = list(self.dataset(split, batch_size=1024).as_numpy_iterator())
            self.cache[split] = (np.concatenate([b[0] for b in batches]),
                                 np.concatenate([b[1] for b in batches]))
        return self.cache[split]


def make_windows(values: np.ndarray, window: int, horizon: int, val_fraction: float = 0.15,
                 test_fraction: float = 0.15) -> Windows:
    """Cut a series into windows and split them chronologically.

    The first ``1 - val_fraction - test_fraction`` of the values are the training part;
    both scalers are fitted on it alone.
    """
    values = np.asarray(values, dtype="float64").reshape(-1)
    n = len(values)
    if window < 1 or horizon < 1:
        raise SeriesError(f"--window and --horizon must be at least 1 (got {window} and {horizon})")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SeriesError("--val-fraction and --test-fraction must be between 0 and 1 and leave room "
                          "for training data")
    if n < window + horizon + 1:
        raise SeriesError(
            f"the series has {n} values, fewer than window + horizon + 1 = {window + horizon + 1} "
            "that a single window needs; pass a smaller --window or --horizon, or a longer series")
    train_end = round(n * (1 - val_fraction - test_fraction))
    val_end = round(n * (1 - test_fraction))
    first_target = window + horizon  # time of the earliest target any window can have
    # Window j has its target at time j + window + horizon; group windows by that time.
    bounds = {"train": (0, train_end - first_target),
              "val": (max(train_end - first_target, 0), val_end - first_target),
              "test": (max(val_end - first_target, 0), n - first_target)}
    short = [split for split, (start, stop) in bounds.items() if stop - start < 1]
    if short:
        need = math.ceil((first_target + 1) / (1 - val_fraction - test_fraction))
        raise SeriesError(
            f"the series has {n} values: too short to give every split a window of {window} steps "
            f"plus a {horizon}-step horizon ({', '.join(short)} would be empty; about {need} values "
            "are needed); pass a smaller --window or --horizon, or a longer series")
    changes = np.diff(values)  # changes[j] = values[j + 1] - values[j]
    input_scaler = Scaler.fit(changes[:train_end - 1])  # only changes within the training part
    raw_targets = values[first_target:] - values[window:n - horizon]
    target_scaler = Scaler.fit(raw_targets[slice(*bounds["train"])])
    return Windows(values, input_scaler.transform(changes).astype("float32").reshape(-1, 1),
                   target_scaler.transform(raw_targets).astype("float32"), window, horizon, bounds,
                   train_end, val_end, input_scaler, target_scaler)


# ------------------------------------------------------------------------- shared flags


def add_data_arguments(parser: argparse.ArgumentParser, window_help: str) -> None:
    group = parser.add_argument_group("data")
    source = group.add_mutually_exclusive_group()
    source.add_argument("--series", choices=sorted(SERIES), default="co2",
                        help="packaged series: " + "; ".join(f"{k}: {v.description}"
                                                             for k, v in SERIES.items()))
    source.add_argument("--csv", type=Path, default=None, metavar="PATH",
                        help="your own series instead: a CSV file (needs --column)")
    group.add_argument("--column", default=None, metavar="NAME", help="CSV column holding the numbers")
    group.add_argument("--time-column", default=None, metavar="NAME",
                       help="CSV column of dates/times: rows are sorted by it and the season is guessed "
                            "from its spacing; without it the rows are used in file order")
    group.add_argument("--season", type=int, default=None, metavar="STEPS",
                       help="steps per seasonal cycle for the seasonal naive baseline (None: the "
                            "series' own, e.g. 52 for weekly co2, or guessed from --time-column)")
    group.add_argument("--window", type=int, default=None, metavar="STEPS", help=window_help)
    group.add_argument("--horizon", type=int, default=None, metavar="STEPS",
                       help="how many steps ahead to forecast (None: the series' own, 4 weeks for "
                            "co2, 1 otherwise)")
    group.add_argument("--val-fraction", type=cli.positive_float, default=0.15,
                       help="share of the series, after the training part, used for validation")
    group.add_argument("--test-fraction", type=cli.positive_float, default=0.15,
                       help="share at the end of the series held out for the final test")


def check_lengths(args) -> None:
    """Reject a zero or negative --window/--horizon/--season with a one-line error.

    These are plain ``int`` flags rather than argparse-validated ones so that the
    message names the fix, goes through the chapter's single error path, and fits on
    one line.
    """
    for flag in ("window", "horizon", "season"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise SeriesError(f"--{flag} must be at least 1 step (got {value})")


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make argparse report a bad flag as a :class:`TutorialError` (one line, exit 2)
    instead of printing the whole usage block."""

    def error(message: str):
        raise TutorialError(f"{message} (see {parser.prog} --help)")

    parser.error = error
    return parser
