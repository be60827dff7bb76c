"""Checkers of exercises 07 (the discussion prompts as worked problems): cutting a run until it fits a T4, and
how many hours a run takes."""
from __future__ import annotations

from labkit import theory
from labkit.checkers._engine import CheckResult, Failure, call_learner, is_number, number_case, raised_text, run_cases
from labkit.checkers._fixtures import SEVEN_B, T4_TOTAL_MEMORY, theory_peak
from labkit.checkers._references import reference_fit, reference_hours
from labkit.config import RunConfig
from labkit.shapes import PRESETS
from labkit.units import GiB

T4_BUDGET = T4_TOTAL_MEMORY - GiB // 2          # what a T4 reports, less ≈ 0.5 GiB for the CUDA context

FIT_CASES = [  # (what, config, budget in bytes)
    ("the prompt: 8B, batch 4, seq 2048, accum 8 on a T4",
     dict(model="llama-3.1-8b", micro_batch=4, seq_len=2048, grad_accum=8), T4_BUDGET),
    ("the same on a card with 16 GiB free",
     dict(model="llama-3.1-8b", micro_batch=4, seq_len=2048, grad_accum=8), 16 * GiB),
    ("1B that already fits", dict(model="llama-3.2-1b", micro_batch=2, seq_len=512, grad_accum=16), T4_BUDGET),
    ("1B, batch 8 × 4 at seq 2048", dict(model="llama-3.2-1b", micro_batch=8, seq_len=2048, grad_accum=4), T4_BUDGET),
    ("8B at seq 8192", dict(model="llama-3.1-8b", micro_batch=2, seq_len=8192, grad_accum=16), T4_BUDGET),
    ("8B on 2 GPUs, 6 × 2 per GPU",
     dict(model="llama-3.1-8b", micro_batch=6, seq_len=1024, grad_accum=2, num_gpus=2), T4_BUDGET),
    ("8B in 6 GiB", dict(model="llama-3.1-8b", micro_batch=1, seq_len=1024, grad_accum=32, lora_r=64), 6 * GiB),
    ("8B in 5 GiB: cannot fit", dict(model="llama-3.1-8b", micro_batch=1, seq_len=1024, grad_accum=32), 5 * GiB),
]


def _cfg_text(c) -> str:
    """'micro 1 × accum 32 × 1 GPU, seq 2048, r 16 (peak 13.20 GiB)', or the repr of what is no RunConfig."""
    if not isinstance(c, RunConfig):
        return repr(c)[:200]
    return (f"micro {c.micro_batch} × accum {c.grad_accum} × {c.num_gpus} GPU, seq {c.seq_len}, r {c.lora_r}"
            f" (peak {theory_peak(c) / GiB:.2f} GiB)")


def check_fit_on_t4(fit_on_t4) -> CheckResult:
    """`fit_on_t4(cfg, budget_bytes) -> RunConfig | None`: the first config, in the source lesson's order of cuts, whose
    theory peak (fp16) fits the budget; the effective batch never changes. Compared with `reference_fit`."""
    cases = []
    for what, kw, budget in FIT_CASES:
        def case(what=what, kw=kw, budget=budget):
            cfg = RunConfig(**kw)
            label = f"{what}: {_cfg_text(cfg)}, budget {budget / GiB:.2f} GiB"
            exp = reference_fit(cfg, budget)
            exp_text = _cfg_text(exp) if exp is not None else "None (nothing fits)"
            status, got = call_learner(fit_on_t4, cfg, budget)
            if status == "raised":
                return Failure(label, exp_text, raised_text(got))
            if exp is None:
                return None if got is None else Failure(label, exp_text, _cfg_text(got),
                                                        "return None when even the smallest cut does not fit")
            if not isinstance(got, RunConfig):
                return Failure(label, exp_text, repr(got)[:200], "return a RunConfig (cfg.replace(...))")
            if got.effective_batch != cfg.effective_batch:
                return Failure(label, exp_text, _cfg_text(got),
                               f"keep the effective batch at {cfg.effective_batch}: raise the accumulation as you "
                               "lower the micro-batch")
            if theory_peak(got) > budget:
                return Failure(label, exp_text, _cfg_text(got), "that still does not fit the budget")
            if got == exp:
                return None
            if got.seq_len < exp.seq_len or got.lora_r < exp.lora_r:
                hint = "cut the micro-batch first; shorten sequences only when micro-batch 1 does not fit; " \
                       "the LoRA rank last"
            elif got.micro_batch < exp.micro_batch:
                hint = "that cuts more than needed: keep the largest micro-batch that fits"
            else:
                hint = "change only micro_batch/grad_accum, then seq_len (halving), then lora_r (halving)"
            return Failure(label, exp_text, _cfg_text(got), hint)
        cases.append(case)
    return run_cases("check_fit_on_t4", cases)


