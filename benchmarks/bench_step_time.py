"""Step-time ratios, measured in one run on one config (machines are noisy: compare only within a run).

(a) labkit's instrumented runner / a bare PyTorch loop over the same model and batches   (goal ≤ 1.05)
(b) labkit's runner / HF Trainer                                                          (goal ≤ 1.0)

Each side runs `--steps` optimizer steps; the first `--warmup` are dropped; the sides alternate `--rounds`
times (order reversed every other round) so that drifts in machine load hit all of them. Printed: median and
minimum step time of each side, and the ratios of both (on a shared machine the minimum is the steadier one).

    python benchmarks/bench_step_time.py                 # tiny preset on this machine's device
    python benchmarks/bench_step_time.py --seq-len 512 --micro-batch 4 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import warnings

import torch

from labkit.engine import data
from labkit.config import RunConfig, resolve_precision
from labkit.engine.models import load_model, tokenizer_for
from labkit.engine.runner import (forward_backward, free_memory, label_tokens, make_optimizer, make_scheduler,
                                  measure_run)
from labkit.engine.device import device_summary, pick_device
from labkit.engine.trainer import train_with_trainer


def bare_loop(cfg: RunConfig, steps: int, device: str, precision: str) -> list[float]:
    """The loop a learner would write by hand: no hooks, no measurement beyond a synchronised clock."""
    import time
    model, src = load_model(cfg, precision, device)
    stream = data.batches(tokenizer_for(src), data.course_texts(), cfg.seq_len, cfg.micro_batch,
                          cfg.pad_to_seq_len, cfg.seed)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, steps)
    scaler = torch.amp.GradScaler(torch.device(device).type) if precision == "fp16" else None
    params = [p for p in model.parameters() if p.requires_grad]
    times = []
    for _ in range(steps):
        micro = [{k: v.to(device) for k, v in next(stream).items()} for _ in range(cfg.grad_accum)]
        n = sum(label_tokens(b) for b in micro)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in micro:
            forward_backward(model, b, n, device, precision, scaler)
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        (scaler.step(opt) if scaler else opt.step())
        if scaler:
            scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    del model, opt
    free_memory()
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    cfg = RunConfig(model=a.model, seq_len=a.seq_len, micro_batch=a.micro_batch, grad_accum=a.grad_accum,
                    precision=a.precision)
    device = pick_device()
    dev = device_summary(device)
    precision = resolve_precision(cfg.precision, dev["type"], tuple(dev["capability"]) if dev["capability"] else None)
    sides = {"labkit runner": [], "bare loop": [], "HF Trainer": []}
    run_side = {
        "labkit runner": lambda: measure_run(cfg, a.steps, a.warmup, device)["measured"]["step_times_s"],
        "bare loop": lambda: bare_loop(cfg, a.steps, device, precision),
        "HF Trainer": lambda: train_with_trainer(cfg, a.steps, a.warmup, device).measured.step_times_s,
    }
    order = list(run_side)
    for r in range(a.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):     # alternate the order: no side always goes first
            sides[name] += run_side[name]()[a.warmup:]
        print(f"round {r + 1}/{a.rounds} done", flush=True)
    med = {k: statistics.median(v) for k, v in sides.items()}
    print(f"\ndevice: {dev['name']} ({dev['type']}), precision {precision}, {cfg.effective_batch_text}, "
          f"seq {cfg.seq_len}, {a.rounds} rounds × {a.steps - a.warmup} timed steps per side")
    for k, v in med.items():
        print(f"  {k:14s} median step {v * 1000:8.1f} ms   (n={len(sides[k])}, "
              f"min {min(sides[k]) * 1000:.1f}, max {max(sides[k]) * 1000:.1f})")
    low = {k: min(v) for k, v in sides.items()}   # the least-disturbed step: steadier on a shared machine
    for tag, a_side, b_side, goal in (("(a)", "labkit runner", "bare loop", 1.05),
                                      ("(b)", "labkit runner", "HF Trainer", 1.0)):
        print(f"{tag} {a_side} / {b_side:10s} = {med[a_side] / med[b_side]:.3f} (medians), "
              f"{low[a_side] / low[b_side]:.3f} (minimums)   goal ≤ {goal}")


if __name__ == "__main__":
    main()
