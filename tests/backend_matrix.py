"""Every chapter on one Keras backend, briefly, in one process: the data behind tests/test_backends.py.

The backend is fixed when Keras is first imported, so each backend needs its own process;
inside it every chapter runs in turn, in-process, by calling its script's ``main(argv)``
with tiny settings (a few epochs on small real data). Each chapter's run folder is then
read back and the numbers that show it *learned* are collected into one JSON object.

    python -m tests.backend_matrix --backend jax --output-dir /tmp/matrix --json /tmp/jax.json

:data:`CASES` is the table: chapter, script, arguments, and the check each result must
pass (a threshold that chance cannot reach). The tests read the JSON and apply the checks;
this module only runs and records.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Served predictions of the fixed-weight model may differ between backends by this much
#: (float32 arithmetic in a different order; probabilities lie in 0..1).
SERVED_TOLERANCE = 1e-4

#: The majority class of the churn data (customers who stayed): what "always stays" scores.
CHURN_BASELINE = 0.7965

#: XLA options for the JAX processes of the tests: compile with less optimisation. Most of a
#: JAX run here is XLA compiling each new model and batch shape (tiny data, few steps), and
#: these flags cut the JAX matrix's CPU time by about a third with the same results (the
#: fixed-weight model's served probabilities were identical to the last digit).
FAST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

# schedules and tune use --limit 320, whose splits are whole batches of 32 (digits, 10%
# validation, limit // 5 test images: 288 / 32 / 64), so JAX compiles one step per split
# instead of a second one for a last, smaller batch. (mnist keeps 600: at 640 its JAX test
# accuracy fell from 0.89 to 0.73, too near the 0.6 bound.)


def jax_env(env: dict) -> dict:
    """``env`` with :data:`FAST_XLA_FLAGS` added to any XLA_FLAGS it already has."""
    return {**env, "XLA_FLAGS": f"{env.get('XLA_FLAGS', '')} {FAST_XLA_FLAGS}".strip()}


@dataclass(frozen=True)
class Case:
    """One chapter script run briefly: ``argv`` (``{out}`` and ``{data}`` are filled in) and
    the checks, each ``(name, value key, operator, bound or other key)``."""

    chapter: str
    script: str
    argv: tuple[str, ...]
    checks: tuple[tuple[str, str, str, object], ...] = ()
    needs: tuple[str, ...] = ()  # packages that must be importable
    notes: str = ""
    extra: dict = field(default_factory=dict)


CASES: tuple[Case, ...] = (
    Case("xor", "xor/xor.py", ("--epochs", "200", "--learning-rate", "0.05", "--log-every", "50"),
         checks=(("all four rows right", "accuracy", "==", 1.0),)),
    Case("churn", "mlp/mlp.py", ("--epochs", "5", "--batch-size", "64", "--learning-rate", "0.01",
                                 "--data", "{data}/Churn_Modelling.csv"),
         checks=(("beats always-stays", "accuracy", ">", CHURN_BASELINE),)),
    Case("model_api", "mlp/model_api.py", ("--part", "api", "--epochs", "1"),
         checks=(("three builds agree", "max_output_difference", "<", 1e-5),)),
    Case("mnist", "mnist/mnist.py", ("-m", "conv_net", "--dataset", "digits", "--limit", "600",
                                     "--epochs", "3", "--batch-size", "32"),
         checks=(("digits far above chance", "test_accuracy", ">", 0.6),)),
    Case("schedules", "mnist/schedules.py", ("--schedule", "cosine", "-m", "mlp_one_layer",
                                             "--dataset", "digits", "--limit", "320", "--epochs", "3",
                                             "--batch-size", "32"),
         checks=(("digits far above chance", "cosine_test_accuracy", ">", 0.5),)),
    Case("tune", "mnist/tune.py", ("--max-trials", "1", "--epochs", "3", "--batch-size", "32",
                                   "--dataset", "digits", "--limit", "320"),
         checks=(("digits far above chance", "test_accuracy", ">", 0.4),), needs=("keras_tuner",)),
    Case("shapes", "cnn/shapes.py", ("-m", "le_net", "-m", "conv_net"),
         checks=(("exit code", "returncode", "==", 0),)),
    Case("classify", "cnn/classify.py", ("{data}/cat.jpg", "--weights", "none", "-m", "mobilenet",
                                         "--top", "3"),
         checks=(("top 3 classes of the one image", "predictions", "==", 3),)),
    Case("transfer", "cnn/transfer.py", ("--quick", "--steps", "30", "--labels-per-class", "5",
                                         "--repeats", "1"),
         checks=(("source task twice chance", "source_val_accuracy", ">", "two_x_chance"),
                 ("fine-tuned twice chance", "fine_tuned_at_smallest", ">", "two_x_chance"))),
    Case("filters", "cnn/filters.py", ("{mnist_run}", "--index", "0"),
         checks=(("both pictures written", "pictures", "==", 2),)),
    Case("forecast", "rnn/forecast.py", ("--epochs", "2", "--window", "52", "--batch-size", "64"),
         checks=(("LSTM beats persistence", "test_rmse", "<", "persistence_rmse"),)),
    Case("compare_cells", "rnn/compare_cells.py", ("--epochs", "1", "--window", "12", "--series",
                                                   "elec_equip", "--cells", "gru", "--batch-size", "64"),
         checks=(("one result per cell", "cells", "==", 1),)),
    Case("save_load", "serving/save_load.py", ("--epochs", "4", "--resume-epochs", "2"),
         checks=(("every format round-trips", "formats_ok", "==", "formats"),
                 ("resuming continues exactly", "resumed_vs_uninterrupted", "==", 0))),
    Case("service", "serving/app.py", (),
         checks=(("served digits right", "served_accuracy", ">", 0.6),
                 ("served = in-process", "served_vs_in_process", "<", 1e-5)),
         needs=("fastapi", "httpx")),
)

CHAPTERS = tuple(case.chapter for case in CASES)

#: Chapters whose own tests already train them in the pytest process and apply the matrix's
#: check (or a stricter one) there: the matrix runs these only on the *other* backends, so
#: that the backend pytest runs on does not train them twice. Each names the test and the
#: value it checks (tests/test_backends.py checks that the test still looks at it).
CHECKED_BY_CHAPTER_TESTS: dict[str, tuple[str, str]] = {
    "xor": ("tests/test_xor.py::test_default_recipe_solves_xor", "accuracy"),
    "model_api": ("tests/test_model_api.py::test_three_builds_compute_the_same_function",
                  "same_function"),
    "schedules": ("tests/test_schedules.py::test_script_runs_end_to_end_from_its_folder",
                  "test acc"),
    "tune": ("tests/test_tune.py::test_random_search_writes_trials_and_the_retrained_best_model",
             "test_accuracy"),
    "shapes": ("tests/test_cnn.py::test_shapes_script_prints_the_table_and_checks", "returncode"),
    "classify": ("tests/test_cnn.py::test_a_cached_class_index_names_the_classes_with_random_weights",
                 "predictions"),
    "transfer": ("tests/test_cnn.py::test_transfer_quick_run_writes_table_plot_and_run_folder",
                 "fine_tuned_at_smallest"),
    "filters": ("tests/test_cnn.py::test_filters_and_feature_maps_of_a_run_folder", "feature_maps.png"),
    "forecast": ("tests/test_rnn.py::test_forecast_script_end_to_end", "persistence_rmse"),
    "compare_cells": ("tests/test_rnn.py::test_compare_cells_in_process", "results.csv"),
    "save_load": ("tests/test_serving.py::test_every_format_round_trips_and_resuming_continues_exactly",
                  "resumed_vs_uninterrupted"),
}


def passes(value, operator: str, bound) -> bool:
    """``value <operator> bound``; ``None`` (not measured) never passes."""
    if value is None or bound is None:
        return False
    return {"==": value == bound, "<": value < bound, ">": value > bound}[operator]


def failed_checks(case: Case, result: dict) -> list[str]:
    """The checks of ``case`` that ``result`` does not pass, as readable lines (empty: learned)."""
    if result.get("returncode") != 0:
        return [f"{case.chapter} exited {result.get('returncode')}: {result.get('error', '')[-600:]}"]
    problems = []
    for name, key, operator, bound in case.checks:
        value = result.get(key)
        limit = result.get(bound) if isinstance(bound, str) else bound
        if not passes(value, operator, limit):
            problems.append(f"{case.chapter}: {name}: {key}={value!r} is not {operator} {limit!r}")
    return problems


# --------------------------------------------------------------------------- running


def _load_script(script: str):
    """Import a chapter script as the module the tests also use (its ``__main__`` block does not run)."""
    return importlib.import_module(script.removesuffix(".py").replace("/", "."))


def _newest_run(out: Path, chapter_folder: str) -> Path | None:
    folders = sorted((out / chapter_folder).glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    return folders[-1].parent if folders else None


def _record(run_dir: Path | None) -> dict:
    return json.loads((run_dir / "run.json").read_text()) if run_dir else {}


def _read_results(case: Case, out: Path, state: dict) -> dict:
    """The numbers of one finished case, from its run folder (and ``state`` for the service)."""
    folder = {"xor": "xor", "churn": "mlp", "model_api": "model_api", "mnist": "mnist",
              "schedules": "mnist_schedules", "tune": "mnist_tune",
              "classify": "cnn", "transfer": "cnn", "forecast": "rnn", "compare_cells": "rnn",
              "save_load": "serving"}.get(case.chapter)
    values: dict = {}
    if folder:
        run_dir = _newest_run(out, folder)
        record = _record(run_dir)
        values.update(record.get("metrics", {}))
        values["backend_recorded"] = record.get("backend")
        if case.chapter == "mnist":
            state["mnist_run"] = str(run_dir)
            values["input_pipeline"] = record.get("input_pipeline")
            logs = run_dir / "tensorboard"  # written when tensorboard is installed (see run_case)
            values["event_files"] = sum(any(f.stat().st_size > 0 for f in (logs / split).glob("events.out.*"))
                                        for split in ("train", "validation")) if logs.is_dir() else None
        elif case.chapter == "classify":
            values["predictions"] = len(record.get("predictions", []))
        elif case.chapter == "transfer":
            # digits_split: pre-train on digits 0-4, transfer to 5-9; five classes either way
            values["chance"] = 1 / 5
            values["two_x_chance"] = 2 / 5
        elif case.chapter == "compare_cells":
            values["cells"] = sum(key.endswith("_test_rmse") and not key.startswith("seasonal_naive")
                                  for key in record.get("metrics", {}))
        elif case.chapter == "save_load":
            artefacts = record.get("artefacts", [])
            # A format this backend cannot write says so ("skipped on torch: ... use tensorflow or jax").
            skipped = [a for a in artefacts if str(a.get("note", "")).startswith("skipped")]
            values["formats"] = len(artefacts) - len(skipped)
            values["formats_ok"] = sum(bool(a.get("ok")) for a in artefacts if a not in skipped)
            values["formats_skipped"] = [a.get("note") for a in skipped]
            values["resumed_vs_uninterrupted"] = record.get("resume", {}).get("resumed_vs_uninterrupted")
    if case.chapter == "filters":  # filters.py writes its own run folder, <out>/cnn/<time>_filters_<model>
        found = sorted((out / "cnn").glob("*_filters_*"), key=lambda p: p.stat().st_mtime)
        run_dir = found[-1] if found else out / "cnn" / "no-filters-run"
        values["pictures"] = sum((run_dir / name).is_file() for name in ("filters.png", "feature_maps.png"))
    return values


def _serve(state: dict) -> dict:
    """The chapter's service (in-process, through FastAPI's test client) on the MNIST run of this
    backend, and on a model whose weights are the same numbers on every backend."""
    import numpy as np
    from fastapi.testclient import TestClient

    app_module = _load_script("serving/app.py")
    from mnist import data as mnist_data
    from serving import loading

    digits = mnist_data.load_images("digits", limit=400)
    x = digits.x_test[:40]
    served = loading.load_from_path(state["mnist_run"])
    images = x.reshape(len(x), 28, 28).tolist()
    with TestClient(app_module.create_app(served)) as client:
        answer = client.post(f"/predict?top_k={len(served.class_names)}", json=images)
        answer.raise_for_status()
        served_probabilities = _probabilities(answer.json()["predictions"], served.class_names)
    in_process = served.model.predict(x.reshape(len(x), *served.model.inputs[0].shape[1:]), verbose=0)
    labels = np.asarray(served.class_names)[served_probabilities.argmax(1)]
    values = {"served_accuracy": float(np.mean(labels == np.asarray(digits.class_names)[digits.y_test[:40]])),
              "served_vs_in_process": float(np.abs(served_probabilities - in_process).max())}

    fixed = fixed_weight_model(state["out"])
    served_fixed = loading.load_from_path(fixed)
    with TestClient(app_module.create_app(served_fixed)) as client:
        answer = client.post("/predict?top_k=10", json=images)
        answer.raise_for_status()
        values["fixed_probabilities"] = _probabilities(answer.json()["predictions"],
                                                       served_fixed.class_names).round(7).tolist()
    return values


def _probabilities(predictions: list[list[dict]], classes):
    import numpy as np

    index = {str(c): i for i, c in enumerate(classes)}
    table = np.zeros((len(predictions), len(classes)))
    for row, answers in enumerate(predictions):
        for item in answers:
            table[row, index[str(item["label"])]] = item["probability"]
    return table


def fixed_weight_model(out: Path) -> Path:
    """A small conv net whose weights are drawn by NumPy from seed 0, so that it is the same
    model on every backend; saved as ``fixed.keras`` under ``out``."""
    import keras
    import numpy as np

    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name="fixed_conv")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    path = out / "fixed.keras"
    model.save(path)
    return path


def run_case(case: Case, backend: str, out: Path, state: dict) -> dict:
    """Run one case, quietly; the result holds returncode, seconds and the measured values."""
    missing = [name for name in case.needs if importlib.util.find_spec(name) is None]
    if missing:
        return {"returncode": None, "skipped": f"{', '.join(missing)} not installed"}
    data = os.environ.get("KERAS_TUTORIAL_DATA") or str(ROOT.parent / "shared" / "data")
    argv = [a.format(out=out, data=data, mnist_run=state.get("mnist_run", "")) for a in case.argv]
    argv += ["--backend", backend, "--output-dir", str(out)] if case.chapter not in ("service",) else []
    if case.chapter not in ("shapes", "classify", "filters", "service"):
        argv.append("--quiet")
    if case.chapter == "mnist" and importlib.util.find_spec("tensorboard") is not None:
        argv.append("--tensorboard")  # its event files are checked too
    start, cpu = time.perf_counter(), time.process_time()
    result: dict = {}
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            if case.chapter == "service":
                result.update(_serve(state))
                code = 0
            else:
                code = _load_script(case.script).main(argv)
        result["returncode"] = code
        if code == 0:
            result.update(_read_results(case, out, state))
        else:
            result["error"] = captured.getvalue()[-1500:]
    except Exception:  # a bug in a chapter on this backend: record it, go on with the others
        result["returncode"] = "exception"
        result["error"] = captured.getvalue()[-500:] + traceback.format_exc()[-2500:]
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["cpu_seconds"] = round(time.process_time() - cpu, 2)  # every thread of this process
    return result


def run_all(backend: str, out: Path, chapters: tuple[str, ...] = CHAPTERS) -> dict:
    """Every case (or those in ``chapters``) on ``backend``, which must be this process's backend."""
    from utils import cli

    cli.select_backend(backend)
    import keras

    out.mkdir(parents=True, exist_ok=True)
    state: dict = {"out": out}
    results = {"backend": keras.backend.backend(), "keras": keras.__version__, "cases": {}}
    for case in CASES:
        if case.chapter in chapters:
            results["cases"][case.chapter] = run_case(case, backend, out, state)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True, help="where the results are written")
    parser.add_argument("--chapters", nargs="+", default=list(CHAPTERS), choices=CHAPTERS)
    args = parser.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("MPLBACKEND", "Agg")
    results = run_all(args.backend, args.output_dir, tuple(args.chapters))
    args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
