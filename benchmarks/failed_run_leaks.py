"""What a failed run leaves behind, per failure point: live tensor bytes before and after, on the CPU.

    python benchmarks/failed_run_leaks.py            # tiny, seq 128, micro-batch 2, accumulation 2

For each point a failure is raised from inside the real code path (as a real OOM would be), then the live tensor
bytes of the process are counted (`labkit.engine.measure.live_tensor_bytes`) and a fitting run is tried again. The tests
in tests/test_failed_runs.py hold the same points to ±1 MiB; this script prints the figures for a closing note or
a bug report. CPU stand-in: the failures are injected, not real CUDA OOMs.
"""
from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from transformers.models.llama import modeling_llama  # noqa: E402

from labkit.engine import measure, runner  # noqa: E402
from labkit.search import largest_micro_batch  # noqa: E402
from labkit.config import RunConfig  # noqa: E402
from labkit.experiment import run  # noqa: E402

MiB = 1024 ** 2
REAL_MLP = modeling_llama.LlamaMLP.forward


def config(checkpointing: bool, **kw) -> RunConfig:
    return RunConfig(seq_len=128, micro_batch=2, grad_accum=2, gradient_checkpointing=checkpointing, **kw)


def failing_mlp(on_call: int, error: BaseException, in_backward: bool = False):
    calls = {"n": 0}

    def forward(self, x):
        calls["n"] += 1
        if calls["n"] == on_call and not in_backward:
            raise error
        out = REAL_MLP(self, x)
        if calls["n"] == on_call and in_backward and out.requires_grad:
            out.register_hook(lambda grad: (_ for _ in ()).throw(error))
        return out
    return forward


def oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory (injected)")


def scene(name: str, checkpointing: bool, patch, action) -> dict:
    """Baseline → failing action (with `patch` applied) → live bytes → the fitting run again."""
    run(config(checkpointing), steps=1, warmup=0)
    before = measure.live_tensor_bytes()
    undo = patch()
    held = None
    try:
        outcome = action(checkpointing)
    except BaseException as e:  # noqa: BLE001 — the old code let some failures out; hold it as Jupyter would
        outcome, held = f"raised {type(e).__name__}", e
    finally:
        undo()
    after = measure.live_tensor_bytes()
    again = run(config(checkpointing), steps=1, warmup=0)["status"]
    del held
    return {"point": name, "checkpointing": checkpointing, "outcome": outcome, "before": before, "after": after,
            "next run": again}


def patch_attr(owner, attr, value):
    def apply():
        real = getattr(owner, attr)
        setattr(owner, attr, value)
        return lambda: setattr(owner, attr, real)
    return apply


def status_of(rec) -> str:
    return rec["status"] if hasattr(rec, "keys") and "status" in rec else str(rec)


def main() -> int:
    import bitsandbytes as bnb

    layers = 4                                           # the tiny preset's decoder layers
    optimizer_calls = {"n": 0}
    real_step = bnb.optim.PagedAdamW8bit.step

    def second_step_fails(self, *a, **k):
        optimizer_calls["n"] += 1
        if optimizer_calls["n"] % 2 == 0:
            raise oom()
        return real_step(self, *a, **k)

    def training(ckpt):
        return status_of(run(config(ckpt), steps=3, warmup=0))

    def trainer(ckpt):
        from labkit.engine.trainer import train_with_trainer
        return status_of(train_with_trainer(config(ckpt), steps=2, warmup=0))

    def search(ckpt):
        return f"best {largest_micro_batch(config(ckpt), hi=8)['best']}"

    def probe_over_3(self, x):
        if x.shape[0] > 3:
            raise oom()
        return REAL_MLP(self, x)

    def raising_scaler(self, *a, **k):
        raise oom()

    rows = []
    for ckpt in (False, True):
        later = layers * (2 if ckpt else 1) + 2        # layer 2 of the second micro-batch
        points = [
            ("metered forward", patch_attr(modeling_llama.LlamaMLP, "forward", failing_mlp(2, oom())), training),
            ("later forward", patch_attr(modeling_llama.LlamaMLP, "forward", failing_mlp(later, oom())), training),
            ("backward hook", patch_attr(modeling_llama.LlamaMLP, "forward",
                                         failing_mlp(2, oom(), in_backward=True)), training),
            ("optimizer step", patch_attr(bnb.optim.PagedAdamW8bit, "step", second_step_fails), training),
            ("GradScaler.unscale_ (fp16)", patch_attr(torch.amp.GradScaler, "unscale_", raising_scaler),
             lambda c: status_of(run(config(c, precision="fp16"), steps=2, warmup=0))),
            ("Trainer forward", patch_attr(modeling_llama.LlamaMLP, "forward", failing_mlp(2, oom())), trainer),
            ("search probes > 3", patch_attr(modeling_llama.LlamaMLP, "forward", probe_over_3), search),
            ("interrupt, exception held", patch_attr(modeling_llama.LlamaMLP, "forward",
                                                     failing_mlp(3, KeyboardInterrupt())), training),
        ]
        for name, patch, action in points:
            rows.append(scene(name, ckpt, patch, action))
            r = rows[-1]
            print(f"{r['point']:<27} ckpt {'on ' if ckpt else 'off'}  {r['outcome']:<22} before "
                  f"{r['before'] / MiB:7.2f} MiB  after {r['after'] / MiB:7.2f} MiB  left "
                  f"{(r['after'] - r['before']) / MiB:+7.2f} MiB  next run {r['next run']}", flush=True)
    worst = max(abs(r["after"] - r["before"]) for r in rows)
    print(f"\nworst: {worst / MiB:.2f} MiB left behind (goal ≤ 1 MiB)  [CPU, tiny shape-only model, failures injected]")
    return 0 if worst <= MiB else 1


if __name__ == "__main__":
    sys.exit(main())
