"""Device constants of the time theory: F (FLOP/s), B (bytes/s) and o (seconds per dispatched op), with their sources.

Two places they come from, and a record says which:
- a calibration of the machine at hand (`labkit calibrate`, labkit.engine.calibrate), passed in as data:
  "calibrated on <device>, <date>"; rates measured at several sizes, so each op is priced at its own size;
- a GPU's data sheet (`DATA_SHEETS`): "data sheet: …". A data sheet gives F and B (dense peaks) but no overhead:
  for o the theory then uses `GPU_RECORD_OVERHEAD`, fitted to recorded H100 runs, and says so.
A CPU has no data sheet here: calibrate it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

DATA_SHEETS = [   # (GPU name pattern, constants); first match wins. Dense peaks (no 2:4 sparsity).
    (r"\bT4\b", {
        "name": "NVIDIA T4",
        "flops_per_s": {"fp16": 65e12, "fp32": 8.1e12},
        "bytes_per_s": 320e9,
        "source": {"flops_per_s": "NVIDIA T4 Tensor Core GPU data sheet: 65 TFLOPS mixed precision (FP16 tensor "
                                  "cores), 8.1 TFLOPS single precision; no bf16",
                   "bytes_per_s": "NVIDIA T4 data sheet: 320 GB/s GDDR6"}}),
    (r"\bA10\b", {      # not the A10G (AWS): NVIDIA publishes no data sheet for it
        "name": "NVIDIA A10",
        "flops_per_s": {"fp16": 125e12, "bf16": 125e12, "fp32": 31.2e12},
        "bytes_per_s": 600e9,
        "source": {"flops_per_s": "NVIDIA A10 Tensor Core GPU data sheet: 125 TFLOPS FP16/BF16 tensor (dense; "
                                  "250 with sparsity), 31.2 TFLOPS FP32",
                   "bytes_per_s": "NVIDIA A10 data sheet: 600 GB/s GDDR6"}}),
    (r"\bL4\b", {
        "name": "NVIDIA L4",
        "flops_per_s": {"fp16": 121e12, "bf16": 121e12, "fp32": 30.3e12},
        "bytes_per_s": 300e9,
        "source": {"flops_per_s": "NVIDIA L4 data sheet: 242 TFLOPS FP16/BF16 tensor with sparsity (121 dense), "
                                  "30.3 TFLOPS FP32",
                   "bytes_per_s": "NVIDIA L4 data sheet: 300 GB/s GDDR6"}}),
    (r"\bA100\b", {
        "name": "NVIDIA A100",
        "flops_per_s": {"fp16": 312e12, "bf16": 312e12, "fp32": 19.5e12},
        "bytes_per_s": 2039e9,
        "source": {"flops_per_s": "NVIDIA A100 data sheet: 312 TFLOPS FP16/BF16 tensor (dense), 19.5 TFLOPS FP32",
                   "bytes_per_s": "NVIDIA A100 data sheet: 2,039 GB/s HBM2e (80 GB SXM; the 40 GB has 1,555)"}}),
    (r"\bH100\b.*\bPCIe\b", {
        "name": "NVIDIA H100 PCIe",
        "flops_per_s": {"fp16": 756e12, "bf16": 756e12, "fp32": 51e12},
        "bytes_per_s": 2.0e12,
        "source": {"flops_per_s": "NVIDIA H100 data sheet, PCIe: 1,513 TFLOPS FP16/BF16 tensor with sparsity "
                                  "(756 dense), 51 TFLOPS FP32",
                   "bytes_per_s": "NVIDIA H100 data sheet, PCIe: 2.0 TB/s HBM2e"}}),
    (r"\bH100\b", {
        "name": "NVIDIA H100 SXM",
        "flops_per_s": {"fp16": 989e12, "bf16": 989e12, "fp32": 67e12},
        "bytes_per_s": 3.35e12,
        "source": {"flops_per_s": "NVIDIA H100 data sheet, SXM: 1,979 TFLOPS FP16/BF16 tensor with sparsity "
                                  "(989 dense), 67 TFLOPS FP32 (non-tensor; torch does not use TF32 for fp32 "
                                  "matmuls unless told to)",
                   "bytes_per_s": "NVIDIA H100 data sheet, SXM: 3.35 TB/s HBM3"}}),
    (r"\bH200\b", {
        "name": "NVIDIA H200",
        "flops_per_s": {"fp16": 989e12, "bf16": 989e12, "fp32": 67e12},
        "bytes_per_s": 4.8e12,
        "source": {"flops_per_s": "NVIDIA H200 data sheet: 1,979 TFLOPS FP16/BF16 tensor with sparsity (989 dense), "
                                  "67 TFLOPS FP32",
                   "bytes_per_s": "NVIDIA H200 data sheet: 4.8 TB/s HBM3e"}}),
]

# Overhead has no data sheet. For a GPU that was not calibrated, the theory uses these seconds per dispatched op,
# FITTED to the shared H100 records of 2026-11-22 (T4 profile, fp16; benchmarks/time_theory_table.py --fit
# reproduces the fit). They are a property of that machine's host CPU and software stack (torch 2.11, transformers
# 5.17, peft 0.21, bitsandbytes 0.50): elsewhere, and especially on a slower host such as Colab's, calibrate.
# Predictions of those same records made with them are a fit, not an independent prediction.
GPU_RECORD_OVERHEAD = {
    # two numbers fitted (least squares of relative errors, 20 records, residuals within ±18 %): one per op issued
    # from Python (forward, recompute, the optimizer step), one per op the autograd engine issues (backward)
    "overhead_s_per_op": {"forward": 33.9e-6, "recompute": 33.9e-6, "backward": 18.3e-6, "optimizer": 33.9e-6},
    "source": "fitted to the H100 (T4-profile) records of 2026-11-22 in their flat region (fp16, llama-3.2-1b "
              "seq 512 and tiny seq 128, every micro-batch and accumulation recorded): not measured on this machine",
}


@dataclass(frozen=True)
class DeviceConstants:
    """F, B and o for one device: what the time theory takes as input, with where each came from."""
    name: str
    flops_per_s: dict                 # precision → FLOP/s (None where the device has no such unit)
    bytes_per_s: float
    overhead_s_per_op: dict           # phase (forward, recompute, backward, optimizer) → seconds per dispatched op
    source: str                       # "data sheet: …" or "calibrated on <device>, <date>"
    asynchronous: bool                # CUDA: the host runs ahead of the device (see the module docstring)
    sources: dict = field(default_factory=dict)   # per constant, where it came from
    flops_by_size: dict = field(default_factory=dict)   # calibrated: precision → [[n, FLOP/s] for n×n @ n×n, …]
    bytes_by_size: list = field(default_factory=list)   # calibrated: [[bytes moved, bytes/s], …] (copies)
    elementwise_by_size: dict = field(default_factory=dict)   # calibrated: precision → the same for `a * b`
    attention_flops_per_s: dict = field(default_factory=dict)   # calibrated: precision → {"forward": FLOP/s,
                                                                #   "backward": FLOP/s} of fused attention
    dequantize_by_size: list = field(default_factory=list)      # calibrated: [[elements, elements/s], …] (NF4)
    random_elements_per_s: float | None = None                  # calibrated: dropout's bernoulli_

    def flops_rate(self, precision: str, flops_per_op: float) -> float | None:
        """F for one matmul of this many FLOPs: read off the calibrated sizes at n = (FLOPs / 2)^(1/3) (the square
        matmul of the same work), or the peak where only a data sheet is known."""
        curve = self.flops_by_size.get(precision)
        if not curve:
            return self.flops_per_s.get(precision)
        return interpolate(curve, (max(flops_per_op, 2.0) / 2) ** (1 / 3))

    def bytes_rate(self, bytes_per_op: float, precision: str | None = None) -> float:
        """B for one op that moves this many bytes: read off the calibrated elementwise op of this precision, else
        the calibrated copies, at that size; or the data sheet's bandwidth."""
        curve = self.elementwise_by_size.get(precision) or self.bytes_by_size
        return interpolate(curve, bytes_per_op) if curve else self.bytes_per_s

    def for_record(self, precision: str) -> dict:
        """What a record keeps under theory.time.constants: the numbers used for this precision, and their source."""
        return {"flops_per_s": self.flops_per_s.get(precision), "bytes_per_s": self.bytes_per_s,
                "overhead_s_per_op": self.overhead_s_per_op.get("forward"),
                "overhead_s_per_op_by_phase": dict(self.overhead_s_per_op),
                "source": self.source, "sources": dict(self.sources), "device": self.name,
                "asynchronous": self.asynchronous}


