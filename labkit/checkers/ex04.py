"""Checkers of exercises 04 (mixed precision): choosing the precision for a GPU, and a loss scaler that steps
like torch.amp.GradScaler."""
from __future__ import annotations

import torch

from labkit.checkers._engine import CheckResult, Failure, as_number, call_learner, raised_text, run_cases
from labkit.checkers._fixtures import scaler_run
from labkit.config import resolve_precision

# (name, compute capability or None for a CPU, what torch.cuda.is_bf16_supported() says)
GPUS = [("a CPU", None, False), ("Tesla T4", (7, 5), True), ("Tesla T4", (7, 5), False), ("V100", (7, 0), True),
        ("P100", (6, 0), False), ("A100", (8, 0), True), ("A10", (8, 6), True), ("L4", (8, 9), True),
        ("H100", (9, 0), True), ("B200", (10, 0), True), ("RTX 5090", (12, 0), True)]


def check_precision(choose_precision) -> CheckResult:
    """`choose_precision(capability, bf16_supported) -> "fp32" | "fp16" | "bf16"`: what "auto" should pick,
    compared with labkit.config.resolve_precision. `bf16_supported` is what torch.cuda.is_bf16_supported() says
    (True on a T4, through emulation); capability None means a CPU."""
    cases = []
    for name, cap, supported in GPUS:
        def case(name=name, cap=cap, supported=supported):
            label = f"choose_precision({cap}, bf16_supported={supported})  # {name}"
            exp = resolve_precision("auto", "cpu" if cap is None else "cuda", cap)
            status, got = call_learner(choose_precision, cap, supported)
            if status == "raised":
                return Failure(label, repr(exp), raised_text(got))
            if got == exp:
                return None
            if cap is None:
                hint = "a CPU has no tensor cores to gain from 16-bit: stay in fp32"
            elif got == "bf16" and supported and cap < (8, 0):
                hint = ("the emulation trap: is_bf16_supported() can say True before 8.0 (a T4, a V100), but bf16 "
                        "only runs natively from compute capability 8.0; decide from the capability")
            elif got == "bf16":
                hint = "below compute capability 8.0 there is no native bf16: use fp16 (with loss scaling)"
            elif cap[0] == 8:
                hint = "Ampere and Ada (8.x: A100, A10, L4) have native bf16: compare capability >= (8, 0)"
            elif cap[0] >= 9:
                hint = "newer GPUs have bf16 too: compare the (major, minor) tuple with (8, 0), not the major alone"
            else:
                hint = "compute capability ≥ (8, 0) → bf16; other GPUs → fp16; CPU → fp32"
            return Failure(label, repr(exp), repr(got), hint)
        cases.append(case)
    return run_cases("check_precision", cases)


NAN = float("nan")
SCALER_SEQUENCES = [  # (what, init_scale, growth_interval, per step: one gradient list per parameter tensor)
    ("small gradients, an overflow, a nan, then growth", 2.0 ** 16, 3, [
        [[1e-3, -2e-3, 5e-4, 1e-3]],
        [[2e-8, -3e-8, 1e-7, 4e-8]],             # would underflow to 0 in fp16 without the scale
        [[2.0, 0.1, -0.1, 0.0]],                 # 2 × 65536 > 65504 → inf: skip, halve
        [[1e-2, 1e-2, -1e-2, 1e-2]],
        [[NAN, 0.0, 0.0, 0.0]],                  # nan: skip, halve
        [[1e-2, 2e-2, 3e-2, 4e-2]],
        [[1e-2, 2e-2, 3e-2, 4e-2]],
        [[1e-2, 2e-2, 3e-2, 4e-2]],              # third good step in a row → grow
        [[1e-2, 2e-2, 3e-2, 4e-2]],
    ]),
    ("the scale grows until it overflows, again and again", 2.0 ** 14, 2, [[[1.5, -0.5, 0.25, 1.0]]] * 9),
    ("two tensors, inf in only one of them", 2.0 ** 10, 2, [
        [[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]],
        [[0.1, 0.2, 0.3], [100.0, 0.1, 0.1]],    # 100 × 1024 = 102400 → inf in the second tensor only
        [[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]],
        [[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]],
        [[0.1, 0.2, 0.3], [0.1, 0.1, 0.1]],
    ]),
]


def check_loss_scaler(LossScaler) -> CheckResult:
    """`LossScaler(init_scale, growth_factor, backoff_factor, growth_interval)` with `scale(loss)`,
    `unscale_(optimizer) -> found_inf`, `step(optimizer)`, `update()`, `get_scale()`: run side by side with
    torch.amp.GradScaler on the same fp16-rounded gradients; parameters, scale and skip decisions must match."""
    cases = []
    for what, init, interval, seq in SCALER_SEQUENCES:
        def case(what=what, init=init, interval=interval, seq=seq):
            label = f"{what} (init_scale={init:g}, growth_interval={interval}, {len(seq)} steps)"
            n_params = len(seq[0])
            ref = scaler_run(None, seq, n_params, init, interval, mine=False)
            status, mine = call_learner(scaler_run, LossScaler, seq, n_params, init, interval, True)
            if status == "raised":
                return Failure(label, "the same steps as torch.amp.GradScaler", raised_text(mine))
            for step, ((f0, s0, p0), (f1, s1, p1)) in enumerate(zip(ref, mine), start=1):
                where = f"{label}, step {step}"
                if not all(bool(torch.isfinite(p).all()) for p in p1):
                    return Failure(where, "finite parameters (the step skipped)", "inf/nan in the parameters",
                                   "skip optimizer.step() when any gradient is inf or nan — check nan too "
                                   "(torch.isfinite), and skip the whole step, not only the bad tensor")
                if not isinstance(f1, bool) or f1 != f0:
                    return Failure(where, f"unscale_ returns {f0}", f"unscale_ returned {f1!r}",
                                   "return True when any unscaled gradient is inf or nan, else False")
                same_params = all(torch.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(p0, p1))
                if not same_params:
                    moved_ref = sum(float((a - 1).abs().sum()) for a in p0)
                    moved = sum(float((b - 1).abs().sum()) for b in p1)
                    hint = "the update differs from GradScaler's"
                    if moved_ref and moved / moved_ref > 100:
                        hint = "the gradients were not unscaled: divide them by the scale before the step"
                    elif f0 and moved != moved_ref:
                        hint = "after an inf/nan the whole step must be skipped"
                    elif not f0 and moved == 0:
                        hint = "a step with finite gradients must call optimizer.step()"
                    return Failure(where, "parameters equal to GradScaler's", "different parameters", hint)
                if not isinstance(as_number(s1), float) or s1 != s0:
                    prev = ref[step - 2][1] if step > 1 else init
                    if f0 and s1 == prev:
                        hint = "after a skipped step multiply the scale by backoff_factor"
                    elif not f0 and s1 > s0:
                        hint = ("grow the scale only after growth_interval good steps in a row, and restart that "
                                "count after every skipped step")
                    elif not f0 and s1 < s0:
                        hint = "the scale grows by growth_factor once growth_interval good steps have passed"
                    else:
                        hint = "update(): inf/nan → scale × backoff_factor and restart the count; " \
                               "growth_interval good steps in a row → scale × growth_factor"
                    return Failure(where, f"scale {s0:g}", f"scale {s1!r}", hint)
            return None
        cases.append(case)
    return run_cases("check_loss_scaler", cases)
