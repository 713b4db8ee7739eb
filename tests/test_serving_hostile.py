"""The prediction service against a hostile client: pictures that would cost
gigabytes, slow and stalled connections, numbers no model can take, and models
of every shape. Every case is answered with a 4xx and a sentence, or refused
at start in one line; nothing is a 500."""

import asyncio
import io
import json
import socket
import threading
import time
import warnings

import httpx
import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # Starlette 1.x nudges towards httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from serving import app as service
from serving import budget, connections, images, loading
from utils.quiet import import_keras

keras = import_keras()


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def save(model, folder, name: str):
    path = folder / f"{name}.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def digit_client(models_dir):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")],
                             name="digits")
    served = loading.load_from_path(save(model, models_dir, "digits"))
    with TestClient(service.create_app(served, max_bytes=2**20, max_pixels=4_000_000, decode_memory_mb=32,
                                       decode_wait=0.2)) as client:
        yield client


@pytest.fixture(scope="module")
def colour_client(models_dir):
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")], name="colour")
    with TestClient(service.create_app(loading.load_from_path(save(model, models_dir, "colour")))) as client:
        yield client


def post_png(client, array):
    return client.post("/predict", files={"image": ("x.png", png(array), "image/png")})


# --- memory and CPU per request ------------------------------------------------------

def test_a_long_strip_is_refused_before_any_resizing(colour_client):
    start = time.perf_counter()
    response = post_png(colour_client, np.zeros((1, 65535), "uint8"))  # 65535x1: 224x blown up, 14.7 M
    assert response.status_code == 422 and "65535x1" in response.json()["detail"]
    assert time.perf_counter() - start < 5
    assert colour_client.get("/health").status_code == 200


def test_a_wide_picture_is_cropped_before_it_is_scaled():
    wide = np.zeros((400, 6000, 3), "uint8")  # 15:1, within the aspect limit
    wide[:, 2800:3200] = 255                   # a white square in the middle
    out = images.to_rgb(images.open_image(png(wide)), 32, 32)
    assert out.shape == (32, 32, 3) and out.min() > 200  # only the centre square was resampled


def test_pixel_cap_is_a_flag_checked_on_the_header(digit_client):
    response = post_png(digit_client, np.zeros((2100, 2000), "uint8"))  # 4.2 M pixels, over the 4 M cap
    assert response.status_code == 413 and "2000x2100" in response.json()["detail"]
    assert "4,000,000" in response.json()["detail"]
    assert service.parse_args(["--model", "m.keras"]).max_pixels == images.MAX_PIXELS
    assert service.parse_args(["--model", "m.keras", "--max-pixels", "5000"]).max_pixels == 5000


def test_a_picture_over_the_whole_decode_budget_gets_413(digit_client):
    # 2000x2000 RGB: 4 million pixels of 4 bytes plus working copies, over the 32 MB of the test app
    response = post_png(digit_client, np.zeros((2000, 2000, 3), "uint8") + 255)
    assert response.status_code == 413, response.text
    assert "MB to decode" in response.json()["detail"]


def test_a_busy_decode_budget_answers_503_with_retry_after(digit_client):
    spent = digit_client.app.state.budget
    spent.used = spent.limit  # as if other requests were decoding large pictures right now
    try:
        response = post_png(digit_client, np.zeros((28, 28), "uint8"))
    finally:
        spent.used = 0
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "busy" in response.json()["detail"]
    assert post_png(digit_client, np.zeros((28, 28), "uint8")).status_code == 200  # free again


def test_the_decode_budget_makes_requests_wait_their_turn():
    async def scenario():
        shared = budget.DecodeBudget(100, wait_seconds=0.3)
        order = []

        async def user(name, cost, hold_for):
            async with shared.hold(cost):
                order.append((name, shared.used))
                await asyncio.sleep(hold_for)

        first = asyncio.create_task(user("first", 60, 0.1))
        await asyncio.sleep(0.01)
        await user("second", 60, 0)  # waits for the first to finish, then fits
        await first
        with pytest.raises(budget.OverBudget) as never:
            async with shared.hold(101):
                pass
        async with shared.hold(100):
            with pytest.raises(budget.OverBudget) as busy:
                async with shared.hold(1):
                    pass
        return order, never.value, busy.value, shared

    order, never, busy, shared = asyncio.run(scenario())
    assert order == [("first", 60), ("second", 60)] and shared.peak == 100 and shared.used == 0
    assert never.status == 413 and busy.status == 503 and busy.retry_after == 1


# --- no 500 for a client's mistake ----------------------------------------------------

def test_a_json_integer_with_hundreds_of_digits_is_422(digit_client):
    body = b"[[" + b"9" * 500 + b"," + b",".join([b"0"] * 783) + b"]]"
    response = digit_client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "too large" in response.json()["detail"]
    big = b"[[1e39," + b",".join([b"0"] * 783) + b"]]"  # finite for JSON, infinite in float32
    assert digit_client.post("/predict", content=big,
                             headers={"content-type": "application/json"}).status_code == 422


