"""The serving chapter: every save format round-trips, and the prediction service
answers correctly, refuses bad requests with the right status, and keeps going."""

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import httpx
import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # Starlette 1.x nudges towards httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from mnist import data as image_data
from mnist import mnist, models
from serving import app as service
from serving import images, loading, save_load
from serving.predictor import Predictor
from utils.errors import ModelLoadError
from xor import xor

from .conftest import ROOT

LIMIT = 100_000  # request body limit of the test apps


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits():
    return image_data.load_images("digits", limit=400)


@pytest.fixture(scope="module")
def mnist_run(digits, tmp_path_factory):
    """A real MNIST-chapter run folder with a small trained classifier."""
    args = mnist.parse_args(["--epochs", "8", "--batch-size", "32", "--quiet", "-m", "mlp_one_layer",
                             "--output-dir", str(tmp_path_factory.mktemp("runs"))])
    return mnist.train_and_evaluate(models.get_spec("mlp_one_layer"), digits, args).run_dir


@pytest.fixture(scope="module")
def served(mnist_run):
    return loading.load_from_path(mnist_run)


@pytest.fixture(scope="module")
def known_digit(digits, served):
    """A test image the model gets right: (28x28 uint8 pixels, label, its probabilities)."""
    probabilities = served.model.predict(digits.x_test.reshape(len(digits.x_test), -1), verbose=0)
    right = np.flatnonzero((probabilities.argmax(1) == digits.y_test) & (probabilities.max(1) > 0.5))
    assert len(right), "the tiny model should get some test digits right"
    i = right[0]
    pixels = (digits.x_test[i, :, :, 0] * 255).round().astype("uint8")
    return pixels, str(digits.y_test[i]), probabilities[i]


@pytest.fixture(scope="module")
def client(served):
    with TestClient(service.create_app(served, max_bytes=LIMIT)) as test_client:
        yield test_client


# --- the service, in process ------------------------------------------------------

def test_health_and_model_info(client, mnist_run):
    assert client.get("/health").json() == {"status": "ok", "model": "mlp_one_layer"}
    info = client.get("/model").json()
    assert info["name"] == "mlp_one_layer" and info["input_shape"] == [784]
    assert info["classes"] == [str(d) for d in range(10)] and info["parameters"] == 407_050
    assert info["source"] == str(mnist_run / "model.keras") and info["max_request_bytes"] == LIMIT
    assert client.get("/docs").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_uploaded_digit_is_classified_as_in_process(client, known_digit):
    pixels, label, probabilities = known_digit
    answer = client.post("/predict", files={"image": ("digit.png", png(pixels), "image/png")}).json()
    top = answer["predictions"][0]
    assert top[0]["label"] == label and len(top) == 5
    assert top[0]["probability"] == pytest.approx(float(probabilities.max()), abs=1e-5)
    assert [p["probability"] for p in top] == sorted((p["probability"] for p in top), reverse=True)
    assert answer["image"] == {"format": "PNG", "width": 28, "height": 28, "mode": "L"}


def test_raw_image_body_and_json_inputs_give_the_same_answer(client, known_digit):
    pixels, label, _ = known_digit
    scaled = (pixels / 255.0).tolist()
    answers = [
        client.post("/predict?top_k=2", content=png(pixels), headers={"content-type": "image/png"}),
        client.post("/predict?top_k=2", json=[scaled]),                           # (1, 28, 28)
        client.post("/predict?top_k=2", json={"inputs": np.ravel(scaled).tolist()}),  # one (784,)
    ]
    tops = [a.json()["predictions"][0] for a in answers]
    assert all(a.status_code == 200 for a in answers)
    assert all(len(t) == 2 and t[0]["label"] == label for t in tops)
    assert tops[0][0]["probability"] == pytest.approx(tops[1][0]["probability"], abs=1e-6)


def test_json_batch_answers_each_input(client, digits):
    x = digits.x_test[:3].reshape(3, -1).tolist()
    answer = client.post("/predict?top_k=1", json=x).json()
    assert len(answer["predictions"]) == 3 and all(len(p) == 1 for p in answer["predictions"])


def _bad_png() -> bytes:
    return png(np.zeros((28, 28), "uint8"))[:50]  # header intact, data cut off


