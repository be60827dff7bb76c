"""The goals the theory is held to against measurement, each defined here once: the tests, the benchmarks and
`benchmarks/gpu_check.py` import them (the README's "How close the theory is" reports them).

    peak_goal("llama-3.2-1b", measured=4 * GiB, theory=int(4.1 * GiB))   → (True, '±3%')
"""
from __future__ import annotations

from labkit.units import MiB

PEAK_REL = 0.03                # theory peak allocated within ±3 % of the measured peak (every preset but tiny)
PEAK_TINY_BYTES = 16 * MiB     # … within ±16 MiB for the tiny stand-in, whose whole peak is a few MiB
OP_COUNT_REL = 0.05            # aten ops dispatched per phase (forward, recompute, backward) within ±5 %
PARTS_REL = 0.05               # each resident part (weights, adapters, gradients, optimizer) and the saved
                               # activations within ±5 % of the bytes measured on the live tensors
STEP_TIME_REL = 0.25           # step time within ±25 % of the measured on a calibrated device
DELTA_POINTS = 15              # a toggle's change of step time within ±15 percentage points of the measured change


def peak_goal(model: str, measured: int, theory: int) -> tuple[bool, str]:
    """(met, the goal in words) for one theory peak against its measured peak allocated."""
    if model == "tiny":
        return abs(theory - measured) <= PEAK_TINY_BYTES, f"±{PEAK_TINY_BYTES // MiB} MiB"
    return abs(theory / measured - 1) <= PEAK_REL, f"±{PEAK_REL:.0%}"
