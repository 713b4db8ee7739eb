"""The churn table: reading, checking, splitting and encoding it.

``Churn_Modelling.csv`` holds one bank customer per row (10,000 rows, 14
columns). Ten columns describe the customer, ``Exited`` says whether they left
(1) or stayed (0), and three (``RowNumber``, ``CustomerId``, ``Surname``) only
identify the row, so the model never sees them.

Every check here raises :class:`ChurnDataError` before anything is written, so a
bad file ends the run with one line saying what to fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from utils import datasets
from utils.errors import ChurnDataError

TARGET = "Exited"
IDENTIFIERS = ("RowNumber", "CustomerId", "Surname")  # dropped: they name a row, they do not describe it
CATEGORICAL = ("Geography", "Gender")
NUMERIC = ("CreditScore", "Age", "Tenure", "Balance", "NumOfProducts", "HasCrCard",
           "IsActiveMember", "EstimatedSalary")
FEATURES = ("CreditScore", "Geography", "Gender", "Age", "Tenure", "Balance", "NumOfProducts",
            "HasCrCard", "IsActiveMember", "EstimatedSalary")  # the CSV's own order
SPLIT_SEED = 0  # fixed, so every --seed is scored on the same 2,000 test customers
#: Largest magnitude accepted in a numeric cell. Far beyond any balance or salary, but
#: small enough that the squares behind the standard deviation cannot overflow float64
#: (a cell of 1e300 would turn the whole column, and the loss, into NaN).
MAX_ABS = 1e100


def read_table(path: Path | str, *, need_target: bool = True, source: str | None = None) -> pd.DataFrame:
    """Read a churn CSV and check it; returns the frame with numeric columns as numbers."""
    source = source or str(path)
    try:
        # Only a blank cell counts as missing, so "n/a" or "NULL" is reported as written.
        # Read as text, so a message quotes a cell as written (1e400, not inf).
        frame = pd.read_csv(path, skipinitialspace=True, keep_default_na=False, na_values=[""], dtype=str)
    except pd.errors.EmptyDataError:
        raise ChurnDataError(f"{source} is empty: it needs a header line naming the columns "
                             f"{', '.join(FEATURES)} (and {TARGET} to train), then one customer "
                             "per line") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise ChurnDataError(f"{source} is not a readable CSV ({first_line}); save it as "
                             "comma-separated UTF-8 text") from None
    except OSError as err:
        raise ChurnDataError(f"cannot read {source}: {err.strerror or err}") from None
    return check_table(frame, need_target=need_target, source=source)


def check_table(frame: pd.DataFrame, *, need_target: bool = True, source: str = "the data") -> pd.DataFrame:
    """Check columns and values; numeric columns come back as numbers.

    Rows are counted from 1, the first customer after the header, which is
    line ``row + 1`` of a CSV file.
    """
    frame = frame.rename(columns=lambda c: str(c).strip())
    required = FEATURES + ((TARGET,) if need_target else ())
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ChurnDataError(f"{source} lacks the column(s) {', '.join(missing)}; a churn table needs "
                             f"{', '.join(required)}")
    if frame.empty:
        raise ChurnDataError(f"{source} has a header but no customers: add at least one row")
    frame = frame.copy()
    for column in NUMERIC + ((TARGET,) if need_target else ()):
        frame[column] = _as_numbers(frame[column], column, source)
    for column in CATEGORICAL:
        values = frame[column]
        blank = values.isna() | (values.astype(str).str.strip() == "")
        if blank.any():
            row = _row_number(frame, blank)
            raise ChurnDataError(f"{source}: row {row} has no {column}; fill it in or drop the row")
        frame[column] = values.astype(str).str.strip()
    if need_target:
        wrong = ~frame[TARGET].isin((0, 1))
        if wrong.any():
            row = _row_number(frame, wrong)
            raise ChurnDataError(f"{source}: {TARGET} must be 0 (stayed) or 1 (left), row {row} has "
                                 f"{frame.loc[wrong, TARGET].iloc[0]!r}")
        check_training_table(frame, source)
    return frame


def check_training_table(frame: pd.DataFrame, source: str = "the data") -> None:
    """What a table must have to train on: both outcomes, and two values in each category column."""
    outcomes = set(frame[TARGET].astype(int))
    if len(outcomes) < 2:
        (only,) = outcomes
        who = "nobody left (Exited is 0" if only == 0 else "everybody left (Exited is 1"
        raise ChurnDataError(f"{source}: {who} in all {len(frame):,} rows), so there is nothing to tell "
                             "apart and ROC AUC is undefined; the table needs customers who left and "
                             "customers who stayed")
    for column in CATEGORICAL:
        values = frame[column].unique()
        if len(values) < 2:
            raise ChurnDataError(f"{source}: column {column} holds the single value {values[0]!r} in all "
                                 f"{len(frame):,} rows (row 1 onwards), which tells the model nothing; "
                                 f"the table needs at least two different {column} values")


def _row_number(frame: pd.DataFrame, mask: pd.Series) -> int:
    """The first masked row, counted from 1 in the table as read (split frames keep
    the labels of the table they came from)."""
    position = int(np.flatnonzero(mask.to_numpy())[0])
    label = frame.index[position]
    return int(label) + 1 if pd.api.types.is_integer_dtype(frame.index) else position + 1


def _as_numbers(values: pd.Series, column: str, source: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna()
    if bad.any():
        row = _row_number(values.to_frame(), bad)
        raw = values[bad].iloc[0]
        what = "is empty" if pd.isna(raw) or not str(raw).strip() else f"holds {str(raw)!r}"
        raise ChurnDataError(f"{source}: column {column}, row {row} {what}, but {column} must be a "
                             "number; correct that cell or remove the row")
    numbers = numbers.astype("float64")
    huge = ~(numbers.abs() <= MAX_ABS)  # also catches inf, -inf and 1e400 (which reads as inf)
    if huge.any():
        row = _row_number(values.to_frame(), huge)
        raw = str(values[huge].iloc[0]).strip()
        what = ("which is infinite as a float64 number" if not np.isfinite(numbers[huge].iloc[0])
                else f"too large to scale (at most {MAX_ABS:g} in size)")
        raise ChurnDataError(f"{source}: column {column}, row {row} holds {raw!r}, {what}; correct that "
                             "cell or remove the row")
    return numbers


def load_table(data: Path | str | None = None) -> tuple[pd.DataFrame, Path]:
    """The churn table from ``--data`` or the dataset registry, checked."""
    path = datasets.locate("churn", explicit=data)
    return read_table(path), path


def split(frame: pd.DataFrame, test_size: float = 0.2, validation_size: float = 0.1,
          seed: int = SPLIT_SEED) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Stratified train / validation / test frames.

    ``test_size`` is a share of all rows, ``validation_size`` a share of what
    is left: 10,000 rows give 7,200 / 800 / 2,000, each with the same 20%
    share of leavers, so no split is luckier than another.
    """
    try:
        rest, test = train_test_split(frame, test_size=test_size, stratify=frame[TARGET],
                                      random_state=seed)
        train, validation = train_test_split(rest, test_size=validation_size,
                                             stratify=rest[TARGET], random_state=seed)
    except ValueError as err:
        counts = frame[TARGET].value_counts().to_dict()
        raise ChurnDataError(f"cannot split {len(frame)} rows into train, validation and test "
                             f"with both classes in each ({err}; class counts {counts}); use a "
                             "larger table, or --no-split") from None
    return train, validation, test