BAD_REQUESTS = {
    "no body": ({}, 422, "no input"),
    "form without a file": ({"files": {"note": (None, "hello")}}, 422, "no file"),
    "url-encoded form": ({"data": {"image": "dog.jpg"}}, 422, "no file"),
    "not an image": ({"files": {"image": ("x.png", b"plain text, not pixels", "image/png")}}, 415,
                     "not an image"),
    "corrupt image": ({"files": {"image": ("x.png", _bad_png(), "image/png")}}, 400, "corrupt"),
    "empty file": ({"files": {"image": ("x.png", b"", "image/png")}}, 400, "empty"),
    "too large": ({"files": {"image": ("x.png", b"\0" * (LIMIT + 1), "image/png")}}, 413, "too large"),
    "wrong shape": ({"json": [[1.0, 2.0, 3.0]]}, 422, "(N, 784)"),
    "ragged": ({"json": [[1.0] * 784, [1.0]]}, 422, "(N, 784)"),
    "strings": ({"json": [["a"] * 784]}, 422, "numbers"),
    "NaN": ({"content": b"[" + b", ".join([b"NaN"] * 784) + b"]",
             "headers": {"content-type": "application/json"}}, 422, "finite"),
    "wrong key": ({"json": {"pixels": [0.0] * 784}}, 422, '"inputs"'),
    "scalar": ({"json": 3}, 422, "(N, 784)"),
    "invalid JSON": ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
                     "not valid JSON"),
    "nested too deeply": ({"content": b"[" * 20_000 + b"]" * 20_000,  # a RecursionError in json
                           "headers": {"content-type": "application/json"}}, 400, "nested too deeply"),
    "text body": ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415,
                  "unsupported content type"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_request_gets_its_status_and_the_server_goes_on(client, case):
    kwargs, status, fragment = BAD_REQUESTS[case]
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    assert "Traceback" not in response.text
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("query, status", [("top_k=0", 422), ("top_k=11", 422), ("top_k=x", 422),
                                           ("top_k=10", 200)])
def test_top_k_is_validated(client, query, status):
    assert client.post(f"/predict?{query}", json=[[0.0] * 784]).status_code == status


def test_chunked_body_over_the_limit_gets_413(client):
    chunks = (b"\0" * 30_000 for _ in range(5))  # no Content-Length: counted as it arrives
    response = client.post("/predict", content=chunks, headers={"content-type": "image/png"})
    assert response.status_code == 413 and "too large" in response.json()["detail"]


def test_model_failure_is_a_500_without_a_traceback(served):
    class Broken:
        def predict_on_batch(self, x):
            raise RuntimeError("secret internals")

    with TestClient(service.create_app(served), raise_server_exceptions=False) as broken_client:
        broken_client.app.state.predictor.model = Broken()
        response = broken_client.post("/predict", json=[[0.0] * 784])
        assert response.status_code == 500
        assert "secret" not in response.text and "Traceback" not in response.text
        assert broken_client.get("/health").status_code == 200


# --- images and models ------------------------------------------------------------

def test_a_photo_of_a_digit_is_converted_like_mnist(known_digit):
    pixels, _, _ = known_digit
    # Black ink on white paper, ten times larger, in colour with an alpha channel.
    big = Image.fromarray(255 - pixels).resize((280, 280), Image.BILINEAR).convert("RGBA")
    converted = images.to_mnist(images.open_image(png(np.asarray(big), "RGBA")))
    assert converted.shape == (28, 28) and converted.dtype == np.float32
    assert converted[:3].max() < 0.05  # dark background restored
    assert np.abs(converted - pixels / 255.0).mean() < 0.08


def test_already_mnist_shaped_images_are_not_resampled(known_digit):
    pixels, _, _ = known_digit
    # the same float32 arithmetic as mnist/data.py's scaling: bit-for-bit the tested input
    assert np.array_equal(images.to_mnist(images.open_image(png(pixels))), pixels.astype("float32") / 255.0)


def test_sixteen_bit_images_are_stretched_not_clipped():
    deep = np.full((28, 28), 1_000, "uint16")  # clipped to 8 bits, ground and digit would both be 255
    deep[5:20, 10:14] = 60_000
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, "PNG")
    converted = images.to_mnist(images.open_image(buffer.getvalue()))
    assert converted[10, 11] == 1.0 and converted[0, 0] == 0.0


def test_too_many_pixels_is_refused_before_decoding():
    with pytest.raises(images.ImageError) as caught:
        images.open_image(png(np.zeros((100, 200), "uint8")), max_pixels=10_000)
    assert caught.value.status == 413 and "200x100" in str(caught.value)


