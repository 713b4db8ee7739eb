"""utils/torch_fit.py: the plain PyTorch loop the XOR and churn chapters use on torch.

Each check runs in a child process on the torch backend (the backend is fixed
when Keras is first imported).
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


def _on_torch(code: str) -> dict:
    script = f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "torch"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_same_updates_as_model_fit():
    # Full batches leave no room for shuffling, so both must make identical updates.
    result = _on_torch("""
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
        print(json.dumps({"diff": diff, "moved": moved}))
    """)
    assert result["moved"] > 1e-4  # every weight array was updated...
    assert result["diff"] < 1e-6   # ...exactly as model.fit updates it


def test_trains_validates_and_stops_when_told():
    result = _on_torch("""
        import keras, numpy as np
        from utils import torch_fit
        rng = np.random.default_rng(0)
        x = rng.normal(size=(400, 5)).astype("float32")
        y = (x[:, :1] + x[:, 1:2] > 0).astype("float32")
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        def stop_after_third(epoch, logs):
            model2.stop_training = epoch == 2
        stop = keras.callbacks.LambdaCallback(on_epoch_end=stop_after_third)
        h = torch_fit.fit(model, x[:300], y[:300], epochs=50, batch_size=10, seed=0,
                          validation_data=(x[300:], y[300:]))
        model2 = keras.models.clone_model(model)
        model2.compile(optimizer="adam", loss="binary_crossentropy")
        h2 = torch_fit.fit(model2, x[:300], y[:300], epochs=50, batch_size=10, seed=0,
                           validation_data=(x[300:], y[300:]), callbacks=[stop])
        print(json.dumps({"keys": sorted(h.history), "loss": h.history["loss"],
                          "val_accuracy": h.history["val_accuracy"], "stopped": len(h2.history["loss"])}))
    """)
    assert result["keys"] == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert result["loss"][-1] < 0.5 * result["loss"][0]
    assert result["val_accuracy"][-1] > 0.9
    assert result["stopped"] == 3  # the loop honours model.stop_training (EarlyStopping sets it)
