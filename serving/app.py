"""A REST prediction service for a saved Keras model (FastAPI + uvicorn).

    python serving/app.py --model outputs/mnist/<run folder>
    curl -F image=@digit.png http://127.0.0.1:8000/predict

Endpoints: ``GET /health``, ``GET /model``, ``POST /predict`` (an uploaded
image, a raw image body, or a JSON array of inputs), and the interactive
OpenAPI page at ``/docs``.

Why FastAPI rather than the original tutorial's Flask: it runs on an event loop, so the
model can run off the request path (see ``serving/predictor.py``) and
concurrent requests can be batched; it validates query parameters and writes
the OpenAPI page from the code. Flask would need a WSGI server with several
worker processes, each holding its own copy of the model, to serve requests
concurrently.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `utils` imports from any folder

from serving import images, loading  # noqa: E402  (Keras loads on first use, after the flags are read)
from serving.predictor import MODES, Predictor  # noqa: E402
from utils import cli  # noqa: E402
from utils.errors import TutorialError  # noqa: E402

log = logging.getLogger("serving")
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
IMAGE_FIELDS = ("image", "file")  # the form field the original tutorial's curl used, and a common alternative

PREDICT_BODY = {  # what the OpenAPI page shows for POST /predict, since the body is parsed by hand
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "an image file"}}}},
        "application/json": {"schema": {"oneOf": [
            {"type": "array", "items": {}, "description": "inputs of shape (N, *input_shape)"},
            {"type": "object", "properties": {"inputs": {"type": "array", "items": {}}}}]}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _import_web() -> None:
    """Import FastAPI and Starlette (a second of start-up): only once a service is built,
    so that ``--help`` and a mistyped flag answer at once. FastAPI reads the endpoints'
    annotations (``request: Request``) from this module's globals, hence ``global``."""
    global FastAPI, Query, Request, JSONResponse, run_in_threadpool, HTTPException
    from fastapi import FastAPI, Query, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


class _TooLarge(Exception):
    pass