def test_rgb_crop_keeps_the_aspect_ratio():
    wide = np.zeros((100, 300, 3), "uint8")
    wide[:, 100:200] = 255  # a white square in the middle third
    out = images.to_rgb(images.open_image(png(wide)), 50, 50)
    assert out.shape == (50, 50, 3) and out.min() > 200  # the crop is the white square


def test_predictor_batches_concurrent_requests():
    class Slow:
        def predict_on_batch(self, x):
            time.sleep(0.05)
            return x * 2

    async def burst():
        predictor = Predictor(Slow(), mode="batch", max_batch=32)
        await predictor.start()
        inputs = [np.full((1, 3), i, "float32") for i in range(20)]
        results = await asyncio.gather(*(predictor.predict(x) for x in inputs))
        await predictor.stop()
        return predictor, inputs, results

    predictor, inputs, results = asyncio.run(burst())
    assert all(np.array_equal(r, x * 2) for x, r in zip(inputs, results))  # each gets its own rows
    assert predictor.inputs == 20 and predictor.calls <= 3


def test_binary_model_answers_json_and_refuses_images(tmp_path):
    model = xor.build_model()
    model.save(tmp_path / "xor.keras")
    with TestClient(service.create_app(loading.load_from_path(tmp_path / "xor.keras"))) as xor_client:
        answer = xor_client.post("/predict", json=[[0, 1], [1, 1]]).json()["predictions"]
        assert [sorted(p["label"] for p in a) for a in answer] == [["0", "1"], ["0", "1"]]
        assert all(sum(p["probability"] for p in a) == pytest.approx(1.0) for a in answer)
        image = xor_client.post("/predict", files={"image": ("d.png", png(np.zeros((8, 8), "uint8")))})
        assert image.status_code == 415 and "send JSON" in image.json()["detail"]


def test_application_path_converts_photos_to_rgb(shared_data):
    served = loading.load_application("mobilenet_v2", weights="none")
    assert served.input_shape == (224, 224, 3) and served.kind == "rgb"
    with TestClient(service.create_app(served)) as app_client:
        data = (shared_data / "dog.jpg").read_bytes()
        answer = app_client.post("/predict?top_k=3", files={"image": ("dog.jpg", data, "image/jpeg")})
        assert answer.status_code == 200
        assert len(answer.json()["predictions"][0]) == 3 and answer.json()["image"]["format"] == "JPEG"
        assert "untrained" in " ".join(app_client.get("/model").json()["notes"])


def test_lambda_model_is_refused_unless_unsafe(tmp_path):
    info = save_load.check_safe_mode(tmp_path)
    assert info["refused_in_safe_mode"] and info["max_difference_unsafe"] == 0
    with pytest.raises(ModelLoadError, match="--unsafe"):
        loading.load_from_path(tmp_path / "lambda_model.keras")
    assert loading.load_from_path(tmp_path / "lambda_model.keras", safe_mode=False).kind == "vector"


def test_labels_file_names_the_classes(mnist_run, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"digit {d}" for d in range(10)) + "\n")
    assert loading.load_from_path(mnist_run, labels=names).class_names[3] == "digit 3"
    names.write_text("just\nthree\nnames\n")
    with pytest.raises(ModelLoadError, match="3 class names for a model with 10 classes"):
        loading.load_from_path(mnist_run, labels=names)


