"""Device policy: where a run happens, which precision it uses there, and the stand-in labels that follow.

    device, dev, precision, labels = run_setup(cfg)     # ("cuda", {...}, "fp16", ["t4-profile"]) on a capped H100

The rules the course teaches: 'auto' precision comes from the compute capability (bf16 native from 8.0), a bigger
GPU under the T4 profile behaves as a T4 (fp16, labelled "t4-profile"), a CPU run is labelled "cpu", and a memory
budget (a simulated OOM) exists only on a CPU, where no real limit can be hit safely.
"""
from __future__ import annotations

import torch

from labkit.config import RunConfig, resolve_precision, run_precision_refusal
from labkit.engine import hardware


def pick_device(device: str | None = None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def device_summary(device: str) -> dict:
    f = hardware.device_facts(device, check_hub=False)
    return {"type": f["type"], "name": f["name"], "capability": f["capability"], "total_memory": f["total_memory"]}


def run_precision(cfg: RunConfig, dev: dict, theory_only: bool = False) -> str:
    """The precision a run uses here: 'auto' resolved from the compute capability; fp16 under the T4 profile and
    in the T4 rehearsal, as on a real T4 (bf16 is refused there too). ValueError for a precision this device does
    not run (bf16 on a GPU without bf16 tensor cores; fp16 on a CPU, unless `theory_only`: an estimate runs
    nothing)."""
    kind, cap = hardware.precision_device(dev)         # a T4's (7.5) under the T4 profile and the T4 rehearsal
    precision = resolve_precision(cfg.precision, kind, cap)
    refusal = None if theory_only else run_precision_refusal(precision, kind, cap)
    if refusal:
        raise ValueError(refusal)
    return precision


def device_labels(dev: dict) -> list[str]:
    """Stand-in labels that follow from where a run happens: a CPU (rehearsing a T4's path in the tests), or a
    bigger GPU capped to a T4's memory."""
    if dev["type"] != "cuda":
        return ["cpu", "t4-rehearsal"] if hardware.t4_rehearsal_active() else ["cpu"]
    return ["t4-profile"] if hardware.t4_profile_active() else []


def run_setup(cfg: RunConfig, device: str | None = None,
              theory_only: bool = False) -> tuple[str, dict, str, list[str]]:
    """Where and how a run happens: (device, its summary, the precision used, the labels that follow).
    `theory_only`: for an estimate, which runs nothing here (fp16 is then not refused on a CPU)."""
    device = pick_device(device)
    dev = device_summary(device)
    return device, dev, run_precision(cfg, dev, theory_only), device_labels(dev)


def budget_labels(cfg: RunConfig, dev: dict) -> list[str]:
    """A memory budget simulates OOMs on a CPU, labelled so; on a GPU the real limit applies, so it is refused."""
    if cfg.memory_budget_gb is None:
        return []
    if dev["type"] == "cuda":
        raise ValueError("memory_budget_gb simulates an OOM on a CPU; on a GPU the real limit applies "
                         "(cap a big GPU to a T4's memory with labkit.engine.hardware.t4_profile())")
    return ["budget-simulated"]
