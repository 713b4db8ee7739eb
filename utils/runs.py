"""Run folders: one per training run, holding everything needed to compare it.

``outputs/<chapter>/<YYYYmmdd-HHMMSS>_<model>[_N]/`` gets ``run.json`` (what
produced the run and how it ended), ``history.csv``, the plots and
``model.keras``. Folder creation is atomic, so two runs started in the same
second get ``..._model`` and ``..._model_1`` instead of sharing a folder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils import ROOT
from utils.errors import TrainingDiverged
from utils.lazy import lazy

pd = lazy("pandas")

PACKAGES = ("keras", "tensorflow", "jax", "jaxlib", "torch", "numpy", "pandas",
            "scikit-learn", "matplotlib", "h5py")


@dataclass
class RunResult:
    """What ``train_and_evaluate`` hands back to its caller and to tests."""

    run_dir: Path
    history: pd.DataFrame
    metrics: dict[str, float]
    extra: dict = field(default_factory=dict)


def new_run_dir(output_dir: Path | str, chapter: str, model_name: str,
                now: dt.datetime | None = None) -> Path:
    """Create and return a fresh, never-shared folder for one run."""
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    safe_model = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name) or "model"
    parent = Path(output_dir) / chapter
    parent.mkdir(parents=True, exist_ok=True)
    suffix = 0
    while True:
        name = f"{stamp}_{safe_model}" + (f"_{suffix}" if suffix else "")
        try:
            (parent / name).mkdir()  # fails if another run took the name first
            return parent / name
        except FileExistsError:
            suffix += 1


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a run's numbers."""
    import importlib.metadata  # imported here: slow, and only a finished run needs it

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    """The backend Keras runs on and the devices that backend can see."""
    import keras

    backend = keras.backend.backend()
    accelerators: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        accelerators = [d.name for d in tf.config.list_logical_devices("GPU")]
    elif backend == "jax":
        import jax

        accelerators = [str(d) for d in jax.devices() if d.platform != "cpu"]
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            accelerators = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "backend": backend,
        "device": ", ".join(accelerators) if accelerators else "cpu",
        "accelerators": accelerators,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def command_line(argv: list[str] | None) -> str:
    """The command that reproduces this run, as a learner would type it."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    try:
        shown = str(script.relative_to(ROOT)) if script else "?"
    except ValueError:
        shown = str(script)
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", shown, *args])


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "item"):  # NumPy scalars
        return value.item()
    return str(value)


class Run:
    """One training run: its folder, its clock, and what it records at the end."""

    def __init__(self, chapter: str, model_name: str, args, argv: list[str] | None = None,
                 run_dir: Path | None = None):
        """``run_dir`` reuses an existing folder, to resume an interrupted run."""
        self.chapter = chapter
        self.model_name = model_name
        self.args = args
        self.dir = Path(run_dir) if run_dir else new_run_dir(args.output_dir, chapter, model_name)
        self.started = time.time()
        self._clock = time.perf_counter()
        self.command = command_line(argv)
        global _current
        _current = self

    def path(self, name: str) -> Path:
        return self.dir / name

    def finish(self, *, model=None, history: pd.DataFrame | None = None,
               metrics: dict | None = None, **extra) -> RunResult:
        """Save the model and history, write run.json, return the result.

        A history whose loss is not a finite number means training diverged:
        the run is recorded as such (no model.keras) and
        :class:`~utils.errors.TrainingDiverged` is raised.
        """
        history = history if history is not None else pd.DataFrame()
        epoch = first_nonfinite_epoch(history)
        if epoch is not None:
            self.diverged(epoch, history=history)
        if model is not None:
            model.save(self.path("model.keras"))
        if not history.empty:  # a run without epochs leaves no empty table behind
            history.to_csv(self.path("history.csv"), index=False)
        self._write_record("finished", metrics, extra)
        return RunResult(self.dir, history, dict(metrics or {}), extra)

    def diverged(self, epoch: int, history: pd.DataFrame | None = None, metric: str = "loss"):
        """Record that the loss stopped being a number at ``epoch``; raise TrainingDiverged.

        run.json says ``"status": "diverged"``; no model is saved, since NaN
        weights would only break whatever loads them later.
        """
        if history is not None and not history.empty:
            history.to_csv(self.path("history.csv"), index=False)
        self._write_record("diverged", {}, {"diverged_at_epoch": epoch})
        raise TrainingDiverged(diverged_message(epoch, metric))

    def _write_record(self, status: str, metrics: dict | None, extra: dict) -> None:
        global _current
        if _current is self:
            _current = None
        record = {
            "status": status,
            "chapter": self.chapter,
            "model": self.model_name,
            "command": self.command,
            "cwd": os.getcwd(),
            "seed": getattr(self.args, "seed", None),
            "args": vars(self.args),
            "started_at": dt.datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - self._clock, 3),
            **device_info(),
            "versions": package_versions(),
            "metrics": metrics or {},
            **extra,
        }
        self.path("run.json").write_text(json.dumps(_jsonable(record), indent=2) + "\n")


_current: Run | None = None  # the run being trained, so a callback can mark it diverged


def current_run() -> Run | None:
    """The newest :class:`Run` that is not finished yet, if any."""
    return _current


def diverged_message(epoch: int, metric: str = "loss") -> str:
    return (f"training diverged: the {metric} became NaN (or infinite) at epoch {epoch}; "
            "lower --learning-rate (or check the input data for huge values)")


def first_nonfinite_epoch(history: pd.DataFrame, metric: str = "loss") -> int | None:
    """The first epoch whose ``metric`` is NaN or infinite, or None."""
    if history is None or history.empty or metric not in history:
        return None
    values = pd.to_numeric(history[metric], errors="coerce")
    bad = ~values.apply(lambda v: v == v and abs(v) != float("inf"))
    if not bad.any():
        return None
    row = bad.to_numpy().nonzero()[0][0]
    return int(history["epoch"].iloc[row]) if "epoch" in history else int(row) + 1


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def history_frame(history: dict[str, list], epoch_scale: int = 1) -> pd.DataFrame:
    """Keras ``History.history`` as a table with a 1-based ``epoch`` column.

    ``epoch_scale`` converts Keras epochs into passes over the data when one
    Keras epoch was made to cover several passes (see the XOR chapter).
    """
    frame = pd.DataFrame({k: list(map(float, v)) for k, v in history.items()})
    frame.insert(0, "epoch", [(i + 1) * epoch_scale for i in range(len(frame))])
    return frame
