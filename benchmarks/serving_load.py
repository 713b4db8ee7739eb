"""Load and reliability test of the prediction service (serving/app.py).

For each model-running mode (batch, thread, inline; see serving/predictor.py)
it starts the real server on 127.0.0.1, sends a fixed number of /predict
requests from concurrent clients, mixing valid images and JSON with every kind
of bad request, then stops the server. Meanwhile a probe asks /health every
100 ms: its latency shows whether model calls stall the event loop.

Hostile pictures are mixed in: a 65535x1 strip (refused with 422 on its header)
and a 6300x6300 PNG of a few kilobytes that decodes to 40 million pixels (200,
or 503 with Retry-After while the decode budget is spent). The server's memory
(resident set, RSS) is sampled every 50 ms: before the burst, its peak during
it, and a few seconds after.

The bar: every answer has the status its request deserves, no 5xx but those
503s, no request lost (a connection error or timeout), no traceback in the
server log, peak RSS under the start plus the decode budget plus
``--rss-margin-mb``, and RSS afterwards within ``--rss-margin-mb`` of the start.

    python benchmarks/serving_load.py                       # 2,000 requests, 16 clients, 3 modes
    python benchmarks/serving_load.py --modes batch --requests 500
    python benchmarks/serving_load.py --modes batch --requests 300 --clients 8 --decode-memory-mb 512

The model is an untrained conv_net from the MNIST chapter by default: its
weights do not change what a request costs. ``--model`` serves a real run,
``--application mobilenet_v2`` a much slower ImageNet network.
The load generator runs on the same machine, so it competes with the server
for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import ROOT, cli  # noqa: E402
from utils.lazy import lazy  # noqa: E402

httpx, np, Image = lazy("httpx"), lazy("numpy"), lazy("PIL.Image")  # imported on first use

MODES = ("batch", "thread", "inline")
LIMIT_MB = 1.0
BOMB_SIDE = 6300


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc), or NaN where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class MemoryWatch:
    """Samples a process's RSS every ``interval`` seconds in a thread; ``peak`` is the largest."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval, self.peak = pid, interval, float("nan")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            value = rss_mb(self.pid)
            if not self.peak >= value:  # also replaces the starting NaN
                self.peak = value
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def payloads(seed: int = 0, images_only: bool = False) -> list[tuple[str, tuple, dict]]:
    """(kind, the statuses it may get, httpx.post keyword arguments), in the order they rotate.

    ``images_only`` (for the ImageNet applications, whose JSON input would be
    150,528 numbers) swaps the valid JSON request for another photo."""
    rng = np.random.default_rng(seed)
    digit = np.zeros((28, 28), "uint8")
    digit[6:22, 12:16] = 255  # a "1", white on black, MNIST-sized
    noise = rng.integers(0, 255, (28, 28), dtype="uint8")

    def encoded(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        return buffer.getvalue()

    small_png = encoded(Image.fromarray(digit), "PNG")
    photo = encoded(Image.fromarray(255 - digit).resize((640, 480)).convert("RGB"), "JPEG")  # ink on paper
    corrupt = encoded(Image.fromarray(noise), "PNG")[:60]
    too_large = b"\0" * int(LIMIT_MB * 2**20 * 1.5)
    as_json = [(digit / 255.0).tolist()]
    strip = encoded(Image.new("L", (65535, 1), 255), "PNG")       # 65535x1: far too elongated
    bomb_pixels = np.zeros((BOMB_SIDE, BOMB_SIDE), "uint8")
    bomb_pixels[2000:4000, 3000:3300] = 255                          # a "1", 40 million pixels
    bomb = encoded(Image.fromarray(bomb_pixels), "PNG")              # a few tens of kilobytes
    valid = [
        ("png 28x28", (200,), {"files": {"image": ("d.png", small_png, "image/png")}}),
        ("jpeg 640x480", (200,), {"files": {"image": ("d.jpg", photo, "image/jpeg")}}),
        ("json (1,28,28)", (200,), {"json": as_json}) if not images_only else
        ("jpeg 640x480", (200,), {"files": {"image": ("d.jpg", photo, "image/jpeg")}}),
    ]
    bad = [
        ("no file", (422,), {"files": {"note": (None, "no image here")}}),
        ("not an image", (415,), {"files": {"image": ("x.png", b"just some text", "image/png")}}),
        ("corrupt png", (400,), {"files": {"image": ("x.png", corrupt, "image/png")}}),
        ("too large", (413,), {"files": {"image": ("x.png", too_large, "image/png")}}),
        ("wrong json shape", (422,), {"json": [[1.0, 2.0, 3.0]]}),
        ("png 65535x1", (422,), {"files": {"image": ("strip.png", strip, "image/png")}}),
        (f"png {BOMB_SIDE}x{BOMB_SIDE}", (200, 503), {"files": {"image": ("big.png", bomb, "image/png")}}),
    ]
    return valid * 3 + bad  # 9 valid : 7 bad or hostile


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(source: list[str], mode: str, port: int, log: Path, decode_mb: int) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "serving" / "app.py"), *source, "--port", str(port),
               "--host", "127.0.0.1", "--batching", mode, "--quiet", "--max-upload-mb", str(LIMIT_MB),
               "--decode-memory-mb", str(decode_mb)]
    return subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "KERAS_TUTORIAL_OFFLINE": "1"})


