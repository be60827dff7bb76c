"""Calibration: the device constants of the time theory, measured on the machine at hand, in a few seconds.

    constants = calibrate()          # measures (or returns the cached result for this device and library versions)
    cached_calibration()             # what `labkit doctor` shows; None when this device was never calibrated

The time theory (`labkit.theory.time`) splits a step's time as Horace He's "Making Deep Learning Go Brrrr From
First Principles" does — compute, memory bandwidth, overhead — and prices each with constants measured here:

    F  flops_per_s_by_size[precision]   square matmuls n×n @ n×n (2·n³ FLOPs), n = 64, 128, … (CPU up to 1024,
                                        GPU 256 … 8192), per precision: small matmuls run below the peak, so each
                                        op is priced at the rate of its own size. flops_per_s = the best of them.
       attention_flops_per_s            a fused scaled-dot-product attention call (8 heads × 32, 512 tokens, a
                                        mask), forward and backward: its softmax and masking make it slower than a
                                        matmul of equal FLOPs
    B  bytes_per_s_by_size              copies into a new tensor (`clone`: n read + n written, memory allocated as
                                        an op's output is) of 64 KiB … 32 MiB (CPU) / 1 MiB … 1 GiB (GPU): small
                                        ones stay in the caches. bytes_per_s = the best of them.
       elementwise_bytes_per_s_by_size  per precision, `a * b` at the same sizes: what an elementwise op reaches
                                        (a CPU computes 16-bit elements in fp32, converting each one)
       dequantize_elements_per_s_by_size, random_elements_per_s
                                        two ops a CPU runs far below their bytes' pace, measured as they are:
                                        bitsandbytes' NF4 dequantise (256², 1024² weights) and dropout's bernoulli_
    o  overhead_s_per_op[phase]         seconds per dispatched aten op (views included), per dispatch path: a tiny
                                        probe model (2 layers of hidden 64, 16 tokens, through the kit's own loader:
                                        4-bit base, LoRA) is timed phase by phase and divided by the ops each phase
                                        dispatches (`op_count.OpCounter`):
                                          forward    ops issued from Python module code (transformers, peft, bnb)
                                          backward   ops issued by the C++ autograd engine
                                          recompute  checkpointing on: (its backward − backward ops × o_backward)
                                                     / recomputed ops
                                          optimizer  clipping + paged 8-bit AdamW + zero_grad on 32 adapter-sized
                                                     tensors (4,096 elements: bitsandbytes' 8-bit path), per op

Why a probe model rather than a bare loop of `x.add_(1)`: what an op costs to dispatch depends on the Python above
it. A bare loop dispatches an op every ~5–10 µs on a CPU; the same op issued from a transformers + peft +
bitsandbytes forward costs several times that. The probe measures this machine and this software stack, never a
run the theory predicts: its shape is fixed, tiny (its compute is negligible) and not a preset. That is why the
cache is keyed by the device name and the torch, transformers, peft and bitsandbytes versions (and, on a CPU, the
number of threads torch uses).

Every figure is the best of several repeats (the device undisturbed, as a data sheet states it), timed by wall
clock (what a learner waits for). On a CPU shared with other work, wall time stretches with the others' load:
`calibrate(clock=time.process_time)` times the CPU this process got instead (not cached), to compare with steps
timed the same way.
"""
from __future__ import annotations

import datetime
import json
import os
import time
import warnings

import torch

from labkit.config import RunConfig
# where a calibration lives and how it is read back; re-exported, so `calibrate.cache_path` etc. keep working
from labkit.engine.calibration_cache import (VERSION, cache_path, cached_calibration,  # noqa: F401
                                             calibration_problem, device_identity)
from labkit.engine.models import TORCH_DTYPES, cache_dir

PROBE_SHAPE = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 288,
               "tie_word_embeddings": False, "max_position_embeddings": 64}
PROBE_SEQ = 16
MATMUL_MIN_N = {"cpu": 64, "cuda": 256}
MATMUL_MAX_N = {"cpu": 1024, "cuda": 8192}
MATMUL_STOP_S = 0.1                           # stop growing the matmul once one takes this long
DEQUANTIZE_SIDES = {"cpu": [256, 1024], "cuda": [1024, 4096]}
COPY_SIZES = {"cpu": [2 ** 16, 2 ** 19, 2 ** 22, 2 ** 25], "cuda": [2 ** 20, 2 ** 24, 2 ** 28, 2 ** 30]}


