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


def test_the_t4_profile_leaves_out_of_its_cap_the_context_a_real_t4_pays_for(monkeypatch):
    """On a real T4 the CUDA context comes out of the same 14.75 GiB the runs use; the allocator cap does not see
    it, so the profile takes what this process's context holds off the cap (a 15.52 GB peak once read as a fit)."""
    import torch
    total, context, caps = 85_520_809_984, 650_000_000, []
    props = type("Props", (), {"total_memory": total, "name": "NVIDIA H100 80GB HBM3"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (total - context - 2 * 2 ** 20, total))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i: 2 * 2 ** 20)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: caps.append(f))
    monkeypatch.setattr(hardware, "_T4_PROFILE", False)
    fraction = hardware.t4_profile()
    assert caps == [fraction] and fraction * total == pytest.approx(hardware.T4_TOTAL_MEMORY - context)
    assert hardware.t4_profile_active()
    assert hardware.t4_profile(fraction_of=10 ** 9) * total == pytest.approx(10 ** 9)   # a cap given is kept