def interpolate(curve: list, x: float) -> float:
    """Linear in log(size) between the measured points; the nearest end beyond them."""
    points = sorted(curve)
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            f = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + f * (y1 - y0)
    return points[-1][1]


def data_sheet(gpu_name: str | None) -> dict | None:
    """The data-sheet entry for a GPU name ("Tesla T4", "NVIDIA H100 80GB HBM3"), or None."""
    for pattern, sheet in DATA_SHEETS:
        if gpu_name and re.search(pattern, gpu_name):
            return sheet
    return None


def data_sheet_constants(gpu_name: str | None) -> DeviceConstants | None:
    """F and B from the GPU's data sheet, o fitted to the shared H100 records (`GPU_RECORD_OVERHEAD`); None for
    a device without a data sheet (every CPU: calibrate it)."""
    sheet = data_sheet(gpu_name)
    if sheet is None:
        return None
    return DeviceConstants(
        name=sheet["name"], flops_per_s=dict(sheet["flops_per_s"]), bytes_per_s=sheet["bytes_per_s"],
        overhead_s_per_op=dict(GPU_RECORD_OVERHEAD["overhead_s_per_op"]),
        source=f"data sheet: {sheet['name']} (F, B); overhead {GPU_RECORD_OVERHEAD['source']}",
        asynchronous=True,
        sources={**sheet["source"], "overhead_s_per_op": GPU_RECORD_OVERHEAD["source"]})