class NotJSON(ValueError):
    """A body sent as JSON that does not parse."""


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413.

    A declared ``Content-Length`` is checked before the body is read; a body
    sent in chunks is counted as it arrives. The excess is read and dropped
    (up to ``drain_bytes``) before answering: a server that answers and closes
    while the client is still sending makes the client see a reset connection
    instead of the 413.
    """

    def __init__(self, app, max_bytes: int, drain_bytes: int | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes if drain_bytes is not None else min(16 * max_bytes, 64 * 2**20)

    async def _answer(self, send, size: int | None) -> None:
        said = f"{size:,} bytes" if size is not None else f"more than {self.max_bytes:,} bytes"
        body = json.dumps({"detail": f"request body too large: {said}, the limit is "
                                     f"{self.max_bytes:,} bytes"}, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _drain(self, receive, already: int) -> None:
        while already <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            already += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > self.max_bytes:
            # curl asks "Expect: 100-continue" before big uploads: answering now
            # means the body is never sent at all.
            if headers.get(b"expect", b"").lower() != b"100-continue" and declared <= self.drain_bytes:
                await self._drain(receive, 0)
            return await self._answer(send, declared)

        received, finished, started = 0, False, False

        async def counting_receive():
            nonlocal received, finished
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            if not finished:
                await self._drain(receive, received)
            await self._answer(send, None)


def create_app(served: loading.ServedModel, *, max_bytes: int = DEFAULT_MAX_BYTES, top_k: int = 5,
               mode: str = "batch", max_batch: int = 32, max_pixels: int = images.MAX_PIXELS,
               decode_memory_mb: float | None = None, decode_wait: float | None = None) -> FastAPI:
    """The service for one loaded model. Start it with uvicorn, or test it with
    ``fastapi.testclient.TestClient`` (as a context manager, so start-up runs).

    ``max_pixels`` caps a picture's size, checked on its header before decoding;
    ``decode_memory_mb`` is the memory all requests decoding at once may use (one
    over it waits up to ``decode_wait`` seconds, then gets 503)."""
    _import_web()
    from starlette.requests import ClientDisconnect

    from serving import budget as budgets
    from utils.errors import ModelLoadError

    decode_budget = budgets.DecodeBudget(
        (decode_memory_mb or budgets.DEFAULT_MEMORY_MB) * 2**20,
        budgets.DEFAULT_WAIT_SECONDS if decode_wait is None else decode_wait)
    predictor = Predictor(served.model, mode=mode, max_batch=max_batch)
    specs = [(i.name, i.shape, i.dtype) for i in served.inputs]
    try:
        predictor.warm_up(specs)
    except Exception as err:  # e.g. a model whose layers need more than the test input gives
        shapes = ", ".join(f"{name} {tuple(predictor_shape(shape))}" for name, shape, _ in specs)
        raise ModelLoadError(f"model {served.name} fails on a test input ({shapes}), so the service "
                             f"cannot serve it: {' '.join(str(err).split())[:200]}") from None
    classes = served.classes
    default_top_k = top_k
    variable_size = any(None in i.shape for i in served.inputs)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await predictor.start()
        yield
        await predictor.stop()

    app = FastAPI(
        title="Keras tutorial prediction service",
        description=f"Serves **{served.name}** ({served.source}). POST an image (multipart field "
                    "`image`, or the raw bytes) or a JSON array of inputs to `/predict`.",
        lifespan=lifespan,
    )
    app.state.served = served
    app.state.predictor = predictor
    app.state.budget = decode_budget
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # e.g. a malformed multipart body from Starlette's parser
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request, exc):  # the client hung up (or timed out) mid-body: nobody to answer
        return error(400, "the client disconnected before sending the whole request")

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # a bug: logged with its traceback, never sent
        log.exception("error while answering %s %s", request.method, request.url.path)
        return error(500, "internal error while answering; the server log has the details")

    @app.get("/health", summary="Is the service up?")
    async def health():
        return {"status": "ok", "model": served.name}

    @app.get("/model", summary="What the service serves")
    async def model_info():
        return {**served.describe(), "default_top_k": min(top_k, classes), "max_request_bytes": max_bytes,
                "max_inputs_per_request": loading.MAX_INPUTS, "max_image_pixels": max_pixels,
                "max_image_aspect": images.MAX_ASPECT, "decode_memory_bytes": decode_budget.limit,
                "decode_memory_peak_bytes": decode_budget.peak, "busy_refusals": decode_budget.refused,
                "batching": mode, "model_calls": predictor.calls, "inputs_predicted": predictor.inputs}

    def from_image(image, cost: int):
        try:
            image = images.decode(image)
            return served.image_input(image), images.describe(image)
        finally:
            budgets.return_memory(cost)

    def from_json(body: bytes, cost: int):
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise NotJSON(f"the body is not valid JSON: {err}") from None
        except RecursionError:
            raise NotJSON("the body is not valid JSON: nested too deeply") from None
        try:
            return served.json_input(value), None
        finally:
            del value
            budgets.return_memory(cost)

    async def off_the_loop(convert, *args):
        """Decoding, resizing and parsing are CPU work too: a worker thread does them,
        except in the naive baseline, which does everything on the event loop."""
        if mode == "inline":
            return convert(*args)
        return await run_in_threadpool(convert, *args)

    async def image_request(data: bytes):
        image = images.peek(data, max_pixels)  # the header only: size and mode
        cost = images.decode_cost(image)
        async with decode_budget.hold(cost, f"a {image.width}x{image.height} {image.mode} image"):
            return await off_the_loop(from_image, image, cost)

    async def json_request(body: bytes):
        cost = len(body) * JSON_BYTES_PER_BODY_BYTE
        async with decode_budget.hold(cost, "this JSON body"):
            return await off_the_loop(from_json, body, cost)

    @app.post("/predict", summary="Top-k classes (or values) for an image or a batch of inputs",
              openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(request: Request,
                      top_k: int | None = Query(None, ge=1, description="how many classes to return "
                                                f"(default {min(top_k, classes)})")):
        if top_k is None:
            top_k = min(default_top_k, classes)
        elif not classes:
            return error(422, f"top_k is for classifiers: model {served.name} answers values")
        elif top_k > classes:
            return error(422, f"top_k must be at most {classes}: the model has {classes} classes")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        seen = None
        try:
            if media == "multipart/form-data":
                form = await request.form(max_files=4, max_fields=16)
                upload = next((form[f] for f in IMAGE_FIELDS if f in form), None)
                if upload is None or isinstance(upload, str):
                    return error(422, "no file: upload the image as a form field named 'image' "
                                      "(curl -F image=@picture.png ...)")
                x, seen = await image_request(await upload.read())
            elif media == "application/x-www-form-urlencoded":  # a form, but without a file in it
                return error(422, "no file: upload the image as multipart/form-data, field 'image' "
                                  "(curl -F image=@picture.png ...)")
            elif media.startswith("image/") or media == "application/octet-stream":
                x, seen = await image_request(await request.body())
            elif media == "application/json" or media.endswith("+json"):
                x, seen = await json_request(await request.body())
            elif not media and not await request.body():
                return error(422, "no input: upload an image (-F image=@picture.png) or send a JSON "
                                  f"array of shape {served.expected_shape()}")
            else:
                return error(415, f"unsupported content type {media!r}: use multipart/form-data "
                                  "(an image in field 'image'), image/*, or application/json")
        except images.ImageError as err:
            return error(err.status, str(err))
        except budgets.OverBudget as err:
            response = error(err.status, str(err))
            if err.retry_after:
                response.headers["Retry-After"] = str(err.retry_after)
            return response
        except NotJSON as err:
            return error(400, str(err))
        except loading.InputError as err:
            return error(422, str(err))
        try:
            outputs = await predictor.predict(x)
        except Exception as err:
            if not variable_size:
                raise
            # Open axes (images or sequences of any size) let a request pick a shape the
            # model cannot compute on, e.g. smaller than its pooling layers allow.
            log.warning("model %s failed on an input of shape %s: %s", served.name,
                        _shapes(x), " ".join(str(err).split())[:200])
            return error(422, f"model {served.name} cannot compute on an input of shape {_shapes(x)}; "
                              "try a larger (or more usual) size")
        try:
            answer = {"model": served.name, **served.answer(outputs, top_k)}
        except loading.OutputError as err:
            log.warning("%s", err)
            return error(422, str(err))
        if seen:
            answer["image"] = seen
        return answer

    return app


JSON_BYTES_PER_BODY_BYTE = 16  # Python lists and floats from json.loads, then the array


def predictor_shape(shape: tuple) -> list:
    from serving.predictor import WARM_UP_SIZE

    return ["N", *(WARM_UP_SIZE if d is None else d for d in shape)]


def _shapes(x) -> str:
    if isinstance(x, dict):
        return ", ".join(f"{name} {tuple(a.shape)}" for name, a in x.items())
    return str(tuple(x.shape))


# --- command line -------------------------------------------------------------------

def port_number(text: str) -> int:
    value = cli.positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1-65535")
    return value


MAX_UPLOAD_MB = (0.01, 1024.0)


def upload_mb(text: str) -> float:
    """argparse type: a request body limit in MB, finite and within MAX_UPLOAD_MB."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    low, high = MAX_UPLOAD_MB
    if not low <= value <= high:  # also catches inf and nan
        raise argparse.ArgumentTypeError(f"{text} MB is not a usable limit: give {low:g} to {high:g} "
                                         "(megabytes)")
    return value


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds greater than 0."""
    value = cli.positive_float(text)
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds: give a finite one")
    return value


from serving import limits  # noqa: E402  (no imports of its own: the defaults for --help)


def parse_args(argv=None):
    parser = cli.ArgumentParser(
        description="Serve a saved Keras model over HTTP: POST an image or JSON inputs to /predict.",
        formatter_class=cli._HelpFormatter,
        epilog="examples:\n  python serving/app.py --model outputs/mnist/<run folder>\n"
               "  python serving/app.py --application resnet50   # ImageNet weights must be cached",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="PATH",
                        help="a .keras file, or a run folder holding model.keras (its run.json names "
                             "the dataset, and so the class names)")
    source.add_argument("--application", choices=sorted(loading.APPLICATIONS),
                        help="an ImageNet classifier from keras.applications")
    parser.add_argument("--weights", default="imagenet", metavar="imagenet|none|FILE",
                        help="with --application: ImageNet weights from the Keras cache (never "
                             "downloaded), none (random, to try the plumbing), or a weights file")
    parser.add_argument("--labels", metavar="FILE", default=None,
                        help="class names, one per line; without it, the dataset's names from "
                             "run.json, else class numbers")
    parser.add_argument("--unsafe", action="store_true",
                        help="allow Lambda layers, whose Python code runs when the file loads: "
                             "only for files you trust")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 exposes the model to your whole network")
    parser.add_argument("--port", type=port_number, default=8000, help="TCP port")
    parser.add_argument("--max-upload-mb", type=upload_mb, default=DEFAULT_MAX_BYTES / 2**20,
                        help=f"largest request body accepted, {MAX_UPLOAD_MB[0]:g}-{MAX_UPLOAD_MB[1]:g}; "
                             "bigger ones get 413")
    guards = parser.add_argument_group("limits for hostile or slow clients")
    guards.add_argument("--max-pixels", type=cli.positive_int, default=limits.MAX_PIXELS,
                        help="largest picture accepted, in pixels, checked on its header before "
                             "decoding; bigger ones get 413")
    guards.add_argument("--decode-memory-mb", type=cli.positive_int, default=limits.DECODE_MEMORY_MB,
                        help="memory that all requests decoding at once may use; a request over it "
                             "waits, then gets 503 with Retry-After")
    guards.add_argument("--decode-wait", type=seconds, default=limits.DECODE_WAIT_SECONDS,
                        help="seconds a request waits for decoding memory before its 503")
    guards.add_argument("--header-timeout", type=seconds, default=limits.HEADER_TIMEOUT,
                        help="seconds a client has to send a request's headers; then 408 and closed")
    guards.add_argument("--body-timeout", type=seconds, default=limits.BODY_TIMEOUT,
                        help="seconds a client has to send a request's body once its headers are in")
    guards.add_argument("--keep-alive-timeout", type=cli.positive_int,
                        default=limits.KEEP_ALIVE_TIMEOUT,
                        help="seconds an idle kept-alive connection stays open")
    guards.add_argument("--max-connections", type=cli.positive_int,
                        default=limits.MAX_CONNECTIONS,
                        help="open connections (or requests) beyond which new requests get 503")
    parser.add_argument("--top-k", type=cli.positive_int, default=5,
                        help="classes per answer unless the request asks ?top_k=N")
    parser.add_argument("--batching", choices=MODES, default="batch",
                        help="batch: concurrent requests share model calls; thread: one call per "
                             "request off the event loop; inline: on the event loop (the slow baseline)")
    parser.add_argument("--max-batch", type=cli.positive_int, default=32,
                        help="most inputs in one batched model call")
    parser.add_argument("--backend", choices=cli.BACKENDS, default=cli.configured_backend(),
                        help="Keras backend; sets KERAS_BACKEND before Keras is imported")
    parser.add_argument("--quiet", action="store_true", help="no log line per request")
    args = parser.parse_args(argv)
    if args.weights != "imagenet" and not args.application:
        parser.error("--weights goes with --application; a --model file carries its own weights")
    return args


def load_served(args) -> loading.ServedModel:
    if args.application:
        if args.labels:
            raise TutorialError("--labels is for --model; applications use the ImageNet classes")
        return loading.load_application(args.application, args.weights)
    return loading.load_from_path(args.model, labels=args.labels, safe_mode=not args.unsafe)


def check_port_free(host: str, port: int) -> None:
    """Fail in one line, naming the right flag, when the server could not listen."""
    import errno

    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise TutorialError(f"--host {host}: no such address ({getattr(err, 'strerror', None) or err}); "
                            "use 127.0.0.1 (this machine only), 0.0.0.0 (every network) or an "
                            "address of this machine") from None
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as err:
        if err.errno == errno.EADDRNOTAVAIL:
            raise TutorialError(f"--host {host} is not an address of this machine ({err.strerror}); "
                                "use 127.0.0.1, 0.0.0.0 or one of its own addresses") from None
        if err.errno == errno.EACCES:
            raise TutorialError(f"cannot listen on port {port} ({err.strerror}): ports below 1024 need "
                                "administrator rights; pick another --port, e.g. 8000") from None
        raise TutorialError(f"cannot listen on {host}:{port} ({err.strerror}); pick another "
                            "--port, or stop the program using it") from None


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    import uvicorn

    from serving import connections

    check_port_free(args.host, args.port)
    served = load_served(args)
    app = create_app(served, max_bytes=int(args.max_upload_mb * 2**20), top_k=args.top_k,
                     mode=args.batching, max_batch=args.max_batch, max_pixels=args.max_pixels,
                     decode_memory_mb=args.decode_memory_mb, decode_wait=args.decode_wait)
    info = served.describe()
    print(f"serving {served.name} ({info['parameters']:,} parameters) from {served.source}")
    answers = f"{served.classes} classes" if served.classes else "values"
    print(f"input {info['input_shape']}, answers {answers}; batching: {args.batching}")
    for note in served.notes:
        print(f"note: {note}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the model")
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"open http://{shown}:{args.port}/docs for the API page; Ctrl-C stops the server", flush=True)
    print(f"limits: headers within {args.header_timeout:g} s, bodies within {args.body_timeout:g} s, "
          f"{args.max_connections} connections, pictures up to {args.max_pixels:,} pixels, "
          f"{args.decode_memory_mb} MB for decoding", flush=True)
    config = connections.uvicorn_config(
        app, args.host, args.port, header_timeout=args.header_timeout, body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout, max_connections=args.max_connections,
        log_level="warning" if args.quiet else "info", access_log=not args.quiet)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; the shutdown was clean
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
