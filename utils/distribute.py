"""Chapter 9: one model trained on several devices or processes, and mixed precision.

Data parallelism keeps a whole copy of the model on every device. Each step
the global batch (``--batch-size``) is cut into equal parts, one per device;
every device computes the gradient of its part, the gradients are averaged
across devices, and every copy applies the same update, so the copies never
drift apart. With the same global batch the arithmetic is that of one device
(up to the order of floating-point additions); what changes is how much of it
runs at once.

- TensorFlow: ``tf.distribute.MirroredStrategy`` over the local GPUs (or the
  CPU split into logical devices); the model is built and compiled in its scope.
- JAX: ``keras.distribution.DataParallel`` over every device of every process;
  several processes (several machines) join through
  ``keras.distribution.initialize`` and JAX's coordinator, exchanging
  gradients with gloo collectives on CPUs (NCCL on GPUs).
- PyTorch: not shown here; the chapter says so and stops.

Nothing here imports Keras at module level: a chapter script chooses the
backend first, imports Keras, then calls :func:`setup` before it builds data
or models (JAX's device count and multi-process runtime are fixed when its
first computation runs).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from utils import cli
from utils.errors import BackendError, TutorialError

STRATEGIES = ("none", "mirrored")
POLICIES = ("mixed_float16", "mixed_bfloat16")
# Keras's own names for the multi-process settings, so a launcher that already
# exports them (or a cluster script) needs no flags.
ENV_COORDINATOR = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
#: Seconds to wait for every process to join. JAX itself gives up (and aborts the
#: process with a long log) after 300 s, so the tutorial's limit stays below that.
DEFAULT_JOIN_TIMEOUT = 60
MAX_JOIN_TIMEOUT = 290


def join_timeout(text: str) -> int:
    """argparse type for --join-timeout: whole seconds, 1 to MAX_JOIN_TIMEOUT."""
    value = cli.positive_int(text)
    if value > MAX_JOIN_TIMEOUT:
        import argparse

        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_JOIN_TIMEOUT} s (JAX itself "
                                         "stops waiting at 300 s)")
    return value


def check_coordinator(address: str) -> str:
    """``HOST:PORT`` (or Keras's comma-separated list of them, the first being process 0)."""
    for part in address.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TutorialError(f"--coordinator {address!r} is not HOST:PORT (e.g. 127.0.0.1:12345 or "
                                "node0.example.org:12345, a port from 1 to 65535)")
    return address


def add_arguments(parser) -> None:
    """The chapter-9 flags, as one group of a chapter's parser."""
    group = parser.add_argument_group("devices, processes and precision")
    group.add_argument("--distribute", choices=STRATEGIES, default="none",
                       help="mirrored: a copy of the model on every device (all GPUs, or the CPU "
                            "split by --cpu-devices), each batch split between them; TensorFlow "
                            "MirroredStrategy or JAX DataParallel")
    group.add_argument("--cpu-devices", type=cli.positive_int, default=1, metavar="N",
                       help="split the CPU into N logical devices, to try --distribute without "
                            "GPUs (they share the same cores: no speed-up)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="several processes (JAX): the address process 0 listens on, the same "
                            f"for every process (default: ${ENV_COORDINATOR}, else one process)")
    group.add_argument("--num-processes", type=cli.positive_int, default=None, metavar="N",
                       help=f"how many processes train together (default: ${ENV_NUM_PROCESSES}, "
                            "else 1)")
    group.add_argument("--process-id", type=int, default=None, metavar="I",
                       help=f"this process's number, 0 to N-1 (default: ${ENV_PROCESS_ID}, else 0)")
    group.add_argument("--join-timeout", type=join_timeout, default=DEFAULT_JOIN_TIMEOUT, metavar="SECONDS",
                       help="with several processes: how long to wait for all of them to join before "
                            f"giving up (at most {MAX_JOIN_TIMEOUT})")
    group.add_argument("--mixed-precision", nargs="?", const="mixed_float16", default=None,
                       choices=POLICIES, metavar="POLICY",
                       help="compute in 16-bit floats on a GPU, keeping weights in float32: "
                            "mixed_float16 (what a bare flag means) or mixed_bfloat16; ignored "
                            "with a note on a CPU (default: off)")


@dataclass
class Plan:
    """Where one training run computes, and how it splits the work."""

    backend: str = ""
    strategy: str = "none"
    devices: list[str] = field(default_factory=list)  # empty: the backend's default device
    num_processes: int = 1
    process_id: int = 0
    coordinator: str | None = None
    mixed_precision: str = "off"
    tf_strategy: object = None

    @property
    def replicas(self) -> int:
        return max(1, len(self.devices)) if self.strategy == "mirrored" else 1

    @property
    def pads_batches(self) -> bool:
        # JAX cuts a batch into equal slices by its sharding: a short last
        # batch that does not divide evenly is an error, not a smaller slice.
        return self.backend == "jax" and self.strategy == "mirrored"

    def scope(self):
        """Where the model must be built and compiled (TensorFlow's strategy scope)."""
        return self.tf_strategy.scope() if self.tf_strategy is not None else contextlib.nullcontext()

    def compile_args(self, loss: str, metrics: list) -> dict:
        """``loss`` and ``metrics`` for ``model.compile``, counting real samples only
        when batches carry padding (see :meth:`batches`): the loss is averaged
        over the weights, and the metrics become weighted metrics (Keras hands
        sample weights to those only)."""
        if not self.pads_batches:
            return {"loss": loss, "metrics": metrics}
        import keras

        # "sparse_categorical_crossentropy" -> keras.losses.SparseCategoricalCrossentropy
        loss_class = getattr(keras.losses, loss.title().replace("_", ""))
        return {"loss": loss_class(reduction="mean_with_sample_weight"), "weighted_metrics": metrics}

    def batches(self, dataset, batch_size: int):
        """``dataset`` of (images, labels) batches, made fit for the devices.

        With JAX every batch is padded to the full ``batch_size`` with rows of
        sample weight 0, so each device gets an equal slice (and each process
        an equal share) while the padding changes neither gradients nor
        accuracy. TensorFlow's strategy splits short batches itself.
        """
        if not self.pads_batches:
            return dataset
        import tensorflow as tf

        def pad(images, labels):
            real = tf.shape(labels)[0]
            extra = batch_size - real
            weights = tf.concat([tf.ones([real]), tf.zeros([extra])], axis=0)
            images = tf.pad(images, [[0, extra]] + [[0, 0]] * (len(images.shape) - 1))
            labels = tf.pad(labels, [[0, extra]])
            images = tf.ensure_shape(images, [batch_size, *images.shape[1:]])
            return images, tf.ensure_shape(labels, [batch_size]), tf.ensure_shape(weights, [batch_size])

        return dataset.map(pad)

    @contextlib.contextmanager
    def local(self):
        """Run the block on this process's default device, outside the distribution.

        A model loaded from disk in here is an ordinary one-device model: the
        final test evaluation sees every test image, none padded, and each
        process can fetch its predictions.
        """
        if not self.pads_batches:
            yield
            return
        import keras

        active = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(active)

    def run_dir(self, output_dir, chapter: str, model_name: str) -> Path | None:
        """With several processes each writes its own folder, ``<time>_<model>_p<I>``;
        ``None`` (a single process) leaves the name to :class:`utils.runs.Run`."""
        if self.num_processes == 1:
            return None
        from utils import runs

        return runs.new_run_dir(output_dir, chapter, f"{model_name}_p{self.process_id}")

    def record(self, batch_size: int | None = None) -> dict:
        """What run.json keeps about devices, processes and precision."""
        replicas = self.replicas
        info = {"strategy": self.strategy, "devices": self.devices or ["default"],
                "replicas": replicas, "num_processes": self.num_processes,
                "process_id": self.process_id, "coordinator": self.coordinator}
        if batch_size:
            info.update(global_batch=batch_size, per_replica_batch=batch_size // replicas)
        return {"distribution": info, "mixed_precision": self.mixed_precision}

    def describe(self, batch_size: int) -> str:
        """One line for the console."""
        if self.strategy == "none":
            return ""
        where = f"{self.replicas} devices ({', '.join(self.devices)})"
        if self.num_processes > 1:
            where += f" in {self.num_processes} processes; this is process {self.process_id}"
        return (f"*** data parallel over {where}: global batch {batch_size} = "
                f"{self.replicas} x {batch_size // self.replicas}")


_ACTIVE = Plan()


def active() -> Plan:
    """The plan :func:`setup` made; a one-device plan when it was never called."""
    return _ACTIVE


def _settings(args) -> tuple[str, str | None, int, int]:
    coordinator = getattr(args, "coordinator", None) or os.environ.get(ENV_COORDINATOR) or None
    try:
        num = getattr(args, "num_processes", None) or int(os.environ.get(ENV_NUM_PROCESSES) or 1)
        pid = getattr(args, "process_id", None)
        pid = int(os.environ.get(ENV_PROCESS_ID) or 0) if pid is None else pid
    except ValueError as err:
        raise TutorialError(f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be whole numbers: "
                            f"{err}") from None
    strategy = getattr(args, "distribute", "none")
    if num > 1:
        strategy = "mirrored"  # several processes only make sense training one model together
    return strategy, coordinator, num, pid


def setup(args) -> Plan:
    """Check the flags against the backend, configure devices and processes,
    set the precision policy; call once, after Keras is imported and before
    any data or model is built."""
    import keras

    global _ACTIVE
    backend = keras.backend.backend()
    strategy, coordinator, num, pid = _settings(args)
    if coordinator:
        check_coordinator(coordinator)  # here, not in argparse: the docs show HOST:PORT placeholders
    cpu_devices = getattr(args, "cpu_devices", 1)
    if backend == "torch" and (strategy != "none" or cpu_devices > 1):
        raise BackendError("--distribute, --cpu-devices and several processes are not supported on "
                           "torch in this tutorial: use --backend tensorflow or --backend jax")
    if num > 1:
        if backend != "jax":
            raise BackendError("training with several processes is shown with JAX: add --backend jax")
        if not coordinator:
            raise TutorialError(f"--num-processes {num} needs --coordinator HOST:PORT, the address "
                                "process 0 listens on (the same value for every process)")
        if not 0 <= pid < num:
            raise TutorialError(f"--process-id must be 0 to {num - 1} for {num} processes, not {pid}")
        if getattr(args, "resume", None):
            raise TutorialError("--resume continues a one-process run; start several processes afresh")
    plan = Plan(backend, strategy, num_processes=num, process_id=pid,
                coordinator=coordinator if num > 1 else None)
    if backend == "tensorflow":
        _setup_tensorflow(plan, cpu_devices)
    elif backend == "jax":
        _setup_jax(plan, cpu_devices, getattr(args, "join_timeout", DEFAULT_JOIN_TIMEOUT))
    batch_size = getattr(args, "batch_size", None)
    if batch_size and batch_size % plan.replicas:
        raise TutorialError(f"--batch-size {batch_size} does not split evenly over {plan.replicas} "
                            f"devices: pick a multiple of {plan.replicas}")
    if strategy == "mirrored" and plan.replicas == 1:
        print("note: --distribute mirrored found one device, so it trains as usual "
              "(--cpu-devices 2 splits a CPU to try it)")
    plan.mixed_precision = _mixed_precision(getattr(args, "mixed_precision", None), backend)
    _ACTIVE = plan
    return plan


def _too_late(what: str) -> TutorialError:
    return TutorialError(f"{what} must be set before the backend starts computing: run the chapter "
                         "as a script (python mnist/mnist.py ...), not from a session that already "
                         "trained something")


def _setup_tensorflow(plan: Plan, cpu_devices: int) -> None:
    import tensorflow as tf

    if cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        except RuntimeError:  # TensorFlow's devices are already initialised
            if len(tf.config.list_logical_devices("CPU")) != cpu_devices:
                raise _too_late("--cpu-devices") from None
    if plan.strategy == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")
                   or tf.config.list_logical_devices("CPU")]
        plan.tf_strategy = tf.distribute.MirroredStrategy(devices)
        plan.devices = devices


@contextlib.contextmanager
def _give_up_after(plan: Plan, seconds: int):
    """End the process with one line and exit code 2 when the block (joining the other
    processes) has not finished after ``seconds``.

    JAX waits inside native code that Python cannot interrupt, and when its own limit
    passes it aborts the process with a stack dump; a watchdog thread is the one way
    to give up cleanly.
    """
    def give_up():
        others = "process 0 at " + plan.coordinator if plan.process_id else \
            f"the other {plan.num_processes - 1} process(es)"
        print(f"error: process {plan.process_id} of {plan.num_processes} waited {seconds} s for {others} "
              "to join and gave up: start every process (same --coordinator and --num-processes, "
              "--process-id 0 to N-1) within --join-timeout of each other", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _setup_jax(plan: Plan, cpu_devices: int, timeout: int = DEFAULT_JOIN_TIMEOUT) -> None:
    import jax
    import keras

    if cpu_devices > 1:
        try:
            jax.config.update("jax_num_cpu_devices", cpu_devices)
        except RuntimeError:
            pass
        if len(jax.devices("cpu")) != cpu_devices:
            raise _too_late("--cpu-devices")
    if plan.num_processes > 1:
        # Gradients cross processes through CPU collectives: gloo, JAX's
        # default, set here so that it is visible (GPUs use NCCL instead).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # Each process reads its share of a batch from a re-batched, sharded
        # dataset whose length Keras cannot know ahead; it warns every first epoch.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        try:
            with _give_up_after(plan, timeout):
                keras.distribution.initialize(plan.coordinator, plan.num_processes, plan.process_id)
        except RuntimeError as err:
            if "before" not in str(err):
                raise
            raise _too_late("--num-processes") from None
    if plan.strategy == "mirrored":
        # jax.devices() lists every process's devices: the model is mirrored
        # on all of them and each process feeds its own share of each batch.
        devices = jax.devices()
        if plan.num_processes == 1:
            plan.devices = [f"{d.platform}:{d.id}" for d in devices]
        else:  # "p1:cpu:0": process 1's first CPU device
            plan.devices = [f"p{d.process_index}:{d.platform}:"
                            f"{[e for e in devices if e.process_index == d.process_index].index(d)}"
                            for d in devices]
        keras.distribution.set_distribution(keras.distribution.DataParallel())


def has_accelerator(backend: str) -> bool:
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    import torch

    return torch.cuda.is_available()


def _mixed_precision(policy: str | None, backend: str) -> str:
    """Set the Keras dtype policy; returns what run.json should say about it."""
    if not policy:
        return "off"
    if not has_accelerator(backend):
        print(f"note: --mixed-precision {policy} ignored: no GPU found (it is meant for GPUs); "
              "training in float32")
        return f"ignored ({policy} asked, no GPU)"
    import keras

    keras.config.set_dtype_policy(policy)
    return policy
