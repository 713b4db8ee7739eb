"""Chapter: saving a model and loading it back, in every format Keras 3 offers.

Trains the XOR network (or loads a model with ``--model``), saves it each way,
loads each copy back and checks that it predicts exactly what the original
does. The seed kept the architecture as JSON (or YAML) and the weights as HDF5;
Keras 3 adds one file holding everything, and ``model.export`` for serving
without Keras.

Every artefact lands in the run folder, ``outputs/serving/<time>_<model>/``,
next to run.json, which records the sizes and the differences found.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from utils import cli, model_files, runs  # noqa: E402
from utils.errors import TutorialError  # noqa: E402
from utils.lazy import keras, lazy  # noqa: E402  (Keras loads on first use, after the flags are read)
from xor import xor  # noqa: E402

np = lazy("numpy")

CHAPTER = "serving"
TOLERANCE = 1e-6  # "identical" allows float32 round-off from a differently compiled graph
#: Whether the round trips reload in safe mode; --unsafe (a trusted --model with
#: Lambda layers) turns it off for that model's own copies.
SAFE_MODE = {"on": True}

WHEN_TO_USE = """\
which one to use when:
  .keras          the default: architecture, weights and optimizer state in one zip; resume
                  training, or hand the model to anyone with Keras. Safe to open unless it
                  holds Lambda layers (see safe_mode below).
  .weights.h5     checkpoints while training, transfer learning: the code that builds the
                  model is at hand and only the numbers change. No architecture; the
                  optimizer's variables are in it, but load only into an optimizer already
                  built (model.optimizer.build(model.trainable_variables)).
  .json + .h5     the original tutorial's way: a readable, diffable architecture plus the weights; today
                  .keras holds both (its config.json is this same JSON).
  legacy .h5      only for old tools that cannot read .keras; Keras 3 warns when writing it.
  SavedModel      model.export(): a TensorFlow graph for TF Serving, TFLite or TF.js; runs
                  without your Python code, cannot resume training in Keras.
YAML is gone: model.to_yaml() was removed (TensorFlow 2.6) because loading YAML with
PyYAML's default loader could build arbitrary Python objects from the file. JSON holds
only data."""


@dataclass
class Artefact:
    format: str
    files: str
    bytes: int
    max_difference: float  # largest |original - reloaded| over the check inputs
    ok: bool
    note: str = ""


def size_of(path: Path) -> int:
    """Bytes in a file, or in every file under a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def difference(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype="float64") - np.asarray(b, dtype="float64"))))


def _artefact(name: str, files: list[Path], folder: Path, expected, got, note: str = "") -> Artefact:
    diff = difference(expected, got)
    return Artefact(name, " + ".join(f.relative_to(folder).as_posix() + ("/" if f.is_dir() else "")
                                     for f in files),
                    sum(size_of(f) for f in files), diff, diff <= TOLERANCE, note)


@contextlib.contextmanager
def quiet_logs():
    """Hide Keras's and TensorFlow's warnings about their own internals while
    the checks run (retracing notices, "compiled metrics have yet to be built")."""
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    # A filter, not a level: raising the absl logger's level did not silence these here.
    errors_only = logging.Filter()
    errors_only.filter = lambda record: record.levelno >= logging.ERROR
    for logger in loggers:
        logger.addFilter(errors_only)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(errors_only)


def rebuilt(model):
    """The same architecture, built afresh from its config: new random weights,
    not compiled, no optimizer."""
    config = json.loads(model.to_json())
    config.pop("compile_config", None)
    return from_json(json.dumps(config))


def from_json(text: str):
    """``keras.models.model_from_json``; after --unsafe, the same without safe mode (that
    function has no ``safe_mode`` argument, so its one step is taken by hand)."""
    if SAFE_MODE["on"]:
        return keras.models.model_from_json(text)
    return keras.saving.deserialize_keras_object(json.loads(text), safe_mode=False)


def _predict(model, x):
    return model.predict(x, verbose=0)


def check_native(model, folder: Path, x) -> Artefact:
    """``model.save("model.keras")``: a zip of config.json, the weights and the optimizer state."""
    path = folder / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=SAFE_MODE["on"])
    return _artefact(".keras (native)", [path], folder, _predict(model, x), _predict(loaded, x),
                     "architecture + weights + optimizer state")