def check_training_hours(training_hours) -> CheckResult:
    """`training_hours(shape, cfg, n_tokens, peak_flops, mfu) -> hours` for n_tokens of training on cfg.num_gpus
    GPUs, each delivering mfu × peak_flops, with the FLOPs per token from labkit.theory.predict_step_flops."""
    specs = [("7B on 2×T4, one epoch of 50,000 × 500 tokens", SEVEN_B,
              dict(micro_batch=2, seq_len=512, grad_accum=8, num_gpus=2), 25e6, 65e12, 0.25),
             ("Llama-3.1-8B on a T4, batch 2 × 16", PRESETS["llama-3.1-8b"].shape,
              dict(micro_batch=2, seq_len=2048, grad_accum=16), 10e6, 65e12, 0.3),
             ("Llama-3.1-8B on an A10, batch 8 × 4", PRESETS["llama-3.1-8b"].shape,
              dict(micro_batch=8, seq_len=2048, grad_accum=4), 10e6, 125e12, 0.3),
             ("1B without checkpointing", PRESETS["llama-3.2-1b"].shape,
              dict(micro_batch=4, seq_len=1024, grad_accum=4, gradient_checkpointing=False), 3e6, 121e12, 0.4),
             ("0.5B on 4 GPUs", PRESETS["qwen2.5-0.5b"].shape,
              dict(micro_batch=8, seq_len=512, grad_accum=2, num_gpus=4), 1e8, 312e12, 0.35)]
    cases = []
    for what, shape, kw, tokens, peak, mfu in specs:
        cfg = RunConfig(**kw)
        exp = reference_hours(shape, cfg, tokens, peak, mfu)
        f = theory.predict_step_flops(shape, cfg)
        no_ckpt = theory.predict_step_flops(shape, cfg.replace(gradient_checkpointing=False))
        wrong = {
            "the GPUs share the tokens: divide by num_gpus": exp * cfg.num_gpus if cfg.num_gpus > 1 else None,
            "that is seconds: divide by 3600 for hours": exp * 3600,
            "a GPU delivers mfu × peak FLOP/s, not its peak": exp * mfu,
            "checkpointing adds a forward of the layers: use predict_step_flops for this config": (
                tokens * no_ckpt["step"] / no_ckpt["tokens"] / (cfg.num_gpus * peak * mfu) / 3600
                if cfg.gradient_checkpointing else None),
            "FLOPs per token = step FLOPs / tokens of the step (per GPU)": (
                tokens * f["step"] / (cfg.num_gpus * peak * mfu) / 3600),
        }
        cases.append(number_case(f"training_hours({what}: {tokens:,.0f} tokens, {peak / 1e12:g} TFLOP/s × {mfu})",
                                 training_hours, (shape, cfg, tokens, peak, mfu), exp, 0.01, wrong,
                                 fmt=lambda v: f"{v:.2f} h" if is_number(v) else repr(v)))
    return run_cases("check_training_hours", cases)
