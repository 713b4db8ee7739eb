"""Scoring new customers with a trained run: ``--predict CSV`` or ``--predict key=value ...``.

The run folder holds the model (``model.keras``) and the fitted transformation
(``preprocess.json``); new customers must go through exactly the
transformation the model was trained with (same dummy columns, same means and
standard deviations), so both are loaded together.

The transformation is kept as plain JSON (the categories each encoder knows,
each scaler's means and standard deviations) and rebuilt into scikit-learn
objects on loading. A pickle (what ``joblib.dump`` writes) would be shorter to
code, but loading a pickle runs whatever code the file holds, so a run folder
from someone else could run anything; JSON holds only numbers and names.
"""

from __future__ import annotations

import json
from pathlib import Path

from utils import model_files
from utils.errors import ChurnDataError, ModelLoadError, TutorialError
from utils.lazy import lazy

np, pd = lazy("numpy"), lazy("pandas")
data = lazy("mlp.data")

PREPROCESSOR_FILE = "preprocess.json"
OLD_PREPROCESSOR_FILE = "preprocess.joblib"  # a pickle, written by earlier versions; never loaded
FORMAT = "churn-preprocess/1"
SCALED = ("geography", "gender", "numeric")  # the transformers of data.make_preprocessor, in order
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


def preprocessor_record(preprocessor) -> dict:
    """The fitted transformation as JSON-ready numbers and names."""
    named = preprocessor.named_transformers_
    return {
        "format": FORMAT,
        "categories": {column: [str(v) for v in named[column.lower()][0].categories_[0]]
                       for column in data.CATEGORICAL},
        "numeric_columns": list(data.NUMERIC),
        "scalers": {name: {"mean": (named[name][-1] if name != "numeric" else named[name]).mean_.tolist(),
                           "scale": (named[name][-1] if name != "numeric" else named[name]).scale_.tolist()}
                    for name in SCALED},
        "features": [str(f) for f in preprocessor.get_feature_names_out()],
    }


def save_preprocessor(preprocessor, path: Path) -> Path:
    Path(path).write_text(json.dumps(preprocessor_record(preprocessor), indent=2) + "\n")
    return Path(path)


def _damaged(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"{path} is damaged ({what}): train again with `python mlp/mlp.py`, which "
                          "writes a new run folder")


def rebuild_preprocessor(record, path: Path):
    """A fitted ColumnTransformer equal to the one :func:`preprocessor_record` described.

    The encoders learn their categories from a few made-up rows holding each
    category once; the scalers then get the saved means and deviations.
    """
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _damaged(path, f"not a {FORMAT} record")
    try:
        categories = {c: [str(v) for v in record["categories"][c]] for c in data.CATEGORICAL}
        scalers = {name: (np.asarray(record["scalers"][name]["mean"], dtype="float64"),
                          np.asarray(record["scalers"][name]["scale"], dtype="float64")) for name in SCALED}
        if list(record["numeric_columns"]) != list(data.NUMERIC):
            raise ValueError("other numeric columns")
    except (KeyError, TypeError, ValueError) as err:
        raise _damaged(path, f"{type(err).__name__}: {err}") from None
    widths = {"geography": len(categories["Geography"]) - 1, "gender": len(categories["Gender"]) - 1,
              "numeric": len(data.NUMERIC)}
    for name, (mean, scale) in scalers.items():
        if mean.shape != (widths[name],) or scale.shape != (widths[name],) or \
                not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise _damaged(path, f"the {name} scaler does not fit its categories or is not finite")
    if any(len(v) < 2 or len(set(v)) != len(v) for v in categories.values()):
        raise _damaged(path, "each category column needs two or more distinct values")
    rows = max(len(v) for v in categories.values())
    frame = pd.DataFrame({c: [categories[c][i % len(categories[c])] for i in range(rows)]
                          for c in data.CATEGORICAL})
    for column in data.NUMERIC:
        frame[column] = 0.0
    preprocessor = data.make_preprocessor().fit(frame)
    named = preprocessor.named_transformers_
    for name, (mean, scale) in scalers.items():
        scaler = named[name][-1] if name != "numeric" else named[name]
        scaler.mean_, scaler.scale_, scaler.var_ = mean, scale, scale ** 2
    for column in data.CATEGORICAL:
        if [str(v) for v in named[column.lower()][0].categories_[0]] != categories[column]:
            raise _damaged(path, f"the {column} categories are not in sorted order")
    return preprocessor