def check_weights_only(model, folder: Path, x) -> Artefact:
    """``save_weights``, then the same architecture built afresh loads them."""
    path = folder / "model.weights.h5"
    model.save_weights(path)
    fresh = rebuilt(model)
    fresh.load_weights(path)
    return _artefact("weights only", [path], folder, _predict(model, x), _predict(fresh, x),
                     "needs the code that builds the model")


def check_json(model, folder: Path, x) -> Artefact:
    """The original tutorial's recipe: ``to_json`` for the architecture, an HDF5 file for the weights."""
    json_path, weights_path = folder / "model.json", folder / "model.weights.h5"
    json_path.write_text(model.to_json(indent=2))
    if not weights_path.exists():
        model.save_weights(weights_path)
    rebuilt = from_json(json_path.read_text())
    rebuilt.load_weights(weights_path)
    return _artefact("JSON + weights", [json_path, weights_path], folder, _predict(model, x),
                     _predict(rebuilt, x), "the original tutorial's way: the architecture as text")


def check_legacy_h5(model, folder: Path, x) -> Artefact:
    """The whole model in one HDF5 file, as Keras 2 saved it by default."""
    path = folder / "model.h5"
    # Keras logs a warning that the format is legacy (hidden by quiet_logs). And
    # in Keras 3.15 writing .h5 drops the optimizer from the model's compile
    # config, so a .keras file saved from the same model afterwards reloads
    # with RMSprop: this check runs last.
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=SAFE_MODE["on"])
    return _artefact("legacy .h5", [path], folder, _predict(model, x), _predict(loaded, x),
                     "Keras 2's format, still readable")


def check_saved_model(model, folder: Path, x) -> Artefact:
    """``model.export``: a TensorFlow SavedModel with a ``serve`` signature, as TF Serving loads it."""
    path = folder / "saved_model"
    try:
        import tensorflow as tf
    except ImportError:
        return Artefact("SavedModel", "-", 0, float("nan"), False, "skipped: TensorFlow is not installed")
    if keras.backend.backend() == "torch":
        # Keras traces the model into a TensorFlow graph from TensorFlow or JAX
        # (jax2tf); from torch the export fails (Keras 3.15), so say so instead.
        return Artefact("SavedModel", "-", 0, float("nan"), False,
                        "skipped on torch: export a SavedModel with --backend tensorflow or jax")
    try:
        model.export(path, format="tf_saved_model", verbose=False)
    except Exception as err:  # e.g. a backend that cannot trace to TensorFlow
        return Artefact("SavedModel", "-", 0, float("nan"), False,
                        f"export failed on {keras.backend.backend()}: {' '.join(str(err).split())[:120]}")
    reloaded = tf.saved_model.load(str(path))  # no Keras involved: what TF Serving would run
    got = reloaded.serve(tf.constant(x, dtype=tf.float32)).numpy()
    return _artefact("SavedModel", [path], folder, _predict(model, x), got,
                     "model.export(); serve() signature; inference only")


def check_safe_mode(folder: Path) -> dict:
    """A model with a Python lambda in it: refused in safe mode, loaded when asked.

    A ``Lambda`` layer wrapping a Python lambda is stored as the function's
    compiled bytecode. Loading it means running code from the file, which could
    do anything; ``safe_mode`` (on by default) refuses.
    """
    path = folder / "lambda_model.keras"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda t: t * 2.0, name="double"),
                              keras.layers.Dense(1)], name="with_lambda")
    model.save(path)
    try:
        keras.saving.load_model(path)
        refused, message = False, ""
    except ValueError as err:
        refused, message = True, " ".join(str(err).split())
    unsafe = keras.saving.load_model(path, safe_mode=False)
    x = np.array([[1.0, 2.0]], dtype="float32")
    return {"file": path.name, "refused_in_safe_mode": refused, "message": message,
            "max_difference_unsafe": difference(_predict(model, x), _predict(unsafe, x))}


