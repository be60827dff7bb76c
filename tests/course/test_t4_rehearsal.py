"""The T4 rehearsal: the path a learner's Colab T4 takes, executed on the CPU so that CI (no GPU) runs it.

With LABKIT_T4_REHEARSAL=1 a CPU decides precision as a T4 does (compute capability 7.5: 'auto' is fp16, bf16 is
refused), trains under fp16 autocast with GradScaler('cpu'), computes the 4-bit matmuls in float16, and labels every
record 't4-rehearsal'. Every one of those is torch's, peft's and bitsandbytes' real code; only the device is not a
T4, so no figure from here stands for one. Each test has its control: the same call without the rehearsal.

What CI still cannot execute of a T4's path is listed in the README (What CI cannot execute).
"""
import math

import pytest
import torch

import labkit
from labkit.config import RunConfig
from labkit.engine import hardware
from labkit.engine.device import run_setup

pytestmark = pytest.mark.long      # half a minute or more: started early (tests/conftest.py)

TINY = RunConfig(model="tiny", seq_len=64, micro_batch=2, grad_accum=2)


@pytest.fixture
def rehearsal(monkeypatch):
    monkeypatch.setenv(hardware.REHEARSAL_ENV, "1")
    # The rehearsal's constants are cached apart from the CPU's own, so on a machine that has none yet a run would
    # first calibrate them (another fp16 GradScaler among what these tests count, and seconds of fp16 probes).
    # These tests check the run's path, not its time theory: calibrating is test_calibrate_measures_in_fp16's.
    from labkit import experiment
    monkeypatch.setattr(experiment, "calibrate_once", lambda device: False)


def test_a_cpu_decides_precision_as_a_t4_only_in_the_rehearsal(monkeypatch):
    monkeypatch.delenv(hardware.REHEARSAL_ENV, raising=False)
    assert run_setup(TINY, "cpu")[2:] == ("fp32", ["cpu"])                 # the control: a CPU as it is
    with pytest.raises(ValueError, match="fp16 is not offered on the CPU"):
        run_setup(TINY.replace(precision="fp16"), "cpu")
    monkeypatch.setenv(hardware.REHEARSAL_ENV, "1")
    assert run_setup(TINY, "cpu")[2:] == ("fp16", ["cpu", "t4-rehearsal"])
    assert run_setup(TINY.replace(precision="fp32"), "cpu")[2] == "fp32"
    with pytest.raises(ValueError, match=r"7\.5 < 8\.0"):
        run_setup(TINY.replace(precision="bf16"), "cpu")
    facts = hardware.device_facts("cpu", check_hub=False)
    assert facts["t4_rehearsal"] and facts["recommended_precision"] == "fp16"


def test_the_runner_takes_the_fp16_path_with_a_grad_scaler(rehearsal, monkeypatch):
    from labkit.engine import runner
    scalers = []
    real = torch.amp.GradScaler

    def spy(*args, **kwargs):
        scalers.append(real(*args, **kwargs))
        return scalers[-1]

    monkeypatch.setattr(runner.torch.amp, "GradScaler", spy)
    rec = labkit.run(TINY, steps=2, warmup=0, progress=False)
    assert rec.status == "ok", rec.error
    assert rec.resolved["precision"] == "fp16" and "t4-rehearsal" in rec.labels
    assert all(math.isfinite(x) for x in rec.measured.loss)
    assert len(scalers) == 1 and scalers[0].get_scale() > 0                # one scaler, and it was used


def test_the_4bit_compute_dtype_is_float16(rehearsal):
    from labkit.engine.models import quantization_config
    q = quantization_config(TINY, run_setup(TINY, "cpu")[2])
    assert q.bnb_4bit_compute_dtype == torch.float16 and q.bnb_4bit_quant_type == "nf4"


def test_the_trainer_path_trains_in_fp16(rehearsal):
    from labkit.engine.trainer import train_with_trainer, training_arguments
    out = train_with_trainer(TINY.replace(micro_batch=1), steps=2, warmup=0, device="cpu")
    assert out.status == "ok", out.get("error")
    assert out.resolved["precision"] == "fp16" and "t4-rehearsal" in out.labels
    args = training_arguments(TINY, "unused", 2, "fp16", "cpu")
    assert args.fp16 and not args.bf16


def test_calibrate_measures_in_fp16(rehearsal):
    """On a T4 'auto' is fp16, and calibrate's optimizer probe then unscales with a GradScaler: this used to stop
    lessons 02-04 at their calibration cell."""
    c = labkit.calibrate(force=True, save=False, repeats=1)
    probe = c["details"]["overhead_probe"]
    assert probe["precision"] == "fp16" and probe["optimizer"]["ops"] > 0
    assert all(v > 0 for v in c["overhead_s_per_op"].values())


def test_search_finds_a_largest_micro_batch_in_fp16(rehearsal):
    found = labkit.largest_micro_batch(TINY.replace(grad_accum=1, memory_budget_gb=0.05), lo=1, hi=8)
    assert found["status"] == "ok" and found["best"] and found["best"] >= 1
    assert all(t["status"] in ("ok", "oom") for t in found["trail"])


def test_the_lab_offers_what_a_t4_offers_and_runs_in_fp16(rehearsal):
    from labkit.course.lab import Lab
    lab = Lab(model="tiny", device="cpu", steps=2)
    precision = lab.controls["precision"]
    assert [v for _, v in precision.options] == ["auto", "fp16", "fp32"]
    assert ("auto (fp16)", "auto") in precision.options
    lab.set(seq_len=64, micro_batch=1, grad_accum=1)
    lab.run_button.click()
    rec = lab.history[-1]
    assert rec.status == "ok", rec.get("error")
    assert rec.resolved["precision"] == "fp16" and "t4-rehearsal" in rec.labels
