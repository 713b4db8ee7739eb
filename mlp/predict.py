"""Scoring new customers with a trained run: ``--predict CSV`` or ``--predict key=value ...``.

The run folder holds the model (``model.keras``) and the fitted transformation
(``preprocess.joblib``); new customers must go through exactly the
transformation the model was trained with (same dummy columns, same means and
standard deviations), so both are loaded together.
"""

from __future__ import annotations

from pathlib import Path

from utils.errors import ChurnDataError, TutorialError
from utils.lazy import lazy

np, pd = lazy("numpy"), lazy("pandas")
data = lazy("mlp.data")

PREPROCESSOR_FILE = "preprocess.joblib"
EXAMPLE = ("CreditScore=600 Geography=France Gender=Male Age=40 Tenure=3 Balance=60000 "
           "NumOfProducts=2 HasCrCard=1 IsActiveMember=1 EstimatedSalary=50000")


def customers_from_args(values: list[str]) -> tuple[pd.DataFrame, str]:
    """The ``--predict`` values as a checked frame, and a name for messages."""
    if len(values) == 1 and "=" not in values[0]:
        path = Path(values[0]).expanduser()
        if not path.is_file():
            raise TutorialError(f"--predict {values[0]}: no such file; give a CSV of customers "
                                f"or key=value pairs, e.g. --predict {EXAMPLE}")
        return data.read_table(path, need_target=False), str(path)
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise TutorialError(f"--predict: {item!r} is not key=value; e.g. --predict {EXAMPLE}")
        if key not in data.FEATURES:
            raise TutorialError(f"--predict: unknown key {key!r}; the keys are "
                                f"{', '.join(data.FEATURES)}")
        if key in pairs:
            raise TutorialError(f"--predict: {key} is given twice")
        pairs[key] = value
    missing = [k for k in data.FEATURES if k not in pairs]
    if missing:
        raise TutorialError(f"--predict: missing {', '.join(missing)}; one customer needs all of "
                            f"{', '.join(data.FEATURES)}")
    return data.check_table(pd.DataFrame([pairs]), need_target=False, source="--predict"), "--predict"


def latest_run(chapter_dir: Path) -> Path:
    """The newest run folder that holds both a model and its transformation."""
    candidates = [d for d in Path(chapter_dir).glob("*/")
                  if (d / "model.keras").is_file() and (d / PREPROCESSOR_FILE).is_file()]
    if not candidates:
        raise TutorialError(f"no trained churn model in {chapter_dir}: train one first with "
                            "`python mlp/mlp.py`, or name a run folder with --model")
    return max(candidates, key=lambda d: (d / "model.keras").stat().st_mtime)


def load_run(run_dir: Path):
    """(keras model, fitted ColumnTransformer) from a run folder."""
    import joblib
    import keras

    run_dir = Path(run_dir)
    for name in ("model.keras", PREPROCESSOR_FILE):
        if not (run_dir / name).is_file():
            raise TutorialError(f"{run_dir} holds no {name}: --model must name a folder written by "
                                "`python mlp/mlp.py` (under outputs/mlp/)")
    return keras.saving.load_model(run_dir / "model.keras"), joblib.load(run_dir / PREPROCESSOR_FILE)


def predict(customers: pd.DataFrame, model, preprocessor, source: str = "the input") -> np.ndarray:
    """Probability of leaving for each customer, shape (rows,)."""
    data.check_known_categories(preprocessor, customers, source)
    try:
        x = np.asarray(preprocessor.transform(customers), dtype="float32")
    except ValueError as err:  # anything the checks above did not foresee
        raise ChurnDataError(f"{source}: cannot encode these customers ({err})") from None
    return model.predict(x, verbose=0, batch_size=1024).ravel()


def format_predictions(customers: pd.DataFrame, probability: np.ndarray, threshold: float = 0.5) -> str:
    ids = [c for c in ("CustomerId", "Surname") if c in customers.columns]
    header = f"{'row':>5}  " + "".join(f"{c:<12}" for c in ids) + "P(leave)  verdict"
    lines = [header]
    for row, (p, (_, customer)) in enumerate(zip(probability, customers.iterrows()), start=1):
        shown = "".join(f"{str(customer[c]):<12}" for c in ids)
        lines.append(f"{row:>5}  {shown}{p:8.3f}  {'leaves' if p > threshold else 'stays'}")
    return "\n".join(lines)