def optimizer_state_difference(model, path: Path) -> dict:
    """Is the optimizer (its step count and its moment estimates) in the .keras file?"""
    if getattr(model, "optimizer", None) is None or not model.optimizer.variables:
        return {"compared": 0, "note": "the model has no optimizer state"}
    loaded = keras.saving.load_model(path, safe_mode=SAFE_MODE["on"])
    before = [np.asarray(v) for v in model.optimizer.variables]
    after = [np.asarray(v) for v in loaded.optimizer.variables]
    if len(before) != len(after):
        return {"compared": 0, "note": f"{len(before)} optimizer variables saved, {len(after)} loaded"}
    return {"compared": len(before), "iterations": int(loaded.optimizer.iterations),
            "max_difference": max(difference(a, b) for a, b in zip(before, after))}


def check_resume(model, args, folder: Path, x, y) -> dict:
    """Stop, reload, go on: does resuming from the .keras file land where an
    uninterrupted run does? And restarting from weights alone, with a new optimizer?

    Adam keeps a running mean of each weight's gradients and of their squares;
    only the .keras file carries them, so only it continues the same path.
    """
    epochs = args.resume_epochs
    resumed = keras.saving.load_model(folder / "model.keras", safe_mode=SAFE_MODE["on"])
    restarted = rebuilt(model)
    restarted.load_weights(folder / "model.weights.h5")
    restarted.compile(optimizer=xor.make_optimizer(args.optimizer, args.learning_rate),
                      loss="binary_crossentropy", metrics=["accuracy"])
    log_every = math.gcd(epochs, 50)
    for m in (model, resumed, restarted):  # the same batches in the same order for all three
        keras.utils.set_random_seed(args.seed + 1)
        xor.fit(m, x, y, epochs=epochs, batch_size=args.batch_size, log_every=log_every,
                seed=args.seed + 1)

    def weights_difference(other):
        return max(difference(a, b) for a, b in zip(model.get_weights(), other.get_weights()))

    return {"epochs": epochs, "resumed_vs_uninterrupted": weights_difference(resumed),
            "weights_only_restart_vs_uninterrupted": weights_difference(restarted)}


def load_data(args):
    """The model and the inputs the round trips are checked on: XOR's four
    points, or 16 seeded random inputs shaped like ``--model``'s input."""
    if args.model:
        model, file = model_files.load_model(args.model, safe_mode=not args.unsafe, compile=True)
        SAFE_MODE["on"] = not args.unsafe
        model_files.require_one_input_output(model, file, "save_load.py")
        shape = tuple(model.input_shape[1:])
        if None in shape:
            raise TutorialError(f"{file} takes inputs of shape {shape}; the checks need a fixed shape")
        x = np.random.default_rng(args.seed).uniform(0, 1, (16, *shape)).astype("float32")
        return model, x, None, f"loaded from {runs.shown_path(file)}"
    SAFE_MODE["on"] = True
    x, y = xor.load_data()
    model = xor.build_model(tuple(args.hidden))
    model.compile(optimizer=xor.make_optimizer(args.optimizer, args.learning_rate),
                  loss="binary_crossentropy", metrics=["accuracy"])
    return model, x, y, None


def train_and_evaluate(args, argv=None) -> runs.RunResult:
    keras.utils.set_random_seed(args.seed)
    model, x, y, origin = load_data(args)
    run = runs.Run(CHAPTER, model.name, args, argv)
    history, metrics = None, {}
    if y is not None:
        start = time.perf_counter()
        fitted = xor.fit(model, x, y, epochs=args.epochs, batch_size=args.batch_size,
                         log_every=math.gcd(args.epochs, 50), seed=args.seed)
        history = runs.history_frame(fitted.history, epoch_scale=math.gcd(args.epochs, 50))
        loss, accuracy = model.evaluate(x, y, verbose=0)
        metrics = {"accuracy": float(accuracy), "loss": float(loss),
                   "fit_seconds": time.perf_counter() - start}
        origin = f"trained on XOR for {args.epochs} epochs: accuracy {accuracy:.0%}"
    if not args.quiet:
        print(f"model {model.name} ({model.count_params():,} parameters), {origin}")

    with quiet_logs():
        artefacts = [check(model, run.dir, x) for check in
                     (check_native, check_weights_only, check_json, check_saved_model)]
        optimizer_state = optimizer_state_difference(model, run.path("model.keras"))
        safe_mode = check_safe_mode(run.dir)
        resume = check_resume(model, args, run.dir, x, y) if y is not None else None
        artefacts.insert(3, check_legacy_h5(model, run.dir, x))  # last: see check_legacy_h5
    # The artefacts are the run's output: finish() must not overwrite model.keras
    # with the model as it is after the resume check trained it further.
    checked_on = "xor truth table" if y is not None else f"{len(x)} random inputs of shape {x.shape[1:]}"
    return run.finish(history=history, metrics=metrics, dataset=checked_on, origin=origin,
                      artefacts=[asdict(a) for a in artefacts], optimizer_state=optimizer_state,
                      safe_mode=safe_mode, resume=resume)


