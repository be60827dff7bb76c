"""Device policy: precision from the compute capability, the T4 profile's labels, budgets refused on a GPU."""
import pytest

from labkit.config import RunConfig
from labkit.engine import device, hardware, runner

SMALL = dict(seq_len=64, micro_batch=2, grad_accum=2)


def test_a_gpu_budget_is_refused_and_the_t4_profile_labels_runs(monkeypatch):
    cuda = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "capability": [9, 0], "total_memory": 85 * 2 ** 30}
    monkeypatch.setattr(device, "pick_device", lambda d=None: "cuda")
    monkeypatch.setattr(device, "device_summary", lambda d: cuda)
    with pytest.raises(ValueError, match="on a GPU the real limit applies"):
        runner.measure_run(RunConfig(**SMALL, memory_budget_gb=1), steps=1, warmup=0)
    assert device.run_precision(RunConfig(), cuda) == "bf16" and device.device_labels(cuda) == []
    monkeypatch.setattr(hardware, "_T4_PROFILE", True)
    assert device.run_precision(RunConfig(), cuda) == "fp16"          # as a T4 would
    assert device.device_labels(cuda) == ["t4-profile"]
    with pytest.raises(ValueError, match="not native"):
        device.run_precision(RunConfig(precision="bf16"), cuda)

