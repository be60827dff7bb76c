"""One experiment = one RunConfig, measured and predicted, side by side in a record.

This is the only module that sees both halves: `runner` (measurement) and `theory` (prediction) never import each
other, so a measured figure cannot come from a formula, nor a prediction from a measurement.
"""
from __future__ import annotations

import datetime
import functools
import os
import warnings
from dataclasses import dataclass

import labkit
from labkit import theory
from labkit.config import (LabkitWarning, RunConfig, check_callback, check_config, check_device, check_steps,
                           rule_warnings)
from labkit.record import RunRecord, build
from labkit.engine import notices
from labkit.engine.calibrate import cached_calibration, calibrate
from labkit.engine.runner import measure_run
from labkit.engine.data_parallel import measure_data_parallel
from labkit.engine.device import run_setup
from labkit.engine.models import check_weights
from labkit.shapes import ModelShape, resolve_shape, warn_fit


@dataclass(frozen=True)
class Plan:
    """One request, resolved once before anything loads: the config, the model's shape (a preset's, or a custom
    config.json read once) and the advice that shape gives for the config. The theory and the record take it."""
    cfg: RunConfig
    shape: ModelShape
    advice: list


def plan(cfg, stacklevel: int = 2) -> Plan:
    """What every entry point checks before anything loads: a RunConfig (ValueError otherwise), a model whose
    config.json passes `shapes.check_model_config`; the advice (`shapes.fit_warnings`) is each also issued as a
    LabkitWarning, pointing `stacklevel` frames above this call."""
    check_config(cfg)
    shape = resolve_shape(cfg.model)               # unknown model, malformed config.json → ValueError
    return Plan(cfg, shape, warn_fit(cfg, stacklevel=stacklevel + 1, shape=shape))


def check_request(cfg) -> list[str]:
    """`plan`'s checks for a caller that wants only the advice."""
    return plan(cfg, stacklevel=2).advice


def _theory(p: Plan, precision: str, device: dict, padding_mask: bool, counted: dict | None = None) -> dict:
    """The theory for this run, told the device facts it needs like a data sheet: type, name, compute capability
    and the cuBLAS workspace variables set in this process (they size the CUDA workspaces); and, for the op count,
    which micro-batch the run counted (`counted`: measured.aten_ops, read for its `accumulating` and
    `saved_tensor_hooks` flags only)."""
    cfg, shape = p.cfg, p.shape
    gpu = device["name"] if device["type"] == "cuda" else None
    blas_env = {k: os.environ[k] for k in theory.BLAS_ENV_VARS if k in os.environ}
    counted = counted or {}
    out = theory.predict(shape, cfg, precision, padding_mask=padding_mask, gpu_name=gpu, device_type=device["type"],
                         capability=device.get("capability"), blas_env=blas_env,
                         accumulating=counted.get("accumulating"),
                         saved_tensor_hooks=counted.get("saved_tensor_hooks"))
    # time: device constants are inputs, like a data sheet — a calibration of this device (labkit calibrate), if
    # one is cached, else the GPU's data sheet
    out["time"] = theory.time_for_record(shape, cfg, precision, gpu, device["type"], padding_mask,
                                         calibration=cached_calibration(device["type"]))
    if cfg.num_gpus > 1:                           # N ranks: per-rank memory unchanged, plus the all-reduce
        out["data_parallel"] = theory.predict_data_parallel(shape, cfg, out, out["time"], device["type"], gpu)
    if cfg.prepare_kbit:
        out["caveat"] = "prepare_kbit upcasts norms and embeddings to fp32; the theory does not model that"
    return out