def load_preprocessor(path: Path):
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except OSError as err:
        raise ModelLoadError(f"cannot read {path}: {err.strerror or err}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise _damaged(path, f"not valid JSON: {' '.join(str(err).split())[:80]}") from None
    return rebuild_preprocessor(record, path)


def _has_run(folder: Path) -> bool:
    return (folder / "model.keras").is_file() and (
        (folder / PREPROCESSOR_FILE).is_file() or (folder / OLD_PREPROCESSOR_FILE).is_file())


def latest_run(chapter_dir: Path) -> Path:
    """The newest run folder that holds both a model and its transformation."""
    candidates = [d for d in Path(chapter_dir).glob("*/") if _has_run(d)]
    if not candidates:
        raise TutorialError(f"no trained churn model in {chapter_dir}: train one first with "
                            "`python mlp/mlp.py`, or name a run folder with --model")
    return max(candidates, key=lambda d: (d / "model.keras").stat().st_mtime)


def load_run(run_dir: Path):
    """(keras model, fitted ColumnTransformer) from a run folder."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise TutorialError(f"--model {run_dir} is a file: give the run folder that holds it (model.keras "
                            "and preprocess.json, as `python mlp/mlp.py` writes them)")
    if not run_dir.is_dir():
        raise TutorialError(f"--model {run_dir}: no such folder; give a run folder written by "
                            "`python mlp/mlp.py` (under outputs/mlp/)")
    if not (run_dir / PREPROCESSOR_FILE).is_file() and (run_dir / OLD_PREPROCESSOR_FILE).is_file():
        raise ModelLoadError(f"{run_dir / OLD_PREPROCESSOR_FILE} is a pickle written by an earlier version "
                             "of this chapter, and loading a pickle can run any code, so it is not "
                             "loaded; re-run training (`python mlp/mlp.py`) to get preprocess.json")
    for name in ("model.keras", PREPROCESSOR_FILE):
        if not (run_dir / name).is_file():
            raise TutorialError(f"{run_dir} holds no {name}: --model must name a folder written by "
                                "`python mlp/mlp.py` (under outputs/mlp/)")
    preprocessor = load_preprocessor(run_dir / PREPROCESSOR_FILE)  # cheap, and before Keras starts
    model = model_files.load_model_file(run_dir / "model.keras", compile=False,
                                        advice="a churn model has no Lambda layer: train again")
    width = len(preprocessor.get_feature_names_out())
    if model_files.input_count(model) != 1 or model_files.output_count(model) != 1 or \
            tuple(model.input_shape[1:]) != (width,) or tuple(model.output_shape[1:]) != (1,):
        raise ModelLoadError(f"{run_dir / 'model.keras'} takes {model.input_shape} and gives "
                             f"{model.output_shape}, but a churn model takes (None, {width}) and gives "
                             "(None, 1): --model must name a folder written by `python mlp/mlp.py`")
    return model, preprocessor


def predict(customers: pd.DataFrame, model, preprocessor, source: str = "the input") -> np.ndarray:
    """Probability of leaving for each customer, shape (rows,)."""
    data.check_known_categories(preprocessor, customers, source)
    try:
        x = np.asarray(preprocessor.transform(customers), dtype="float32")
    except ValueError as err:  # anything the checks above did not foresee
        raise ChurnDataError(f"{source}: cannot encode these customers ({err})") from None
    # predict_on_batch, chunk by chunk: unlike predict() it answers every row even when
    # KERAS_MAX_STEPS_PER_EPOCH shortens Keras's loops.
    chunks = [np.asarray(model.predict_on_batch(x[i:i + 1024])) for i in range(0, len(x), 1024)]
    return np.concatenate(chunks).ravel() if chunks else np.zeros(0, dtype="float32")


def format_predictions(customers: pd.DataFrame, probability: np.ndarray, threshold: float = 0.5) -> str:
    ids = [c for c in ("CustomerId", "Surname") if c in customers.columns]
    header = f"{'row':>5}  " + "".join(f"{c:<12}" for c in ids) + "P(leave)  verdict"
    lines = [header]
    for row, (p, (_, customer)) in enumerate(zip(probability, customers.iterrows()), start=1):
        shown = "".join(f"{str(customer[c]):<12}" for c in ids)
        lines.append(f"{row:>5}  {shown}{p:8.3f}  {'leaves' if p > threshold else 'stays'}")
    return "\n".join(lines)