# ---- the three measurements ------------------------------------------------------------------------------------
_clock = time.perf_counter                     # wall time; calibrate(clock=time.process_time) for CPU time


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, device, repeats: int, inner: int = 1) -> float:
    """Fewest seconds of one call of `fn` over `repeats` timings of `inner` calls each (short calls are timed in
    batches): the device undisturbed, as a data sheet states it."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = _clock()
        for _ in range(inner):
            fn()
        _sync(device)
        times.append((_clock() - t0) / inner)
    return min(times)


def _inner(seconds_per_call: float, target: float = 0.01) -> int:
    """How many calls to time together so that one timing lasts about `target` seconds."""
    return max(1, min(1000, int(target / max(seconds_per_call, 1e-7))))


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> list[list[float]]:
    """F for one dtype at several sizes: [[n, FLOP/s], …] for n×n @ n×n (2·n³ FLOPs), n = 64, 128, … up to
    MATMUL_MAX_N, stopping once one matmul takes ≥ MATMUL_STOP_S (a slow dtype, e.g. fp16 on most CPUs, stops
    early; the theory then uses the largest size measured for larger ops)."""
    out, n = [], MATMUL_MIN_N[device.type]
    while n <= MATMUL_MAX_N[device.type]:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        t0 = _clock()
        a @ b                                          # first call: kernel choice, thread pool start
        _sync(device)
        first = _clock() - t0
        t = _best_time(lambda: a @ b, device, repeats, _inner(first))
        out.append([n, 2 * n ** 3 / t])
        if t >= MATMUL_STOP_S:
            break
        n *= 2
    return out


def copy_bytes_per_s(device: torch.device, repeats: int = 5) -> list[list[float]]:
    """B at several sizes: [[bytes moved, bytes/s], …]. A copy into a new tensor (`clone`, as an op makes its
    output) reads n bytes and writes n: 2·n bytes move, and the new tensor's memory is allocated as an op's would
    be. Small buffers stay in the caches (faster than memory), large ones go to memory: each op is priced at the
    rate of its own size."""
    out = []
    for n in COPY_SIZES[device.type]:
        if device.type == "cuda":
            n = min(n, torch.cuda.mem_get_info(device)[0] // 4)
        src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
        t0 = _clock()
        src.clone()
        _sync(device)
        t = _best_time(src.clone, device, repeats, _inner(_clock() - t0))
        out.append([2 * n, 2 * n / t])
        del src
    return out


def elementwise_bytes_per_s(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> list[list[float]]:
    """B as an elementwise op in this dtype reaches it, at the copy sizes: [[bytes moved, bytes/s], …] for
    `a * b` into a new tensor (2 reads + 1 write). On a GPU it matches the copy; a CPU without native 16-bit
    arithmetic converts every bf16/fp16 element, so there a 16-bit op moves half the bytes yet takes longer."""
    out = []
    for n in COPY_SIZES[device.type]:
        elements = n // 4
        if device.type == "cuda":
            elements = min(elements, torch.cuda.mem_get_info(device)[0] // 16)
        a = torch.ones(elements, device=device, dtype=dtype)
        b = torch.ones(elements, device=device, dtype=dtype)
        t0 = _clock()
        a * b
        _sync(device)
        t = _best_time(lambda: a * b, device, repeats, _inner(_clock() - t0))
        moved = 3 * elements * a.element_size()
        out.append([moved, moved / t])
    return out


def dequantize_elements_per_s(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> list[list[float]]:
    """bitsandbytes' NF4 dequantise (double quant, as the course loads weights), [[elements, elements/s], …] for
    square weights of 256², 1024² (and on a GPU 4096²) elements. On a CPU it is far slower than a copy of the
    same bytes (a table lookup and two scales per element, in library code, with a fixed cost per call), so the
    theory prices it at this rate, read at the weight's size, rather than at B."""
    import bitsandbytes.functional as bnb_f
    out = []
    for side in DEQUANTIZE_SIDES[device.type]:
        weight = torch.randn(side, side, device=device).to(dtype)
        packed, state = bnb_f.quantize_4bit(weight, quant_type="nf4", compress_statistics=True)
        t0 = _clock()
        bnb_f.dequantize_4bit(packed, state)
        _sync(device)
        t = _best_time(lambda: bnb_f.dequantize_4bit(packed, state), device, repeats, _inner(_clock() - t0))
        out.append([weight.numel(), weight.numel() / t])
    return out