def test_sample_images_are_written(tmp_path):
    from serving import samples

    written = samples.write_samples(tmp_path, labels=(3,))
    assert [p.name for p in written] == ["digit-3.png", "photo-3.jpg"]
    with Image.open(written[0]) as digit, Image.open(written[1]) as photo:
        assert (digit.size, digit.mode, photo.size, photo.mode) == ((28, 28), "L", (300, 300), "RGB")


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p / "missing", "no such file"),
    (lambda p: p, "no model.keras or best.keras"),
    (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "not a Keras model file"),
    (lambda p: (p / "bad.keras").write_bytes(b"not a zip") and p / "bad.keras", "could not load"),
])
def test_unloadable_model_paths_are_one_line_errors(tmp_path, make, fragment, capsys):
    assert service.main(["--model", str(make(tmp_path)), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


def test_application_without_cached_weights_names_the_file(capsys):
    assert service.main(["--application", "resnet50", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["--model", "m.keras", "--port", "70000"],
                                  ["--model", "m.keras", "--weights", "none"],
                                  ["--model", "m.keras", "--application", "resnet50"], []])
def test_bad_flags_exit_2(argv):
    with pytest.raises(SystemExit) as caught:
        service.parse_args(argv)
    assert caught.value.code == 2


def test_port_in_use_is_a_one_line_error(mnist_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert service.main(["--model", str(mnist_run), "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


# --- save and load ----------------------------------------------------------------

def test_every_format_round_trips_and_resuming_continues_exactly(tmp_path, capsys):
    assert save_load.main(["--epochs", "25", "--resume-epochs", "5", "--quiet",
                           "--output-dir", str(tmp_path)]) == 0
    (run_dir,) = (tmp_path / "serving").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    formats = {a["format"]: a for a in record["artefacts"]}
    assert set(formats) == {".keras (native)", "weights only", "JSON + weights", "legacy .h5", "SavedModel"}
    assert all(a["ok"] and a["max_difference"] <= save_load.TOLERANCE and a["bytes"] > 0
               for a in formats.values())
    for name in ("model.keras", "model.weights.h5", "model.json", "model.h5",
                 "saved_model/saved_model.pb", "lambda_model.keras"):
        assert (run_dir / name).exists(), name
    assert record["optimizer_state"]["iterations"] == 100 and record["optimizer_state"]["max_difference"] == 0
    assert record["resume"]["resumed_vs_uninterrupted"] == 0
    assert record["resume"]["weights_only_restart_vs_uninterrupted"] > 1e-4
    assert record["safe_mode"]["refused_in_safe_mode"]
    # Writing the legacy .h5 must not have spoiled the optimizer stored in model.keras.
    assert type(save_load.keras.saving.load_model(run_dir / "model.keras").optimizer).__name__ == "Adam"
    assert "identical" in capsys.readouterr().out


def test_a_round_trip_that_changes_predictions_is_reported(tmp_path, monkeypatch):
    model = xor.build_model()
    monkeypatch.setattr(save_load.keras.saving, "load_model", lambda path, **kwargs: save_load.rebuilt(model))
    result = save_load.check_native(model, tmp_path, xor.load_data()[0])
    assert not result.ok and result.max_difference > 0


def test_save_load_accepts_a_saved_model_file(tmp_path, capsys):
    models.build_model("le_net").save(tmp_path / "le_net.keras")
    assert save_load.main(["--model", str(tmp_path / "le_net.keras"), "--quiet",
                           "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("identical") == 5 and "no optimizer state" in out


def test_save_load_bad_model_path_is_one_line(tmp_path, capsys):
    assert save_load.main(["--model", str(tmp_path / "nope.keras")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no such file")


# --- the real server, over HTTP ---------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_real_server_answers_refuses_and_survives_a_burst(mnist_run, known_digit, tmp_path):
    pixels, label, _ = known_digit
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([sys.executable, "serving/app.py", "--model", str(mnist_run), "--port",
                               str(port), "--max-upload-mb", "0.05", "--quiet"], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "KERAS_TUTORIAL_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start in 60 s"
            time.sleep(0.3)
        assert httpx.get(f"{base}/model").json()["max_request_bytes"] == int(0.05 * 2**20)
        digit = png(pixels)
        assert httpx.post(f"{base}/predict", files={"image": ("d.png", digit)}).json()[
            "predictions"][0][0]["label"] == label
        for case, (kwargs, status, _) in BAD_REQUESTS.items():  # over real HTTP this time
            assert httpx.post(f"{base}/predict", **kwargs).status_code == status, case
        assert httpx.post(f"{base}/predict", content=b"\0" * 60_000,  # over 0.05 MB
                          headers={"content-type": "image/png"}).status_code == 413

        async def burst(requests=200, clients=8):
            statuses, labels = [], []
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                async def worker(k):
                    for i in range(k, requests, clients):
                        if i % 2:
                            r = await http.post("/predict", files={"image": ("d.png", digit)})
                        else:
                            r = await http.post("/predict", json=[(pixels / 255.0).tolist()])
                        statuses.append(r.status_code)
                        labels.append(r.json()["predictions"][0][0]["label"])
                await asyncio.gather(*(worker(k) for k in range(clients)))
            return statuses, labels

        statuses, labels = asyncio.run(burst())
        assert statuses == [200] * 200 and set(labels) == {label}
        assert httpx.get(f"{base}/health").status_code == 200
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert server.returncode == 0 and "Traceback" not in output, output