def test_an_embedding_index_out_of_range_is_422(models_dir):
    model = keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 2),
                              keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    served = loading.load_from_path(save(model, models_dir, "embedding"))
    assert served.inputs[0].index_limit == 10
    with TestClient(service.create_app(served)) as client:
        for bad in ([[1e9, 0, 0]], [[-1, 0, 0]], [[1.5, 0, 0]]):
            response = client.post("/predict", json=bad)
            assert response.status_code == 422 and "0 to 9" in response.json()["detail"], bad
        assert client.post("/predict", json=[[1, 2, 9]]).status_code == 200


def test_a_model_with_nan_weights_is_refused_at_start(models_dir, capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")], name="nan")
    kernel, bias = model.get_weights()
    kernel[0, 0] = np.nan
    model.set_weights([kernel, bias])
    path = save(model, models_dir, "nan")
    assert service.main(["--model", str(path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "dense" in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_output_that_overflows_is_422_not_500(models_dir):
    ten = keras.initializers.Constant(10.0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer=ten)])
    with TestClient(service.create_app(loading.load_from_path(save(model, models_dir, "line")))) as client:
        response = client.post("/predict", json=[[3e38]])  # a finite input, 10 times that is not
        model_says = model.predict(np.array([[3e38]], "float32"), verbose=0)
        if np.isfinite(model_says).all():
            pytest.skip("this backend does not overflow here")
        assert response.status_code == 422 and "NaN or infinity" in response.json()["detail"]


# --- every model shape -----------------------------------------------------------------

def test_a_two_input_two_output_model_takes_named_json(models_dir):
    from mlp.model_api import build_two_input_model

    keras.utils.set_random_seed(0)
    model = build_two_input_model()
    served = loading.load_from_path(save(model, models_dir, "two"))
    assert [i.name for i in served.inputs] == ["category", "numbers"]
    numbers, category = [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]] * 2, [[1], [4]]
    expected = model.predict({"numbers": np.array(numbers, "float32"),
                              "category": np.array(category, "int32")}, verbose=0)
    with TestClient(service.create_app(served)) as client:
        answer = client.post("/predict?top_k=2", json={"numbers": numbers, "category": category})
        assert answer.status_code == 200, answer.text
        outputs = answer.json()["outputs"]
        assert [len(r) for r in outputs["label"]] == [2, 2]  # classes, top 2
        assert outputs["label"][0][0]["probability"] == pytest.approx(float(expected["label"][0].max()),
                                                                      abs=1e-5)
        assert [r["value"] for r in outputs["value"]] == pytest.approx(expected["value"][:, 0], abs=1e-5)
        wrapped = client.post("/predict", json={"inputs": {"numbers": numbers, "category": category}})
        assert wrapped.status_code == 200
        for bad, fragment in [({"numbers": numbers}, "2 inputs"), ([[0.0] * 6], "2 inputs"),
                              ({"numbers": numbers, "category": [[1]]}, "same number"),
                              ({"numbers": numbers, "category": [[1], [99]]}, "0 to 4")]:
            response = client.post("/predict", json=bad)
            assert response.status_code == 422 and fragment in response.json()["detail"], bad
        image = post_png(client, np.zeros((8, 8), "uint8"))
        assert image.status_code == 415


def test_a_model_of_any_image_size_takes_pictures_at_their_own_size(models_dir):
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")], name="any_size")
    served = loading.load_from_path(save(model, models_dir, "any_size"))
    assert served.kind == "rgb_any"
    photo = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype="uint8")
    expected = model.predict(photo[None].astype("float32") / 255.0, verbose=0)[0]
    with TestClient(service.create_app(served)) as client:
        answer = post_png(client, photo)
        assert answer.status_code == 200, answer.text
        best = answer.json()["predictions"][0][0]
        assert best["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
        assert post_png(client, np.zeros((1200, 1100, 3), "uint8")).status_code == 200  # scaled down
        tiny = post_png(client, np.zeros((1, 2, 3), "uint8"))  # smaller than the 3x3 convolution
        assert tiny.status_code == 422, tiny.text
    assert images.to_own_size(images.open_image(png(np.zeros((1200, 1100, 3), "uint8"))), 3).size \
        <= 3 * images.MAX_OWN_SIZE_PIXELS


def test_a_model_that_fails_on_the_test_input_is_refused_in_one_line():
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(1, 40),  # needs 40x40
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    served = loading.ServedModel(model, "in memory", ["a", "b"], "rgb_any")
    with pytest.raises(service.TutorialError, match="fails on a test input"):
        service.create_app(served)


@pytest.mark.parametrize("mode", ["batch", "thread", "inline"])
def test_every_batching_mode_takes_named_inputs_and_pictures_of_any_size(mode):
    async def burst():
        from serving.predictor import Predictor

        class Echo:  # sums each input, so every request can check it got its own rows back
            def predict_on_batch(self, x):
                if isinstance(x, dict):
                    return {"total": sum(v.reshape(len(v), -1).sum(1, keepdims=True) for v in x.values())}
                return x.reshape(len(x), -1).sum(1, keepdims=True)

        predictor = Predictor(Echo(), mode=mode)
        await predictor.start()
        inputs = [np.full((1, 4 + i % 3, 5, 3), i, "float32") for i in range(9)]  # three image sizes
        inputs += [{"a": np.full((2, 2), i, "float32"), "b": np.full((2, 1), 1, "int32")} for i in range(3)]
        results = await asyncio.gather(*(predictor.predict(x) for x in inputs))
        await predictor.stop()
        return predictor, inputs, results

    predictor, inputs, results = asyncio.run(burst())
    for x, result in zip(inputs, results):
        if isinstance(x, dict):
            assert result["total"][:, 0].tolist() == [2 * x["a"][0, 0] + 1] * 2
        else:
            assert result[:, 0].tolist() == [x.sum()]
    assert predictor.inputs == 15 and predictor.calls <= (6 if mode == "batch" else 12)  # 4 shapes: 4 calls


def test_a_regression_model_answers_values(models_dir):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="regression")
    served = loading.load_from_path(save(model, models_dir, "regression"))
    x = np.array([[0.5, -1.0], [2.0, 3.0]], "float32")
    expected = model.predict(x, verbose=0)[:, 0]
    with TestClient(service.create_app(served)) as client:
        answer = client.post("/predict", json=x.tolist()).json()
        assert [p["value"] for p in answer["predictions"]] == pytest.approx(expected, abs=1e-5)
        assert "probability" not in json.dumps(answer)
        assert client.post("/predict?top_k=1", json=x.tolist()).status_code == 422
        assert client.get("/model").json()["outputs"][0]["answers"] == "values"


