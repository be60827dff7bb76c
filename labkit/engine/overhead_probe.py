"""o, the seconds per dispatched op of the time theory: a probe model and an optimizer step timed on this machine
and divided by the ops they dispatch (the other constants, F and B, are `labkit.engine.calibration_probes`).

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
"""
from __future__ import annotations

import json
import os
import warnings

import torch

from labkit.config import RunConfig
from labkit.engine.calibration_probes import now, sync
from labkit.engine.models import cache_dir

PROBE_SHAPE = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 288,
               "tie_word_embeddings": False, "max_position_embeddings": 64}
PROBE_SEQ = 16


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
        sync(dev)
        t0 = now()
        loss = forward()
        sync(dev)
        t1 = now()
        loss.backward()
        sync(dev)
        if i >= 2:
            times["forward"].append(t1 - t0)
            times["backward"].append(now() - t1)
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
        sync(dev)
        t0 = now()
        optimizer_step()
        sync(dev)
        return now() - t0

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