def _record(p: Plan, measured_part: dict, theory_part: dict) -> RunRecord:
    cfg = p.cfg
    return build(
        config=cfg.to_dict(),
        shape=p.shape.to_dict(),
        resolved=measured_part["resolved"],
        model_source=measured_part["model_source"],
        labels=measured_part["labels"],
        warnings=rule_warnings(cfg) + p.advice + measured_part.get("warnings", []),
        theory=theory_part,
        measured=measured_part["measured"],
        status=measured_part["status"],
        error=measured_part["error"],
        traceback=measured_part.get("traceback"),
        device=measured_part["device"],
        ranks=measured_part.get("ranks"),
        labkit_version=labkit.__version__,
        time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def run(cfg: RunConfig, steps: int = 3, warmup: int = 1, device: str | None = None, weights: str = "auto",
        progress: bool = False, on_step=None) -> RunRecord:
    """Real steps + theory for the same config. The theory is told whether the measured batch had padding
    (with a padding mask SDPA keeps more; see theory.saved_activations) — a fact about the input, not a
    measurement.

    cfg.num_gpus = N > 1 runs N processes under DDP (`engine.data_parallel`): one record, every rank under
    `ranks`; on a CPU they are gloo processes, labelled "cpu-processes" (never GPU figures); on CUDA with fewer
    than N GPUs, ValueError. `progress` and `on_step` are for one process only (the ranks run elsewhere)."""
    request = plan(cfg, stacklevel=2)              # bad input → ValueError before anything loads
    check_steps(steps, warmup)
    check_device(device)
    check_callback("on_step", on_step)
    check_weights(cfg, weights)
    if cfg.num_gpus > 1:
        measured = measure_data_parallel(cfg, steps, warmup, device, weights)
    else:
        measured = measure_run(cfg, steps, warmup, device, weights, progress, on_step)
    padding = measured["measured"]["batch_has_padding"]
    theory_of = functools.partial(_theory, request, measured["resolved"]["precision"], measured["device"],
                                  padding if padding is not None else cfg.pad_to_seq_len,
                                  measured["measured"].get("aten_ops"))
    prediction = theory_of()
    if prediction["time"]["total_s"] is None and prediction["time"]["constants"] is None \
            and calibrate_once((measured.get("resolved") or {}).get("device") or "cpu"):          # the first run that needs constants here
        prediction = theory_of()
    record = _record(request, measured, prediction)
    record.run = {"steps": steps, "warmup": warmup, "weights": weights}
    return record


AUTO_CALIBRATION_NOTE = ("calibrating this machine's time constants once, so that runs carry a time theory "
                         "(a few seconds; cached for next time: `labkit calibrate` redoes it)")


_CALIBRATION_FAILED: set = set()       # devices whose automatic calibration failed in this process: not retried


def calibrate_once(device: str) -> bool:
    """Measure the time constants of `device` (the one the run used) after a run that found none (a CPU, a GPU
    without a data sheet), saying so in one line where the kit's notes go (a notebook's output, the command line's
    stderr). The run's own figures are already taken. True when constants are now cached; a failed calibration is
    one warning, and is not tried again in this process (`labkit.calibrate()` tries on request)."""
    if device in _CALIBRATION_FAILED:
        return False
    notices.say(AUTO_CALIBRATION_NOTE)
    try:
        calibrate(device)
    except Exception as e:  # noqa: BLE001 — the run stands without a time theory, as before
        _CALIBRATION_FAILED.add(device)
        warnings.warn(f"the calibration failed ({type(e).__name__}: {e}); this record has no time theory (not "
                      "tried again in this session; labkit.calibrate() tries on request)", LabkitWarning,
                      stacklevel=3)
        return False
    return True


def estimate(cfg: RunConfig, device: str | None = None, padding_mask: bool = True) -> RunRecord:
    """Theory only (no model is loaded); every measured field is None and the record is labelled "theory-only"."""
    request = plan(cfg, stacklevel=2)
    check_device(device)
    if not isinstance(padding_mask, bool):
        raise ValueError(f"padding_mask must be True or False, got {padding_mask!r}")
    device, dev, precision, labels = run_setup(cfg, device, theory_only=True)
    measured = {"resolved": {"precision": precision, "device": device}, "model_source": None,
                "labels": ["theory-only"] + [x for x in labels if x == "t4-profile"],   # nothing measured on it
                "status": "ok", "error": None, "device": dev,
                "measured": {}}                                       # every measured field None
    return _record(request, measured, _theory(request, precision, dev, padding_mask))