def wait_healthy(server: subprocess.Popen, base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode} while starting")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")


async def load(base: str, requests: int, clients: int, max_seconds: float, images_only: bool) -> dict:
    schedule = payloads(images_only=images_only)
    results: list[tuple[str, tuple, int | None, float]] = []  # kind, expected, status (None: lost), s
    health: list[float] = []
    next_index = 0
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=clients + 1)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

        async def client():
            nonlocal next_index
            while next_index < requests and time.monotonic() < deadline:
                kind, expected, kwargs = schedule[next_index % len(schedule)]
                next_index += 1
                start = time.perf_counter()
                try:
                    status = (await http.post("/predict", **kwargs)).status_code
                except httpx.HTTPError:
                    status = None
                results.append((kind, expected, status, time.perf_counter() - start))

        async def probe():
            while not done.is_set():
                start = time.perf_counter()
                try:
                    await http.get("/health")
                    health.append(time.perf_counter() - start)
                except httpx.HTTPError:
                    health.append(float("inf"))
                await asyncio.sleep(0.1)

        done = asyncio.Event()
        prober = asyncio.create_task(probe())
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
        done.set()
        await prober
        info = (await http.get("/model")).json()
        final_health = (await http.get("/health")).status_code
    valid = [t for kind, expected, status, t in results if expected == (200,) and status == 200]
    return {
        "sent": len(results), "not_sent": requests - len(results), "seconds": elapsed,
        "throughput": len(results) / elapsed,
        "valid_p50_ms": 1000 * float(np.percentile(valid, 50)) if valid else float("nan"),
        "valid_p99_ms": 1000 * float(np.percentile(valid, 99)) if valid else float("nan"),
        "health_p99_ms": 1000 * float(np.percentile(health, 99)) if health else float("nan"),
        "server_errors": sum(1 for _, expected, status, _ in results if status is not None
                             and status >= 500 and status not in expected),
        "busy_503": sum(1 for *_, status, _ in results if status == 503),
        "big_sent": sum(1 for kind, *_ in results if kind.startswith(f"png {BOMB_SIDE}")),
        "big_decoded": sum(1 for kind, _, status, _ in results if kind.startswith(f"png {BOMB_SIDE}")
                           and status == 200),
        "wrong_status": sum(1 for _, expected, status, _ in results if status is not None
                            and status not in expected),
        "lost": sum(1 for *_, status, _ in results if status is None),
        "mean_batch": info["inputs_predicted"] / max(info["model_calls"], 1),
        "final_health": final_health,
    }


def stop(server: subprocess.Popen) -> int:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)  # uvicorn finishes open requests and exits
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return server.returncode


