"""Calibration: the device constants of the time theory, measured on the machine at hand, in a few seconds.

    constants = calibrate()          # measures (or returns the cached result for this device and library versions)
    cached_calibration()             # what `labkit doctor` shows; None when this device was never calibrated

What is measured and how: `labkit.engine.calibration_probes` (F and B) and `labkit.engine.overhead_probe` (o). Where
the result is cached and how it is read back: `labkit.engine.calibration_cache`. How it is shown:
`labkit.report.calibration`. This module runs the probes for a device and keeps their result.
"""
from __future__ import annotations

import datetime
import json
import os

import torch

from labkit.config import RunConfig
from labkit.engine import calibration_probes as probes
# where a calibration lives and how it is read back; re-exported, so `calibrate.cache_path` etc. keep working
from labkit.engine.calibration_cache import (VERSION, cache_path, cached_calibration,  # noqa: F401
                                             calibration_problem, device_identity)
# the probes, by their names here too (tests replace one to see what calibrate does without it)
from labkit.engine.calibration_probes import (MATMUL_STOP_S, attention_flops_per_s,  # noqa: F401
                                              copy_bytes_per_s, dequantize_elements_per_s,
                                              elementwise_bytes_per_s, matmul_flops_per_s, random_elements_per_s)
from labkit.engine.overhead_probe import optimizer_probe, overhead_per_op  # noqa: F401
from labkit.engine.models import TORCH_DTYPES


def precisions_for(device: torch.device) -> tuple[str, ...]:
    """fp32 everywhere; fp16 and bf16 on a CPU (both run there) and on a GPU where they are native."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return ("fp32", "fp16") + (("bf16",) if major >= 8 else ())
    return ("fp32", "bf16", "fp16")


def calibrate(device: str | None = None, force: bool = False, repeats: int = 7, save: bool = True,
              clock=None) -> dict:
    """Measure F (per precision), B and o on this device, cache them (unless not `save`), and return them. A cached
    result for the same device and library versions is returned as it is unless `force`.

    `clock`: wall time by default (what a learner waits for). On a CPU shared with other work, `time.process_time`
    measures the CPU time this process got, which the other processes do not stretch; compare it with steps timed
    by the same clock. Results timed so are not cached."""
    if clock is not None:
        with probes.timed_by(clock):
            return calibrate(device, force=True, repeats=repeats, save=False)
    identity = device_identity(device)
    path = cache_path(identity)
    if not force:
        found = cached_calibration(device)
        if found is not None:
            return found
    dev = torch.device(device or identity["type"])
    from labkit.engine.device import run_setup
    _, _, precision, _ = run_setup(RunConfig(model="tiny"), str(dev))   # what 'auto' runs in here
    started = probes.now()
    quick = max(3, repeats // 2)
    flops = {p: matmul_flops_per_s(dev, TORCH_DTYPES[p], quick) for p in precisions_for(dev)}
    attention = {p: attention_flops_per_s(dev, TORCH_DTYPES[p], quick) for p in precisions_for(dev)
                 if flops[p][-1][1] * MATMUL_STOP_S > 1e9}  # not for a precision too slow to run here
    copy = copy_bytes_per_s(dev, quick)
    elementwise = {p: elementwise_bytes_per_s(dev, TORCH_DTYPES[p], quick) for p in precisions_for(dev)}
    dequantize = dequantize_elements_per_s(dev, TORCH_DTYPES[precision], quick)
    random = random_elements_per_s(dev, quick)
    overhead = overhead_per_op(str(dev), precision, repeats)
    date = datetime.date.today().isoformat()
    clock_name = probes.clock_name()
    result = {
        **identity,
        "date": date,
        "clock": clock_name,
        "source": f"calibrated on {identity['name']}, {date}" + ("" if clock_name == "wall" else f" ({clock_name})"),
        "flops_per_s": {p: max(f for _, f in curve) for p, curve in flops.items()},
        "flops_per_s_by_size": flops,
        "bytes_per_s": max(b for _, b in copy),
        "bytes_per_s_by_size": copy,
        "elementwise_bytes_per_s_by_size": elementwise,
        "attention_flops_per_s": attention,
        "dequantize_elements_per_s_by_size": dequantize,
        "random_elements_per_s": random,
        "overhead_s_per_op": overhead["per_op"],
        "details": {"overhead_probe": overhead["probe"],
                    "seconds": probes.now() - started},
    }
    if not save:
        return result
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)
    return result


def _mean_curve(curves: list) -> list:
    rates = [dict(map(tuple, c)) for c in curves]
    return [[size, sum(r[size] for r in rates) / len(rates)] for size, _ in curves[0] if all(size in r for r in rates)]


def mean_of_calibrations(*calibrations: dict) -> dict:
    """Several calibrations of one device as one, each figure the mean of theirs: taken before and after a series
    of runs on a shared machine, so that a change of load during the series weighs on both sides alike. (Each
    calibration's figure is a best of short repeats, which a shared machine leaves undisturbed more often than a
    whole step; the mean over calibrations spread across the runs comes nearer to the load the runs saw.)"""
    n, first = len(calibrations), calibrations[0]
    mean = lambda values: sum(values) / n  # noqa: E731
    out = dict(first)
    out["flops_per_s"] = {k: mean([c["flops_per_s"][k] for c in calibrations]) for k in first["flops_per_s"]}
    out["flops_per_s_by_size"] = {k: _mean_curve([c["flops_per_s_by_size"][k] for c in calibrations])
                                  for k in first["flops_per_s_by_size"]}
    out["attention_flops_per_s"] = {k: {d: mean([c["attention_flops_per_s"][k][d] for c in calibrations]) for d in v}
                                    for k, v in first["attention_flops_per_s"].items()}
    out["bytes_per_s"] = mean([c["bytes_per_s"] for c in calibrations])
    out["bytes_per_s_by_size"] = _mean_curve([c["bytes_per_s_by_size"] for c in calibrations])
    out["elementwise_bytes_per_s_by_size"] = {
        k: _mean_curve([c["elementwise_bytes_per_s_by_size"][k] for c in calibrations])
        for k in first["elementwise_bytes_per_s_by_size"]}
    out["dequantize_elements_per_s_by_size"] = _mean_curve([c["dequantize_elements_per_s_by_size"]
                                                            for c in calibrations])
    out["random_elements_per_s"] = mean([c["random_elements_per_s"] for c in calibrations])
    out["overhead_s_per_op"] = {k: mean([c["overhead_s_per_op"][k] for c in calibrations])
                                for k in first["overhead_s_per_op"]}
    out["source"] = first["source"] + f" (mean of {n} calibrations, taken before and after the runs)"
    return out