def attention_flops_per_s(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> dict:
    """Scaled-dot-product attention as a decoder layer calls it (8 heads of 32, 512 tokens, a boolean mask), forward
    and backward: {"forward": FLOP/s, "backward": FLOP/s}. Forward does 4·heads·s²·hd FLOPs (Q·Kᵀ and P·V); backward
    2.5× that (it recomputes the scores: 5 matmuls of that size). A fused attention kernel also does the softmax's
    exponentials and the masking on every s² score, so on a CPU it runs well below the matmul rate, and its
    backward in 16-bit slower still."""
    heads, s, hd = 8, 512, 32
    q, k, v = (torch.randn(1, heads, s, hd, device=device).to(dtype).requires_grad_() for _ in range(3))
    mask = torch.ones(1, 1, s, s, dtype=torch.bool, device=device).tril()
    attend = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    grad = torch.ones(1, heads, s, hd, device=device, dtype=dtype)
    both = lambda: attend().backward(grad)  # noqa: E731
    t0 = _clock()
    both()
    _sync(device)
    first = _clock() - t0
    with torch.no_grad():
        forward = _best_time(attend, device, repeats, _inner(first))
    total = _best_time(both, device, repeats, _inner(first))
    flops = 4 * heads * s * s * hd
    return {"forward": flops / forward, "backward": 2.5 * flops / max(total - forward, 1e-9)}


def random_elements_per_s(device: torch.device, repeats: int = 5) -> float:
    """Dropout's mask as peft's dropout draws it: a new tensor of 2**17 elements (a 512-token × 256 input) filled
    by `bernoulli_(0.95)`, elements per second (on a CPU the random numbers, not the bytes, set its pace)."""
    like = torch.empty(2 ** 17, device=device)
    draw = lambda: torch.empty_like(like).bernoulli_(0.95)  # noqa: E731
    t0 = _clock()
    draw()
    _sync(device)
    t = _best_time(draw, device, repeats, _inner(_clock() - t0))
    return like.numel() / t


def _probe_model_path() -> str:
    folder = os.path.join(cache_dir(), "calibration", "probe")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(PROBE_SHAPE, f)
    return path


def _dispatched(summary: dict, phase: str) -> int:
    """Every op dispatched in a phase: the ops that do work and the views."""
    return summary[phase] + summary["metadata"][phase]


def _probe_phases(checkpointing: bool, device: str, precision: str, repeats: int) -> dict:
    """Fewest seconds of the probe model's forward and of its backward, and the ops each dispatches."""
    from labkit.engine import data
    from labkit.engine.models import load_model, quiet_loading
    from labkit.engine.op_count import OpCounter
    from labkit.engine.runner import autocast, label_tokens

    cfg = RunConfig(model=_probe_model_path(), seq_len=PROBE_SEQ, micro_batch=1, grad_accum=1,
                    gradient_checkpointing=checkpointing, precision=precision)
    with quiet_loading():
        model, _ = load_model(cfg, precision, device, weights="random")
    dev = torch.device(device)
    batch = {k: v.to(device) for k, v in next(data.batches(data.byte_tokenizer(), data.course_texts(), PROBE_SEQ,
                                                            1, True, seed=0)).items()}
    n = label_tokens(batch)

    def forward():
        with autocast(device, precision):
            return model(**batch, num_items_in_batch=n).loss

    times = {"forward": [], "backward": []}
    for i in range(repeats + 2):                       # two warm-up rounds: kernels chosen, caches filled
        _sync(dev)
        t0 = _clock()
        loss = forward()
        _sync(dev)
        t1 = _clock()
        loss.backward()
        _sync(dev)
        if i >= 2:
            times["forward"].append(t1 - t0)
            times["backward"].append(_clock() - t1)
    counter = OpCounter()                              # counted once, untimed: counting slows every op down
    with counter:
        loss = forward()
        counter.phase = "backward"
        loss.backward()
    ops = counter.summary()
    return {"seconds": {k: min(v) for k, v in times.items()},
            "ops": {p: _dispatched(ops, p) for p in ("forward", "recompute", "backward")}}


def optimizer_probe(device: str, precision: str, repeats: int = 7) -> dict:
    """Seconds per op of what ends an optimizer step (unscale with fp16, gradient clipping, the course's paged
    8-bit AdamW, zero_grad), on 32 adapter-like tensors of 4,096 fp32 elements: the size at which bitsandbytes
    switches to its 8-bit blockwise update, as a 16-rank adapter of a 256-wide layer has."""
    from labkit.engine.op_count import OpCounter
    from labkit.engine.runner import make_optimizer
    from labkit.engine.runner import optimizer_step as runner_step

    dev = torch.device(device)
    params = [torch.nn.Parameter(torch.randn(16, 256, device=dev) * 0.01) for _ in range(32)]
    optimizer = make_optimizer(torch.nn.ParameterList(params), RunConfig(model="tiny"))
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    if scaler is not None:       # the scale is made by the first scale(); the runner's backward does that, and the
        scaler.scale(torch.ones((), device=dev))   # probe sets its gradients by hand, so it scales a loss once here

    def optimizer_step():                         # what the runner does once per optimizer step
        runner_step(optimizer, params, scaler)

    def timed_step():
        for p in params:
            p.grad = torch.full_like(p, 1e-3)
        _sync(dev)
        t0 = _clock()
        optimizer_step()
        _sync(dev)
        return _clock() - t0

    times = [timed_step() for _ in range(repeats + 2)][2:]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    counter = OpCounter()
    with counter:
        optimizer_step()
    ops = _dispatched(counter.summary(), "forward")
    return {"seconds": min(times), "ops": ops, "tensors": len(params)}


def overhead_per_op(device: str, precision: str, repeats: int = 7) -> dict:
    """o for each dispatch path, from the probe model with checkpointing off and on and from the optimizer probe
    (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        off = _probe_phases(False, device, precision, repeats)
        on = _probe_phases(True, device, precision, repeats)
        opt = optimizer_probe(device, precision, repeats)
    from labkit.engine.measure import free_memory
    free_memory()                                      # the probes' models went with their frames
    o_forward = off["seconds"]["forward"] / off["ops"]["forward"]
    o_backward = off["seconds"]["backward"] / off["ops"]["backward"]
    # checkpointing's backward = its own backward ops at o_backward + the recomputed forward's ops
    recompute_s = on["seconds"]["backward"] - on["ops"]["backward"] * o_backward
    o_recompute = recompute_s / on["ops"]["recompute"] if on["ops"]["recompute"] else None
    note = None
    if o_recompute is None or o_recompute <= 0:        # noise larger than the recompute itself: say so, use forward's
        o_recompute, note = o_forward, "recompute not separable from noise; forward's cost per op used"
    return {"per_op": {"forward": o_forward, "recompute": o_recompute, "backward": o_backward,
                       "optimizer": opt["seconds"] / opt["ops"]},
            "probe": {"shape": PROBE_SHAPE, "seq_len": PROBE_SEQ, "micro_batch": 1, "precision": precision,
                      "checkpointing_off": off, "checkpointing_on": on, "optimizer": opt, "note": note}}


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
    global _clock
    if clock is not None:
        previous, _clock = _clock, clock
        try:
            return calibrate(device, force=True, repeats=repeats, save=False)
        finally:
            _clock = previous
    identity = device_identity(device)
    path = cache_path(identity)
    if not force:
        found = cached_calibration(device)
        if found is not None:
            return found
    dev = torch.device(device or identity["type"])
    from labkit.engine.device import run_setup
    _, _, precision, _ = run_setup(RunConfig(model="tiny"), str(dev))   # what 'auto' runs in here
    started = _clock()
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
    clock_name = "wall" if _clock is time.perf_counter else getattr(_clock, "__name__", "custom")
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
                    "seconds": _clock() - started},
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


def format_calibration(c: dict | None) -> str:
    """Lines for the doctor: the constants and where they came from; or how to get them."""
    if not c:
        return "  time constants: none calibrated on this device — `labkit calibrate` measures them (a few seconds)"
    o = c["overhead_s_per_op"]
    flops = ", ".join(f"{p} {v / 1e9:,.1f} GFLOP/s" for p, v in c["flops_per_s"].items())
    attention = ", ".join(f"{p} {v['forward'] / 1e9:,.1f} forward, {v['backward'] / 1e9:,.1f} backward"
                          for p, v in (c.get("attention_flops_per_s") or {}).items())
    dequantize = max((r for _, r in c.get("dequantize_elements_per_s_by_size") or []), default=None)
    lines = [
        f"  time constants ({c['source']}; torch {c['versions'].get('torch')}"
        + (f", {c['threads']} thread{'s' if c['threads'] != 1 else ''}" if c.get("threads") else "") + "):",
        f"    F, matmul peak: {flops}" + (f"; attention: {attention}" if attention else ""),
        f"    B, copy peak: {c['bytes_per_s'] / 1e9:,.1f} GB/s"
        + (f"; NF4 dequantise {dequantize / 1e6:,.0f} M elements/s" if dequantize else "")
        + (f"; dropout masks {c['random_elements_per_s'] / 1e6:,.0f} M elements/s"
           if c.get("random_elements_per_s") else ""),
        "    o, per dispatched op: " + ", ".join(f"{k} {v * 1e6:,.1f} µs" for k, v in o.items()),
    ]
    return "\n".join(lines)
