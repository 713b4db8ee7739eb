"""The service range-checks category indices for an Embedding, also one behind layers that only
reshape its input (a 422 naming the range, not a 500 from inside the backend)."""

import keras
from fastapi.testclient import TestClient

from serving import app as service
from serving import loading


def _saved(model, folder):
    path = folder / f"{model.name}.keras"
    model.save(path)
    return path


def test_an_embedding_behind_a_reshape_is_range_checked(tmp_path):
    codes = keras.Input((2, 3), dtype="int32", name="codes")
    flat = keras.layers.Reshape((6,))(codes)
    table = keras.layers.Embedding(7, 2)(flat)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(table))
    served = loading.load_from_path(_saved(keras.Model(codes, out, name="reshaped"), tmp_path))
    assert served.inputs[0].index_limit == 7
    with TestClient(service.create_app(served)) as client:
        bad = client.post("/predict", json=[[[0, 1, 2], [3, 4, 7]]])
        assert bad.status_code == 422 and "0 to 6" in bad.json()["detail"]
        assert client.post("/predict", json=[[[0, 1, 2], [3, 4, 6]]]).status_code == 200


def test_an_embedding_after_arithmetic_is_not_mistaken_for_an_index_input(tmp_path):
    numbers = keras.Input((4,), name="numbers")
    scaled = keras.layers.Dense(4)(numbers)  # its outputs are not the request's numbers any more
    table = keras.layers.Embedding(5, 2)(scaled)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(table))
    served = loading.load_from_path(_saved(keras.Model(numbers, out, name="computed"), tmp_path))
    assert served.inputs[0].index_limit is None
