"""utils/torch_fit.py: the plain PyTorch loop the XOR and churn chapters use on torch; and
mnist.py's refusal of --distribute on torch (it needs Keras running on torch, so it runs here).

The checks run in one child process on the torch backend (the backend is fixed
when Keras is first imported): each check is a function there, and its result or
its traceback comes back as one JSON entry, so one child start serves them all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                reason="torch is not installed (pip install -r requirements-backends.txt)")

CHECKS: dict[str, str] = {}


def on_torch(code: str):
    """Register ``code`` (the body of a check that ends by returning a JSON-able value)."""
    def register(test):
        CHECKS[test.__name__] = textwrap.dedent(code)
        return test
    return register


@pytest.fixture(scope="module")
def torch_results() -> dict:
    """Every registered check, run once in one torch child: {test name: result or traceback}."""
    parts = [f"import json, sys, traceback\nsys.path.insert(0, {str(ROOT)!r})\nresults = {{}}"]
    for name, body in CHECKS.items():
        parts.append(f"def {name}():\n" + textwrap.indent(body, "    "))
        parts.append(f"try:\n    results[{name!r}] = {{'ok': {name}()}}\n"
                     f"except Exception:\n    results[{name!r}] = {{'error': traceback.format_exc()}}")
    parts.append("print(json.dumps(results))")
    done = subprocess.run([sys.executable, "-c", "\n".join(parts)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "KERAS_BACKEND": "torch"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _result(torch_results: dict, name: str):
    outcome = torch_results[name]
    assert "error" not in outcome, outcome.get("error")
    return outcome["ok"]


@on_torch("""
        import keras, numpy as np
        from utils import torch_fit
        from xor import xor
        x, y = xor.load_data()
        weights = []
        for loop in ("fit", "torch"):
            keras.utils.set_random_seed(3)
            model = xor.build_model()
            start = [w.copy() for w in model.get_weights()]
            model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
            if loop == "fit":
                history = model.fit(x, y, batch_size=4, epochs=6, shuffle=False, verbose=0)
            else:
                history = torch_fit.fit(model, x, y, epochs=3, batch_size=4, seed=0, passes_per_epoch=2)
            weights.append([w.tolist() for w in model.get_weights()])
            assert len(history.history["loss"]) == (6 if loop == "fit" else 3)
        diff = max(float(np.max(np.abs(np.array(a) - np.array(b))))
                   for a, b in zip(*weights))
        moved = min(float(np.max(np.abs(np.array(a) - b))) for a, b in zip(weights[1], start))
        return {"diff": diff, "moved": moved}
    """)
def test_same_updates_as_model_fit(torch_results):
    # Full batches leave no room for shuffling, so both must make identical updates.
    result = _result(torch_results, "test_same_updates_as_model_fit")
    assert result["moved"] > 1e-4  # every weight array was updated...
    assert result["diff"] < 1e-6   # ...exactly as model.fit updates it


@on_torch("""
        import keras, numpy as np
        from utils import torch_fit
        rng = np.random.default_rng(0)
        x = rng.normal(size=(400, 5)).astype("float32")
        y = (x[:, :1] + x[:, 1:2] > 0).astype("float32")
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        # Adam at 0.01 for 10 epochs: loss 0.10 of the first epoch's, val_accuracy 0.97
        # (at the default 0.001 this took 50 epochs, five times as long)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                      metrics=["accuracy"])
        def stop_after_third(epoch, logs):
            model2.stop_training = epoch == 2
        stop = keras.callbacks.LambdaCallback(on_epoch_end=stop_after_third)
        h = torch_fit.fit(model, x[:300], y[:300], epochs=10, batch_size=10, seed=0,
                          validation_data=(x[300:], y[300:]))
        model2 = keras.models.clone_model(model)
        model2.compile(optimizer="adam", loss="binary_crossentropy")
        h2 = torch_fit.fit(model2, x[:300], y[:300], epochs=50, batch_size=10, seed=0,
                           validation_data=(x[300:], y[300:]), callbacks=[stop])
        return {"keys": sorted(h.history), "loss": h.history["loss"],
                "val_accuracy": h.history["val_accuracy"], "stopped": len(h2.history["loss"])}
    """)
def test_trains_validates_and_stops_when_told(torch_results):
    result = _result(torch_results, "test_trains_validates_and_stops_when_told")
    assert result["keys"] == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert result["loss"][-1] < 0.5 * result["loss"][0]
    assert result["val_accuracy"][-1] > 0.9
    assert result["stopped"] == 3  # the loop honours model.stop_training (EarlyStopping sets it)


@on_torch("""
        import contextlib, io, pathlib, tempfile
        from mnist import mnist
        out = pathlib.Path(tempfile.mkdtemp())
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = mnist.main(["-m", "conv_net", "--dataset", "digits", "--limit", "400",
                                     "--batch-size", "64", "--quiet", "--backend", "torch",
                                     "--distribute", "mirrored", "--output-dir", str(out)])
            except SystemExit as stop:
                status = stop.code
        return {"status": status, "stderr": err.getvalue(), "wrote": (out / "mnist").exists()}
    """)
def test_torch_refuses_distribution_in_one_line(torch_results):
    # mnist.main(argv) in the torch child, as the script calls it (was a subprocess of its own
    # in tests/test_distribute.py)
    result = _result(torch_results, "test_torch_refuses_distribution_in_one_line")
    assert result["status"] == 2
    assert result["stderr"].strip().splitlines()[-1] == (
        "error: --distribute, --cpu-devices and several processes are not supported on torch in "
        "this tutorial: use --backend tensorflow or --backend jax")
    assert "Traceback" not in result["stderr"]
    assert not result["wrote"]
