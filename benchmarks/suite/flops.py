"""How much arithmetic a model does, and how much the CPU could do.

FLOPs are counted the usual way, one multiply and one add per weight use:

- ``Conv2D``: ``2 * kh * kw * c_in * c_out * h_out * w_out`` per image;
- ``Dense``: ``2 * inputs * units`` per sample.

Biases, activations, pooling, batch normalisation and the softmax are left
out; together they are under 2% of a conv net's work. A training step costs
about 3x the forward pass: the forward pass, then the gradients with respect
to the layer inputs and to the weights, each as big as the forward pass.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TRAINING_FACTOR = 3  # forward + backward (input gradients) + backward (weight gradients)


def layer_flops(model) -> list[tuple[str, str, int]]:
    """``(layer name, shape arithmetic, forward FLOPs per sample)`` for every
    Conv2D and Dense layer of a built Keras model, in order."""
    import keras

    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in, c_out = layer.kernel.shape
            _, h_out, w_out, _ = layer.output.shape  # channels last
            flops = 2 * kh * kw * c_in * c_out * h_out * w_out
            rows.append((layer.name, f"2*{kh}*{kw}*{c_in}*{c_out}*{h_out}*{w_out}", int(flops)))
        elif isinstance(layer, keras.layers.Dense):
            n_in, n_out = layer.kernel.shape
            rows.append((layer.name, f"2*{n_in}*{n_out}", int(2 * n_in * n_out)))
    return rows


def forward_flops(model) -> int:
    """Forward-pass FLOPs per sample (see :func:`layer_flops`)."""
    return sum(flops for _, _, flops in layer_flops(model))


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def flops_per_cycle(flags: set[str]) -> tuple[int, str]:
    """FP32 FLOPs one core can finish per cycle, judged from its instruction
    set: two fused multiply-add units, each ``lanes`` wide, 2 FLOPs per lane."""
    if "avx512f" in flags:
        return 64, "AVX-512 with FMA: 2 units x 16 FP32 lanes x 2 (multiply + add)"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2 with FMA: 2 units x 8 FP32 lanes x 2 (multiply + add)"
    if "avx" in flags:
        return 16, "AVX without FMA: one 8-lane multiply and one 8-lane add"
    return 8, "SSE: one 4-lane multiply and one 4-lane add"


def machine_peak(lscpu: dict[str, str] | None = None, cpuinfo: dict[str, str] | None = None,
                 cores: int | None = None) -> dict:
    """The nominal FP32 peak of the cores this process may use.

    peak = cores x clock x FLOPs per cycle. The clock is lscpu's "CPU max MHz"
    when the machine reports one (a virtual machine often does not), else the
    current "cpu MHz" of /proc/cpuinfo, so turbo is not counted.
    """
    lscpu = _lscpu() if lscpu is None else lscpu
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    cores = cores or len(os.sched_getaffinity(0))
    flags = set((lscpu.get("Flags") or cpuinfo.get("flags") or "").split())
    mhz_text = lscpu.get("CPU max MHz") or cpuinfo.get("cpu MHz") or ""
    clock_source = "lscpu 'CPU max MHz'" if lscpu.get("CPU max MHz") else "/proc/cpuinfo 'cpu MHz'"
    try:
        ghz = float(mhz_text.replace(",", ".")) / 1000
    except ValueError:
        ghz = 0.0
    per_cycle, isa = flops_per_cycle(flags)
    name = lscpu.get("Model name") or cpuinfo.get("model name") or "unknown CPU"
    caveat = ""
    family = lscpu.get("CPU family") or cpuinfo.get("cpu family") or ""
    vendor = lscpu.get("Vendor ID") or cpuinfo.get("vendor_id") or ""
    if per_cycle == 64 and vendor == "AuthenticAMD" and family == "25":  # 0x19 with AVX-512: Zen 4
        caveat = ("AMD Zen 4 runs each 512-bit FMA as two 256-bit halves, so its real FP32 "
                  "limit is probably half of this (32 FLOP/cycle/core) and the share of peak "
                  "reached twice what is shown")
    return {
        "cpu": name, "cores": cores, "ghz": round(ghz, 3), "clock_source": clock_source,
        "flops_per_cycle": per_cycle, "isa": isa, "gflops": round(cores * ghz * per_cycle, 1),
        "caveat": caveat,
    }


def describe_peak(peak: dict) -> str:
    text = (f"{peak['cores']} cores x {peak['ghz']:.3f} GHz ({peak['clock_source']}) x "
            f"{peak['flops_per_cycle']} FP32 FLOP/cycle ({peak['isa']}) = {peak['gflops']:,.1f} GFLOP/s")
    return text + (f"; {peak['caveat']}" if peak["caveat"] else "")