def format_report(result: runs.RunResult) -> str:
    extra = result.extra
    lines = [f"{'format':<16} {'files':<38} {'size':>10}  {'max |diff|':>10}  round trip"]
    for a in extra["artefacts"]:
        verdict = ("identical" if a["max_difference"] == 0 else "ok" if a["ok"]
                   else "skipped" if a["note"].startswith("skipped") else "FAILED")
        size = f"{a['bytes'] / 1024:,.1f} KB" if a["bytes"] else "-"
        lines.append(f"{a['format']:<16} {a['files']:<38} {size:>10}  {a['max_difference']:>10.2g}  "
                     f"{verdict}  ({a['note']})")
    state = extra["optimizer_state"]
    if state.get("compared"):
        lines.append(f"\noptimizer state in model.keras: {state['compared']} variables, step "
                     f"{state['iterations']}, max |diff| {state['max_difference']:.2g} after loading")
    else:
        lines.append(f"\noptimizer state: {state['note']}")
    resume = extra["resume"]
    if resume:
        lines.append(f"resume check ({resume['epochs']} more epochs): weights after resuming from "
                     f"model.keras differ from an uninterrupted run by "
                     f"{resume['resumed_vs_uninterrupted']:.2g}; restarting from the weights alone "
                     f"with a new optimizer, by {resume['weights_only_restart_vs_uninterrupted']:.2g}")
    safe = extra["safe_mode"]
    lines.append(f"safe_mode: loading {safe['file']} (a Lambda layer) was "
                 + ("refused" if safe["refused_in_safe_mode"] else "NOT refused")
                 + f"; with safe_mode=False it loads (max |diff| {safe['max_difference_unsafe']:.2g})")
    if safe["message"]:
        lines.append(f"  Keras says: {safe['message'][:150]}...")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = cli.make_parser(
        "Save a model in every Keras format, load each back, check the predictions match.",
        epochs=500, batch_size=1,
        epilog="examples:\n  python serving/save_load.py\n"
               "  python serving/save_load.py --model outputs/mnist/<run folder>",
    )
    parser.add_argument("--model", metavar="PATH", default=None,
                        help="a .keras file or run folder to save and reload, instead of training XOR")
    parser.add_argument("--hidden", type=cli.positive_int, nargs="+", default=[8, 4], metavar="UNITS",
                        help="XOR network's hidden layer sizes")
    parser.add_argument("--optimizer", choices=sorted(xor.OPTIMIZERS), default="adam",
                        help="XOR network's optimiser")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=None,
                        help="step size; None means the optimiser's Keras default")
    parser.add_argument("--resume-epochs", type=cli.positive_int, default=100, metavar="N",
                        help="epochs the resume check trains after reloading (XOR only)")
    parser.add_argument("--unsafe", action="store_true",
                        help="let --model hold Lambda layers (their code runs on loading)")
    return parser.parse_args(argv)


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    result = train_and_evaluate(args, argv)
    print(format_report(result))
    if not args.quiet:
        print("\n" + WHEN_TO_USE)
    print(f"\nrun folder: {runs.shown_path(result.run_dir)}")
    failed = [a["format"] for a in result.extra["artefacts"] if not a["ok"] and "skipped" not in a["note"]]
    if failed or not result.extra["safe_mode"]["refused_in_safe_mode"]:
        print(f"round trip FAILED for: {', '.join(failed) or 'safe_mode'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