def make_preprocessor() -> ColumnTransformer:
    """The encoding, as one transformer fitted on training rows only.

    - Geography (France, Germany, Spain) becomes two 0/1 columns, Germany and
      Spain; France is the row where both are 0. A third column would always
      equal 1 minus the other two, which adds nothing a network can use and
      makes a linear model's weights ambiguous (the "dummy variable trap").
    - Gender becomes one 0/1 column (Male), the same drop-one rule.
    - Everything is then standard-scaled (mean 0, standard deviation 1 on the
      training rows), so Balance in the hundred thousands does not drown
      Tenure in single digits.
    Unused columns (identifiers, the target) are dropped. Output: 11 columns.
    """
    def one_hot():
        return make_pipeline(OneHotEncoder(drop="first", sparse_output=False, handle_unknown="error"),
                             StandardScaler())

    return ColumnTransformer(
        [("geography", one_hot(), ["Geography"]),
         ("gender", one_hot(), ["Gender"]),
         ("numeric", StandardScaler(), list(NUMERIC))],
        remainder="drop", verbose_feature_names_out=False,
    )


def check_known_categories(preprocessor: ColumnTransformer, frame: pd.DataFrame,
                           source: str = "the input") -> None:
    """Refuse a category the encoder never saw in training (e.g. Geography=Italy).

    Silently encoding it as all zeros would score an Italian customer as a
    French one; better to say so.
    """
    for name, column in (("geography", "Geography"), ("gender", "Gender")):
        encoder = preprocessor.named_transformers_[name][0]
        known = [str(v) for v in encoder.categories_[0]]
        unknown = ~frame[column].isin(known)
        if unknown.any():
            row = _row_number(frame, unknown)
            raise ChurnDataError(
                f"{source}: row {row} has {column}={frame.loc[unknown, column].iloc[0]!r}, which the "
                f"model never saw in training; it knows {', '.join(known)}"
            )


def features_and_target(preprocessor: ColumnTransformer, frame: pd.DataFrame, *, fit: bool = False,
                        source: str = "the data"):
    """Encoded features (rows, 11) float32 and targets (rows, 1) float32."""
    if fit:
        for column in CATEGORICAL:  # the split can leave a category column with one value
            if frame[column].nunique() < 2:
                raise ChurnDataError(f"{source}: the training rows hold only {column}="
                                     f"{frame[column].iloc[0]!r}; give a table with more customers of "
                                     f"each {column}, or use --no-split")
        x = preprocessor.fit_transform(frame)
    else:
        check_known_categories(preprocessor, frame, source)
        x = preprocessor.transform(frame)
    x = np.asarray(x, dtype="float32")
    if not np.isfinite(x).all():  # should not happen after the checks above; say where if it does
        row, col = (int(v[0]) for v in np.nonzero(~np.isfinite(x)))
        name = preprocessor.get_feature_names_out()[col]
        at = _row_number(frame, pd.Series(np.arange(len(frame)) == row))
        raise ChurnDataError(f"{source}: encoding row {at} gives a non-finite {name}; check that row")
    y = frame[TARGET].to_numpy("float32").reshape(-1, 1)
    return x, y