def prepare_model(args, folder: Path) -> tuple[list[str], str]:
    """The server's model flags, and how to describe the model in the results."""
    if args.application:
        return (["--application", args.application, "--weights", "none"],
                f"{args.application} with random weights (the cost of a request does not depend on them)")
    if args.model:
        return ["--model", args.model], args.model
    from utils.quiet import import_keras

    keras = import_keras()  # only when a model has to be built
    from mnist import models

    keras.utils.set_random_seed(0)
    path = folder / f"{args.model_name}.keras"
    models.build_model(args.model_name).save(path)
    return ["--model", str(path)], f"untrained {args.model_name} from the MNIST chapter"


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--requests", type=cli.positive_int, default=2000, help="requests per mode")
    parser.add_argument("--clients", type=cli.positive_int, default=16, help="concurrent clients")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="server modes to measure, one server each")
    parser.add_argument("--model", default=None, help="a .keras file or run folder to serve")
    parser.add_argument("--model-name", default="conv_net",
                        help="without --model: the MNIST-chapter model to build untrained")
    parser.add_argument("--application", choices=("mobilenet_v2", "resnet50"), default=None,
                        help="serve this ImageNet network (random weights) instead: a slow model")
    parser.add_argument("--max-seconds", type=cli.positive_float, default=120,
                        help="stop sending after this long, per mode (unsent requests are reported)")
    parser.add_argument("--rounds", type=cli.positive_int, default=1,
                        help="measure every mode this many times, alternating the order")
    parser.add_argument("--startup-seconds", type=cli.positive_float, default=90,
                        help="how long a server may take to answer /health")
    parser.add_argument("--decode-memory-mb", type=cli.positive_int, default=512,
                        help="the server's --decode-memory-mb: memory for decoding pictures at once")
    parser.add_argument("--rss-margin-mb", type=cli.positive_float, default=200,
                        help="allowed RSS above the start: afterwards, and during the burst on top "
                             "of the decode budget")
    parser.add_argument("--settle-seconds", type=cli.positive_float, default=3,
                        help="wait after the burst before measuring RSS again")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/serving_load.py", *(sys.argv[1:] if argv is None else argv)])
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        source, described = prepare_model(args, Path(tmp))
        # Other work on the machine changes over minutes: later rounds reverse the
        # order of the modes, so no mode always runs in the same slot.
        order = [(r + 1, m) for r in range(args.rounds) for m in (args.modes if r % 2 == 0
                                                                  else args.modes[::-1])]
        for round_number, mode in order:
            port = free_port()
            log = Path(tmp) / f"server-{mode}.log"
            server = start_server(source, mode, port, log, args.decode_memory_mb)
            base = f"http://127.0.0.1:{port}"
            try:
                wait_healthy(server, base, args.startup_seconds)
                time.sleep(1)
                before = rss_mb(server.pid)
                with MemoryWatch(server.pid) as watch:
                    result = asyncio.run(load(base, args.requests, args.clients, args.max_seconds,
                                              images_only=bool(args.application)))
                time.sleep(args.settle_seconds)
                after = rss_mb(server.pid)
            except RuntimeError as err:
                print(f"{mode}: {err}\n{log.read_text()[-2000:]}", file=sys.stderr)
                stop(server)
                return 1
            code = stop(server)
            tracebacks = log.read_text().count("Traceback")
            result.update(mode=mode, round=round_number, exit_code=code, tracebacks=tracebacks,
                          load_average=os.getloadavg()[0], rss_before=before, rss_peak=watch.peak,
                          rss_after=after)
            rows.append(result)
            memory_ok = (watch.peak <= before + args.decode_memory_mb + args.rss_margin_mb
                         and after <= before + args.rss_margin_mb)
            ok &= (result["server_errors"] == result["lost"] == result["wrong_status"] == result["not_sent"]
                   == tracebacks == 0 and result["final_health"] == 200 and memory_ok)
            print(f"round {round_number}, {mode}: {result['sent']} requests in {result['seconds']:.1f} s, "
                  f"{result['big_decoded']} of {result['big_sent']} {BOMB_SIDE}x{BOMB_SIDE} pictures decoded "
                  f"(the others 503), load average after {result['load_average']:.1f}", flush=True)

    print(f"\nmodel: {described}; {args.requests} requests per mode from {args.clients} clients, "
          f"9 valid : 7 bad or hostile (a 65535x1 strip, a {BOMB_SIDE}x{BOMB_SIDE} PNG); request limit "
          f"{LIMIT_MB} MB; decode budget {args.decode_memory_mb} MB")
    print("| mode | round | requests | throughput (req/s) | valid p50 (ms) | valid p99 (ms) "
          "| /health p99 (ms) | mean batch | 503 busy | other 5xx | wrong status | lost | tracebacks "
          "| RSS before (MB) | RSS peak (MB) | RSS after (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (args.modes.index(r["mode"]), r["round"])):
        print(f"| {r['mode']} | {r['round']} | {r['sent']} | {r['throughput']:.0f} | "
              f"{r['valid_p50_ms']:.0f} | {r['valid_p99_ms']:.0f} | {r['health_p99_ms']:.0f} | "
              f"{r['mean_batch']:.1f} | {r['busy_503']} | "
              f"{r['server_errors']} | {r['wrong_status']} | {r['lost'] + r['not_sent']} | "
              f"{r['tracebacks']} | {r['rss_before']:.0f} | {r['rss_peak']:.0f} | {r['rss_after']:.0f} |")
    print(f"\ncommand: {command}")
    print(f"memory bar: peak RSS at most the start + {args.decode_memory_mb} MB (decode budget) + "
          f"{args.rss_margin_mb:g} MB; afterwards at most the start + {args.rss_margin_mb:g} MB")
    print("bar met: no 5xx but busy 503s, no lost request, every status as expected, memory bounded"
          if ok else "BAR NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
