"""A REST prediction service for a saved Keras model (FastAPI + uvicorn).

    python serving/app.py --model outputs/mnist/<run folder>
    curl -F image=@digit.png http://127.0.0.1:8000/predict

Endpoints: ``GET /health``, ``GET /model``, ``POST /predict`` (an uploaded
image, a raw image body, or a JSON array of inputs), and the interactive
OpenAPI page at ``/docs``.

Why FastAPI rather than the seed's Flask: it runs on an event loop, so the
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
IMAGE_FIELDS = ("image", "file")  # the form field the seed's curl used, and a common alternative

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
               mode: str = "batch", max_batch: int = 32, max_pixels: int = images.MAX_PIXELS) -> FastAPI:
    """The service for one loaded model. Start it with uvicorn, or test it with
    ``fastapi.testclient.TestClient`` (as a context manager, so start-up runs)."""
    _import_web()
    predictor = Predictor(served.model, mode=mode, max_batch=max_batch)
    predictor.warm_up(served.input_shape)
    classes = len(served.class_names)
    default_top_k = top_k

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
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # e.g. a malformed multipart body from Starlette's parser
        return error(exc.status_code, str(exc.detail))

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
                "max_inputs_per_request": loading.MAX_INPUTS, "batching": mode,
                "model_calls": predictor.calls, "inputs_predicted": predictor.inputs}

    def from_image(data: bytes):
        image = images.open_image(data, max_pixels)
        return served.image_input(image), images.describe(image)

    def from_json(body: bytes):
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise NotJSON(f"the body is not valid JSON: {err}") from None
        except RecursionError:
            raise NotJSON("the body is not valid JSON: nested too deeply") from None
        return served.json_input(value), None

    async def off_the_loop(convert, body: bytes):
        """Decoding, resizing and parsing are CPU work too: a worker thread does them,
        except in the naive baseline, which does everything on the event loop."""
        if mode == "inline":
            return convert(body)
        return await run_in_threadpool(convert, body)

    @app.post("/predict", summary="Top-k classes for an image or a batch of inputs",
              openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(request: Request,
                      top_k: int | None = Query(None, ge=1, description="how many classes to return "
                                                f"(default {min(top_k, classes)})")):
        if top_k is None:
            top_k = min(default_top_k, classes)
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
                x, seen = await off_the_loop(from_image, await upload.read())
            elif media == "application/x-www-form-urlencoded":  # a form, but without a file in it
                return error(422, "no file: upload the image as multipart/form-data, field 'image' "
                                  "(curl -F image=@picture.png ...)")
            elif media.startswith("image/") or media == "application/octet-stream":
                x, seen = await off_the_loop(from_image, await request.body())
            elif media == "application/json" or media.endswith("+json"):
                x, seen = await off_the_loop(from_json, await request.body())
            elif not media and not await request.body():
                return error(422, "no input: upload an image (-F image=@picture.png) or send a JSON "
                                  f"array of shape {served.expected_shape()}")
            else:
                return error(415, f"unsupported content type {media!r}: use multipart/form-data "
                                  "(an image in field 'image'), image/*, or application/json")
        except images.ImageError as err:
            return error(err.status, str(err))
        except NotJSON as err:
            return error(400, str(err))
        except loading.InputError as err:
            return error(422, str(err))
        probabilities = served.probabilities(await predictor.predict(x))
        answer = {"model": served.name, "predictions": served.top_k(probabilities, top_k)}
        if seen:
            answer["image"] = seen
        return answer

    return app


# --- command line -------------------------------------------------------------------

def port_number(text: str) -> int:
    value = cli.positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1-65535")
    return value


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
    parser.add_argument("--max-upload-mb", type=cli.positive_float, default=DEFAULT_MAX_BYTES / 2**20,
                        help="largest request body accepted; bigger ones get 413")
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
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        raise TutorialError(f"cannot listen on {host}:{port} ({err.strerror}); pick another "
                            "--port, or stop the program using it") from None


@cli.friendly_errors
def main(argv=None) -> int:
    args = parse_args(argv)
    cli.select_backend(args.backend)
    import uvicorn

    check_port_free(args.host, args.port)
    served = load_served(args)
    app = create_app(served, max_bytes=int(args.max_upload_mb * 2**20), top_k=args.top_k,
                     mode=args.batching, max_batch=args.max_batch)
    info = served.describe()
    print(f"serving {served.name} ({info['parameters']:,} parameters) from {served.source}")
    print(f"input {info['input_shape']}, {len(served.class_names)} classes; batching: {args.batching}")
    for note in served.notes:
        print(f"note: {note}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the model")
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"open http://{shown}:{args.port}/docs for the API page; Ctrl-C stops the server", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info",
                access_log=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
