"""Handmade records for the report tests (schema as in the contract): a CPU run of 1000 MiB saved activations, and
a checkpointing on/off pair whose changes are known in advance."""
from labkit.config import RunConfig
from labkit.theory.time import _regime

MiB = 2 ** 20


def make_record(status="ok", labels=("shape-only", "cpu"), **config):
    cfg = RunConfig(**{"precision": "fp32", **config})
    r = {
        "config": cfg.to_dict(), "resolved": {"precision": "fp32", "device": "cpu"}, "model_source": "shape-only",
        "labels": list(labels),
        "theory": {"weights": 3 * MiB, "lora": MiB // 2, "gradients": MiB // 2, "optimizer": MiB // 4,
                   "activations": 900 * MiB, "logits": 100 * MiB, "peak": 1100 * MiB,
                   "simple_rule_activations": 40 * MiB, "step_flops": 1e12},
        "measured": {"saved_activation_bytes": 1000 * MiB, "peak_allocated_bytes": None, "peak_reserved_bytes": None,
                     "step_time_s": 1.0, "tokens_per_s": 2048.0, "loss": [6.0, 5.9],
                     "resident": {"quantized_weights": 2 * MiB, "unquantized_weights": MiB, "lora": MiB // 2,
                                  "gradients": MiB // 2, "optimizer": MiB // 4}},
        "status": status, "error": None,
        "device": {"type": "cpu", "name": "x86_64", "capability": None, "total_memory": 16 * 2 ** 30},
    }
    if status != "ok":
        r["measured"] = {k: None for k in r["measured"]}
        r["error"] = "CUDA out of memory (handmade)"
    return r


def checkpointing_pair():
    off = make_record(gradient_checkpointing=False)
    on = make_record(gradient_checkpointing=True)
    on["theory"]["activations"] = 70 * MiB       # theory saved: 1000 → 170 MiB = −83%
    on["theory"]["step_flops"] = 1.5e12          # one extra forward: +50%
    on["measured"]["saved_activation_bytes"] = 190 * MiB   # −81%
    on["measured"]["step_time_s"] = 1.46                   # +46%
    return off, on


def with_time(record, compute_s, memory_s, overhead_s, optimizer_s=0.0, asynchronous=False,
              source="calibrated on x86_64, 2026-12-01"):
    """`record` with a handmade theory.time: one micro-step's three parts, combined as the theory does (CPU: the
    sum; GPU: max(work, overhead)), × grad_accum + the optimizer step."""
    total = max(compute_s + memory_s, overhead_s) if asynchronous else compute_s + memory_s + overhead_s
    accum = record["config"]["grad_accum"]
    record["theory"]["time"] = {
        "compute_s": compute_s, "memory_s": memory_s, "overhead_s": overhead_s, "total_s": total,
        "regime": _regime(compute_s, memory_s, overhead_s),
        "optimizer_s": optimizer_s, "step_s": accum * total + optimizer_s,
        "constants": {"source": source}}
    return record