# --- learner mistakes at start: one line, exit 2 --------------------------------------

def test_a_run_json_holding_a_list_is_one_line(models_dir, tmp_path, capsys):
    (tmp_path / "run.json").write_text("[1, 2, 3]")
    (tmp_path / "model.keras").write_bytes((models_dir / "regression.keras").read_bytes())
    assert service.main(["--model", str(tmp_path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "run.json holds a JSON list" in err and err.count("\n") == 1


def test_a_binary_labels_file_is_one_line(models_dir, tmp_path, capsys):
    labels = tmp_path / "labels.bin"
    labels.write_bytes(bytes(range(256)))
    assert service.main(["--model", str(models_dir / "colour.keras"), "--labels", str(labels),
                         "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "not a text file" in err and err.count("\n") == 1


@pytest.mark.parametrize("value", ["inf", "1e-9", "nan", "-3"])
def test_an_unusable_upload_limit_exits_2(value, capsys):
    with pytest.raises(SystemExit) as caught:
        service.parse_args(["--model", "m.keras", "--max-upload-mb", value])
    assert caught.value.code == 2 and "--max-upload-mb" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["no-such-host.invalid", "256.1.1.1", "192.0.2.1"])
def test_a_bad_host_names_the_host_not_the_port(host):
    with pytest.raises(service.TutorialError) as caught:
        service.check_port_free(host, free_port())
    assert "--host" in str(caught.value) and "--port" not in str(caught.value)


# --- slow and idle clients, over a real socket ------------------------------------------

@pytest.fixture(scope="module")
def timed_server(models_dir):
    """The digits app behind uvicorn with 1 s header and body timeouts, in a thread."""
    import uvicorn

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")], name="small")
    app = service.create_app(loading.load_from_path(save(model, models_dir, "small")))
    port = free_port()
    config = connections.uvicorn_config(app, "127.0.0.1", port, header_timeout=1.0, body_timeout=1.0,
                                        keep_alive_timeout=1, max_connections=20, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def read_until_closed(sock: socket.socket, limit: float = 6.0) -> tuple[bytes, float]:
    start, data = time.monotonic(), b""
    sock.settimeout(limit)
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


@pytest.mark.parametrize("sent, what", [
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Ty", "headers"),  # half a header, then nothing
    (b"", "headers"),                                                   # connects, sends nothing
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 100\r\n\r\n[[0.1,", "body"),                   # a body that stops
], ids=["half a header", "nothing at all", "half a body"])
def test_a_stalled_client_is_dropped_while_health_answers(timed_server, sent, what):
    with socket.create_connection(("127.0.0.1", timed_server)) as stalled:
        stalled.sendall(sent)
        started = time.monotonic()
        health = httpx.get(f"http://127.0.0.1:{timed_server}/health", timeout=2)  # meanwhile
        assert health.status_code == 200 and time.monotonic() - started < 0.9
        data, waited = read_until_closed(stalled)
    assert data.startswith(b"HTTP/1.1 408") and what.encode() in data
    assert 0.5 < time.monotonic() - started < 3.5, waited
    answer = httpx.post(f"http://127.0.0.1:{timed_server}/predict", json=[[0, 0, 0, 1]], timeout=5)
    assert answer.status_code == 200


def test_a_slow_model_is_not_a_slow_client(timed_server):
    """The deadlines count only what the client sends: a full request keeps its connection."""
    with httpx.Client(base_url=f"http://127.0.0.1:{timed_server}", timeout=5) as http:
        for _ in range(3):
            assert http.post("/predict", json=[[0, 0, 0, 1]]).status_code == 200
            time.sleep(0.4)  # idle, under the 1 s keep-alive timeout