def calibrated_constants(calibration: dict) -> DeviceConstants:
    """Constants from a calibration result (labkit.engine.calibrate.calibrate's dict, passed in as data)."""
    where = calibration["source"]
    return DeviceConstants(
        name=calibration["name"], flops_per_s=dict(calibration["flops_per_s"]),
        bytes_per_s=calibration["bytes_per_s"], overhead_s_per_op=dict(calibration["overhead_s_per_op"]),
        source=where, asynchronous=calibration["type"] == "cuda",
        sources={"flops_per_s": f"{where}: square matmuls per precision, n = 64 … 1024 (CPU) / 256 … 8192 (GPU)",
                 "bytes_per_s": f"{where}: copies of 64 KiB … 32 MiB (CPU) / 1 MiB … 1 GiB (GPU), read + write",
                 "overhead_s_per_op": f"{where}: a tiny probe step through the kit's stack, per dispatched op"},
        flops_by_size=dict(calibration.get("flops_per_s_by_size") or {}),
        bytes_by_size=list(calibration.get("bytes_per_s_by_size") or []),
        elementwise_by_size=dict(calibration.get("elementwise_bytes_per_s_by_size") or {}),
        attention_flops_per_s=dict(calibration.get("attention_flops_per_s") or {}),
        dequantize_by_size=list(calibration.get("dequantize_elements_per_s_by_size") or []),
        random_elements_per_s=calibration.get("random_elements_per_s"))


def device_constants(gpu_name: str | None = None, calibration: dict | None = None) -> DeviceConstants | None:
    """Calibrated constants when given, else the GPU's data sheet, else None (a CPU without a calibration)."""
    if calibration:
        return calibrated_constants(calibration)
    return data_sheet_constants(gpu_name)
