"""Checkers of exercises 02 (activations and gradient checkpointing): what checkpointing keeps, and how many
segments keep the least."""
from __future__ import annotations

import math
import numbers
import random

from labkit import theory
from labkit.checkers._engine import CheckResult, Failure, bytes_text, call_learner, number_case, raised_text, run_cases
from labkit.checkers._fixtures import SEVEN_B, random_shape, segment_memory
from labkit.config import RunConfig
from labkit.shapes import PRESETS

DTYPE_OF = {"fp32": 4, "fp16": 2, "bf16": 2}         # bytes per saved value in each precision


def check_checkpointed_activations(checkpointed_bytes) -> CheckResult:
    """`checkpointed_bytes(micro_batch, seq_len, hidden, layers, precision) -> int`: what per-layer gradient
    checkpointing keeps (each decoder layer's input), compared with labkit.theory.saved_activations."""
    rng = random.Random(3)
    specs = [(SEVEN_B, 1, 2048, "fp16"), (SEVEN_B, 8, 2048, "bf16"), (PRESETS["tiny"].shape, 2, 128, "fp32"),
             (PRESETS["llama-3.1-8b"].shape, 4, 2048, "fp16")]
    specs += [(random_shape(rng), rng.randint(1, 16), rng.choice([128, 512, 4096]), p) for p in ("fp32", "bf16")]
    cases = []
    for shape, b, s, prec in specs:
        cfg = RunConfig(micro_batch=b, seq_len=s, gradient_checkpointing=True)
        exp = theory.saved_activations(shape, cfg, prec).checkpoints
        h, L = shape.hidden, shape.layers
        wrong = {   # exp = b × s × h × L × bytes per value
            "bytes per value follow the precision: 2 for fp16/bf16, 4 for fp32 (a CPU run is fp32)": (
                b * s * h * L * 2 if prec == "fp32" else b * s * h * L * 4),
            "one layer input per decoder layer: multiply by the number of layers": b * s * h * DTYPE_OF[prec],
            "the inputs are micro_batch × seq_len × hidden values: include the batch": s * h * L * DTYPE_OF[prec],
        }
        cases.append(number_case(f"checkpointed_bytes({b}, {s}, {h}, {L}, {prec!r})", checkpointed_bytes,
                                 (b, s, h, L, prec), exp, 0.0, wrong, fmt=bytes_text))
    return run_cases("check_checkpointed_activations", cases)


def check_best_segments(best_segments) -> CheckResult:
    """`best_segments(layers, input_bytes, layer_bytes) -> k`: the number of checkpointed segments (1..L) with the
    smallest `segment_memory`; any k that reaches the minimum passes."""
    rng = random.Random(4)
    shape8 = PRESETS["llama-3.1-8b"].shape
    cfg8 = RunConfig(model="llama-3.1-8b", micro_batch=1, seq_len=2048)
    real_in = 1 * 2048 * shape8.hidden * 2                  # one layer input: b × s × hidden × 2 B (fp16)
    real_layer = theory.recompute_bytes(shape8, cfg8, "fp16")
    specs = [(32, real_in, real_layer), (16, 1.0, 1.0), (64, 1.0, 1.0), (80, 2.0, 1.0), (1, 5.0, 3.0), (12, 1.0, 40.0)]
    specs += [(rng.randint(2, 100), float(rng.randint(1, 50)), float(rng.randint(1, 50))) for _ in range(4)]
    cases = []
    for L, a, f in specs:
        def case(L=L, a=a, f=f):
            label = f"best_segments({L}, {a:g}, {f:g})"
            best_mem = min(segment_memory(L, k, a, f) for k in range(1, L + 1))
            best_ks = [k for k in range(1, L + 1) if segment_memory(L, k, a, f) == best_mem]
            exp_text = (f"k in {best_ks}" if len(best_ks) > 1 else f"{best_ks[0]}") + f" (memory {best_mem:g})"
            status, got = call_learner(best_segments, L, a, f)
            if status == "raised":
                return Failure(label, exp_text, raised_text(got))
            if isinstance(got, bool) or not isinstance(got, numbers.Integral) or not 1 <= got <= L:
                return Failure(label, exp_text, repr(got), f"return a whole number of segments between 1 and {L}")
            mem = segment_memory(L, int(got), a, f)
            if mem == best_mem:
                return None
            sq = max(1, min(L, round(math.sqrt(L))))
            if got == sq:
                hint = ("√L is best only when a layer's activations cost as much as its input; minimise "
                        "k·input + ⌈L/k⌉·layer instead")
            elif got == L:
                hint = "one checkpoint per layer (what transformers does) is simple, not always the smallest"
            else:
                hint = "try every k from 1 to L and keep the one with the least k·input + ⌈L/k⌉·layer"
            return Failure(label, exp_text, f"{got} (memory {mem:g})", hint)
        cases.append(case)
    return run_cases("check_best_segments", cases)
