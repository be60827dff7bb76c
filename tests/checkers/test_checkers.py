"""Exercises and solutions: the generator, the committed notebooks, and every checker against right and wrong answers.

Each checker must pass a correct answer with its fixed line, report "not implemented yet" for a stub, survive any
exception from learner code, and fail — with the hint that names the mistake — on plausible wrong answers.
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labkit import checkers as E, theory
from labkit.checkers._references import reference_axolotl_problems, reference_fit, reference_grads
from labkit.checkers.ex03 import max_diff
from labkit.checkers.ex07 import FIT_CASES
from labkit.config import RunConfig
from labkit.course import links
from labkit.checkers.build import (BEGIN, CODE_STUB, END, RAISES_TAG, TEXT_STUB, build, dumps, exercise_notebook,
                                    out_of_date, stub_source)

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS, EXERCISES = REPO / "solutions", REPO / "exercises"
LESSONS = ("01", "02", "03", "04", "05", "06", "07")


# ---------------------------------------------------------------------------------------------------------------
# Correct answers (the same logic as the solution notebooks)
# ---------------------------------------------------------------------------------------------------------------
def count_params(shape):
    d = shape.linear_dims()
    per_layer = sum(i * o for i, o in d.values()) + 2 * shape.hidden
    if shape.qkv_bias:
        per_layer += d["q_proj"][1] + d["k_proj"][1] + d["v_proj"][1]
    return shape.vocab * shape.hidden * (1 if shape.tied else 2) + shape.layers * per_layer + shape.hidden


def weights_gib(n, dtype):
    return n * {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "nf4": 0.5}[dtype] / 1024 ** 3


def lora_params(shape, r, targets):
    d = shape.linear_dims()
    return shape.layers * sum(r * (d[t][0] + d[t][1]) for t in targets)


def adapter_state(n, optim):
    return {"weights": 4 * n, "gradients": 4 * n, "optimizer": (8 if optim == "adamw" else 2) * n}


def logits_bytes(b, s, vocab):
    return b * s * vocab * 4


def checkpointed_bytes(b, s, h, layers, precision):
    return b * s * h * layers * {"fp32": 4, "fp16": 2, "bf16": 2}[precision]


def best_segments(layers, a, f):
    return min(range(1, layers + 1), key=lambda k: E.segment_memory(layers, k, a, f))


def plan_accumulation(eff, micro, gpus):
    if min(eff, micro, gpus) < 1 or eff % (micro * gpus):
        raise ValueError("no whole accumulation gives that batch")
    return eff // (micro * gpus)


def accumulate_gradients(model, micro_batches):
    model.zero_grad(set_to_none=True)
    n = sum(int((lab != -100).sum()) for _, lab in micro_batches)
    for ids, lab in micro_batches:
        (F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100, reduction="sum") / n).backward()


def choose_precision(cap, bf16_supported):
    return "fp32" if cap is None else ("bf16" if tuple(cap) >= (8, 0) else "fp16")


class LossScaler:
    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.s, self.gf, self.bf, self.gi = float(init_scale), growth_factor, backoff_factor, growth_interval
        self.good, self.found_inf = 0, False

    def get_scale(self):
        return self.s

    def scale(self, loss):
        return loss * self.s

    def unscale_(self, opt):
        self.found_inf = False
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad.div_(self.s)
                self.found_inf = self.found_inf or not bool(torch.isfinite(p.grad).all())
        return self.found_inf

    def step(self, opt):
        if not self.found_inf:
            opt.step()

    def update(self):
        if self.found_inf:
            self.s, self.good = self.s * self.bf, 0
        else:
            self.good += 1
            if self.good == self.gi:
                self.s, self.good = self.s * self.gf, 0


def qlora_budget(shape, cfg):
    T = cfg.micro_batch * cfg.seq_len
    linear = shape.layers * sum(i * o for i, o in shape.linear_dims().values())
    n = lora_params(shape, cfg.lora_r, cfg.lora_targets)
    return {"weights_4bit": linear * (0.5 + 0.127 / 8),
            "weights_16bit": shape.vocab * shape.hidden * (1 if shape.tied else 2) * 2,
            "adapters": 4 * n, "gradients": 4 * n, "optimizer": (8 if cfg.optim == "adamw" else 2) * n,
            "activations": T * shape.hidden * shape.layers * 2, "logits": T * shape.vocab * 4}


def qlora_kwargs(cap):
    bf16 = tuple(cap) >= (8, 0)
    return {"bnb": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                        bnb_4bit_compute_dtype="bfloat16" if bf16 else "float16"),
            "lora": dict(r=16, lora_alpha=32, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
            "training": dict(per_device_train_batch_size=2, gradient_accumulation_steps=16,
                             per_device_eval_batch_size=2, gradient_checkpointing=True, fp16=not bf16, bf16=bf16,
                             optim="paged_adamw_8bit", learning_rate=2e-4, save_strategy="steps")}


def largest_micro_batch(train_step, lo, hi, free_memory):
    def fits(n):
        try:
            train_step(n)
            return True
        except torch.OutOfMemoryError:
            free_memory()
            return False
    good, bad, n = None, None, lo
    while True:
        if fits(n):
            good = n
            if n == hi:
                return good
            n = min(2 * n, hi)
        else:
            bad = n
            break
    if good is None:
        return None
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def axolotl_problems(cfg, cap):
    return reference_axolotl_problems(cfg, cap)


def fit_on_t4(cfg, budget):
    return reference_fit(cfg, budget)


def training_hours(shape, cfg, n_tokens, peak, mfu):
    f = theory.predict_step_flops(shape, cfg)
    return n_tokens * f["step"] / f["tokens"] / (cfg.num_gpus * peak * mfu) / 3600


RIGHT = {
    "check_param_count": count_params, "check_weights_gib": weights_gib, "check_lora_params": lora_params,
    "check_adapter_state": adapter_state, "check_logits_bytes": logits_bytes,
    "check_checkpointed_activations": checkpointed_bytes, "check_best_segments": best_segments,
    "check_accumulation": plan_accumulation, "check_grad_accumulation": accumulate_gradients,
    "check_precision": choose_precision, "check_loss_scaler": LossScaler, "check_qlora_budget": qlora_budget,
    "check_qlora_kwargs": qlora_kwargs, "check_largest_micro_batch": largest_micro_batch,
    "check_axolotl_rules": axolotl_problems, "check_fit_on_t4": fit_on_t4, "check_training_hours": training_hours,
}


# ---------------------------------------------------------------------------------------------------------------
# Plausible wrong answers: (checker, what the learner got wrong, answer, a phrase the hint must contain)
# ---------------------------------------------------------------------------------------------------------------
def _swap(shape, **kw):
    return shape.__class__(**{**shape.to_dict(), **kw})


def _mean_per_micro(model, mbs):
    model.zero_grad()
    for ids, lab in mbs:
        (F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100) / len(mbs)).backward()


def _sum_of_means(model, mbs):
    model.zero_grad()
    for ids, lab in mbs:
        F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100).backward()


def _no_zero_grad(model, mbs):
    n = sum(int((lab != -100).sum()) for _, lab in mbs)
    for ids, lab in mbs:
        (F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100, reduction="sum") / n).backward()


def _per_sequence(model, mbs):
    model.zero_grad()
    n = sum(ids.shape[0] for ids, _ in mbs)
    for ids, lab in mbs:
        (F.cross_entropy(model(ids).flatten(0, 1), lab.flatten(), ignore_index=-100, reduction="sum") / n).backward()


def _steps_optimizer(model, mbs):
    accumulate_gradients(model, mbs)
    torch.optim.SGD(model.parameters(), lr=0.1).step()


class _NoUnscale(LossScaler):
    def unscale_(self, opt):
        self.found_inf = any(not bool(torch.isfinite(p.grad).all()) for g in opt.param_groups for p in g["params"])
        return self.found_inf


class _InfOnly(LossScaler):                      # misses nan
    def unscale_(self, opt):
        self.found_inf = False
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad.div_(self.s)
                self.found_inf = self.found_inf or bool(torch.isinf(p.grad).any())
        return self.found_inf


class _NoBackoff(LossScaler):
    def update(self):
        if not self.found_inf:
            super().update()


class _GrowEveryStep(LossScaler):
    def update(self):
        self.s *= self.bf if self.found_inf else self.gf


class _NoRestartAfterSkip(LossScaler):
    def update(self):
        if self.found_inf:
            self.s *= self.bf
        else:
            self.good += 1
            if self.good % self.gi == 0:
                self.s *= self.gf


class _SkipOnlyBadTensor(LossScaler):
    def step(self, opt):
        for g in opt.param_groups:
            for p in g["params"]:
                if not bool(torch.isfinite(p.grad).all()):
                    p.grad = None
        opt.step()


class _ReturnsNothing(LossScaler):
    def unscale_(self, opt):
        super().unscale_(opt)


def _kw(change):
    def answer(cap):
        k = qlora_kwargs(cap)
        change(k)
        return k
    return answer


def _no_free(train_step, lo, hi, free_memory):
    return largest_micro_batch(train_step, lo, hi, lambda: None)


def _catch_everything(train_step, lo, hi, free_memory):
    def fits(n):
        try:
            train_step(n)
            return True
        except Exception:
            free_memory()
            return False
    best, a, b = None, lo, hi
    while a <= b:
        m = (a + b) // 2
        if fits(m):
            best, a = m, m + 1
        else:
            b = m - 1
    return best


def _linear_scan(train_step, lo, hi, free_memory):
    best = None
    for n in range(lo, hi + 1):
        try:
            train_step(n)
            best = n
        except torch.OutOfMemoryError:
            free_memory()
            break
    return best


def _returns_last_try(train_step, lo, hi, free_memory):
    a, b, n = lo, hi, None
    while a <= b:
        n = (a + b) // 2
        try:
            train_step(n)
            a = n + 1
        except torch.OutOfMemoryError:
            free_memory()
            b = n - 1
    return n


def _no_free_after_last(train_step, lo, hi, free_memory):
    calls = {"oom": 0}

    def fits(n):
        try:
            train_step(n)
            return True
        except torch.OutOfMemoryError:
            calls["oom"] += 1
            return False
    # frees before each next try, never after the final one
    good, a, b = None, lo, hi
    while a <= b:
        if calls["oom"]:
            free_memory()
            calls["oom"] = 0
        m = (a + b) // 2
        if fits(m):
            good, a = m, m + 1
        else:
            b = m - 1
    return good


def _seq_first(cfg, budget):
    c = cfg
    while E.theory_peak(c) > budget and c.seq_len > 256:
        c = c.replace(seq_len=c.seq_len // 2)
    return c if E.theory_peak(c) <= budget else reference_fit(c, budget)


def _always_micro_one(cfg, budget):
    return reference_fit(cfg.replace(micro_batch=1, grad_accum=cfg.micro_batch * cfg.grad_accum), budget)


def _accum_unchanged(cfg, budget):
    for mb in range(cfg.micro_batch, 0, -1):
        if E.theory_peak(cfg.replace(micro_batch=mb)) <= budget:
            return cfg.replace(micro_batch=mb)
    return None


WRONG = [
    ("check_param_count", "lm_head counted for a tied model",
     lambda s: count_params(s) + (s.vocab * s.hidden if s.tied else 0), "count it once"),
    ("check_param_count", "norms forgotten", lambda s: count_params(s) - (2 * s.layers + 1) * s.hidden, "RMSNorm"),
    ("check_param_count", "k/v as wide as q", lambda s: count_params(_swap(s, kv_heads=s.heads)), "grouped-query"),
    ("check_param_count", "Qwen2 biases forgotten", lambda s: count_params(_swap(s, qkv_bias=False)), "biases"),
    ("check_weights_gib", "GB instead of GiB", lambda n, d: weights_gib(n, d) * 1024 ** 3 / 1e9, "1024³"),
    ("check_weights_gib", "bits instead of bytes", lambda n, d: weights_gib(n, d) * 8, "bits"),
    ("check_weights_gib", "bf16 as 4 bytes", lambda n, d: weights_gib(n, "fp32" if d == "bf16" else d), "2 bytes"),
    ("check_weights_gib", "nf4 as a whole byte", lambda n, d: weights_gib(n, "int8" if d == "nf4" else d),
     "half a byte"),
    ("check_lora_params", "A only", lambda s, r, t: s.layers * sum(r * s.linear_dims()[x][0] for x in t),
     "count both"),
    ("check_lora_params", "one layer", lambda s, r, t: lora_params(s, r, t) // s.layers, "number of layers"),
    ("check_lora_params", "k/v as wide as q", lambda s, r, t: lora_params(_swap(s, kv_heads=s.heads), r, t), "GQA"),
    ("check_lora_params", "a dense delta", lambda s, r, t: s.layers * sum(
        s.linear_dims()[x][0] * s.linear_dims()[x][1] for x in t), "not d_in·d_out"),
    ("check_adapter_state", "8-bit Adam as one byte", lambda n, o: {
        **adapter_state(n, o), "optimizer": (8 if o == "adamw" else 1) * n}, "two moments"),
    ("check_adapter_state", "8-bit Adam as 8 bytes", lambda n, o: {**adapter_state(n, o), "optimizer": 8 * n},
     "one byte"),
    ("check_adapter_state", "fp16 gradients", lambda n, o: {**adapter_state(n, o), "gradients": 2 * n}, "fp32"),
    ("check_adapter_state", "fp16 adapters", lambda n, o: {**adapter_state(n, o), "weights": 2 * n}, "peft keeps"),
    ("check_adapter_state", "a key missing", lambda n, o: {"weights": 4 * n, "gradients": 4 * n}, "keys"),
    ("check_logits_bytes", "fp16 logits", lambda b, s, v: b * s * v * 2, "upcasts the logits to fp32"),
    ("check_logits_bytes", "batch forgotten", lambda b, s, v: s * v * 4, "multiply by micro_batch"),
    ("check_checkpointed_activations", "always 2 bytes", lambda b, s, h, L, p: b * s * h * L * 2, "fp32"),
    ("check_checkpointed_activations", "one layer", lambda b, s, h, L, p: checkpointed_bytes(b, s, h, 1, p),
     "number of layers"),
    ("check_best_segments", "√L", lambda L, a, f: max(1, min(L, round(math.sqrt(L)))), "√L is best only"),
    ("check_best_segments", "always L", lambda L, a, f: L, "one checkpoint per layer"),
    ("check_best_segments", "⌊L/k⌋ instead of ⌈L/k⌉",
     lambda L, a, f: min(range(1, L + 1), key=lambda k: k * a + (L // k) * f), "try every k"),
    ("check_accumulation", "GPUs forgotten", lambda e, m, g: e // m, "each GPU"),
    ("check_accumulation", "rounds instead of refusing", lambda e, m, g: math.ceil(e / max(1, m * g)), "ValueError"),
    ("check_accumulation", "true division", lambda e, m, g: e / (m * g), "whole number"),
    ("check_grad_accumulation", "mean per micro-batch ÷ steps", _mean_per_micro, "token-count pitfall"),
    ("check_grad_accumulation", "means added up", _sum_of_means, "unscaled"),
    ("check_grad_accumulation", "old gradients kept", _no_zero_grad, "zero them"),
    ("check_grad_accumulation", "normalised by sequences", _per_sequence, "not by the number of sequences"),
    ("check_grad_accumulation", "steps an optimizer", _steps_optimizer, "optimizer step comes after"),
    ("check_precision", "trusts is_bf16_supported", lambda c, s: "fp32" if c is None else ("bf16" if s else "fp16"),
     "emulation trap"),
    ("check_precision", "major > 8", lambda c, s: "fp32" if c is None else ("bf16" if c[0] > 8 else "fp16"),
     ">= (8, 0)"),
    ("check_precision", "major == 8", lambda c, s: "fp32" if c is None else ("bf16" if c[0] == 8 else "fp16"),
     "newer GPUs"),
    ("check_precision", "bf16 on a CPU", lambda c, s: "bf16" if c is None else choose_precision(c, s), "CPU"),
    ("check_loss_scaler", "no unscaling", _NoUnscale, "not unscaled"),
    ("check_loss_scaler", "nan not detected", _InfOnly, "nan too"),
    ("check_loss_scaler", "no backoff", _NoBackoff, "backoff_factor"),
    ("check_loss_scaler", "grows every step", _GrowEveryStep, "growth_interval good steps"),
    ("check_loss_scaler", "count not restarted after a skip", _NoRestartAfterSkip, "restart that count"),
    ("check_loss_scaler", "skips only the bad tensor", _SkipOnlyBadTensor, "whole step"),
    ("check_loss_scaler", "unscale_ returns nothing", _ReturnsNothing, "return True"),
    ("check_qlora_budget", "embeddings quantised", lambda s, c: {**qlora_budget(s, c), "weights_16bit": 0},
     "not quantised"),
    ("check_qlora_budget", "tied head counted twice", lambda s, c: {
        **qlora_budget(s, c), "weights_16bit": s.vocab * s.hidden * 4}, "tied model stores one"),
    ("check_qlora_budget", "fp16 logits", lambda s, c: {
        **qlora_budget(s, c), "logits": c.micro_batch * c.seq_len * s.vocab * 2}, "fp32 logits"),
    ("check_qlora_budget", "8-bit Adam as 8 bytes", lambda s, c: {
        **qlora_budget(s, c), "optimizer": 8 * lora_params(s, c.lora_r, c.lora_targets)}, "one byte"),
    ("check_qlora_budget", "fp32 activations", lambda s, c: {
        **qlora_budget(s, c), "activations": c.micro_batch * c.seq_len * s.hidden * s.layers * 4}, "runs fp16"),
    ("check_qlora_budget", "16-bit base", lambda s, c: {
        **qlora_budget(s, c), "weights_4bit": qlora_budget(s, c)["weights_4bit"] / 0.516 * 2}, "½ byte"),
    ("check_qlora_kwargs", "bf16 compute dtype on a T4",
     _kw(lambda k: k["bnb"].update(bnb_4bit_compute_dtype="bfloat16")), "seed's bug"),
    ("check_qlora_kwargs", "eval batch 8", _kw(lambda k: k["training"].update(per_device_eval_batch_size=8)),
     "rule 2"),
    ("check_qlora_kwargs", "fp16 and bf16 both on", _kw(lambda k: k["training"].update(fp16=True, bf16=True)),
     "exactly one"),
    ("check_qlora_kwargs", "no double quant", _kw(lambda k: k["bnb"].update(bnb_4bit_use_double_quant=False)),
     "double quant"),
    ("check_qlora_kwargs", "raw batch size", _kw(lambda k: k["training"].update(
        per_device_train_batch_size=32, gradient_accumulation_steps=1)), "never a raw batch size"),
    ("check_largest_micro_batch", "memory never freed", _no_free, "free_memory()"),
    ("check_largest_micro_batch", "catches every exception", _catch_everything, "OutOfMemoryError only"),
    ("check_largest_micro_batch", "linear scan", _linear_scan, "binary search"),
    ("check_largest_micro_batch", "returns the last size tried", _returns_last_try, "bisect"),
    ("check_largest_micro_batch", "last OOM left unfreed", _no_free_after_last, "the last one too"),
    ("check_axolotl_rules", "any eval_batch_size flagged",
     lambda c, cap: axolotl_problems(c, cap) | ({2} if "eval_batch_size" in c else set()), "rule 2 does not apply"),
    ("check_axolotl_rules", "bf16: auto flagged on a T4",
     lambda c, cap: axolotl_problems(c, cap) | ({5} if c.get("bf16") and cap < (8, 0) else set()),
     "rule 5 does not apply"),
    ("check_axolotl_rules", "fp16 alone flagged",
     lambda c, cap: axolotl_problems(c, cap) | ({4} if c.get("fp16") and not c.get("adapter") else set()),
     "rule 4 does not apply"),
    ("check_axolotl_rules", "fp8 rule missing", lambda c, cap: axolotl_problems(c, cap) - {6}, "missed rule 6"),
    ("check_fit_on_t4", "sequence length cut first", _seq_first, "cut the micro-batch first"),
    ("check_fit_on_t4", "micro-batch 1 always", _always_micro_one, "largest micro-batch that fits"),
    ("check_fit_on_t4", "accumulation not raised", _accum_unchanged, "keep the effective batch"),
    ("check_training_hours", "GPUs forgotten",
     lambda s, c, n, p, m: training_hours(s, c.replace(num_gpus=1), n, p, m), "divide by num_gpus"),
    ("check_training_hours", "seconds", lambda s, c, n, p, m: training_hours(s, c, n, p, m) * 3600, "3600"),
    ("check_training_hours", "peak, not sustained", lambda s, c, n, p, m: training_hours(s, c, n, p, 1.0), "mfu"),
    ("check_training_hours", "recompute forgotten",
     lambda s, c, n, p, m: training_hours(s, c.replace(gradient_checkpointing=False), n, p, m), "checkpointing"),
]


# ---------------------------------------------------------------------------------------------------------------
# Checkers
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(E.TITLES))
def test_checker_passes_a_right_answer_with_its_fixed_line(name, capsys):
    result = getattr(E, name)(RIGHT[name])
    out = capsys.readouterr().out
    assert result and result.passed and not result.failures
    assert out == E.pass_line(E.TITLES[name], result.cases) + "\n"
    assert result.cases >= 3


@pytest.mark.parametrize("name", sorted(E.TITLES))
def test_checker_says_not_implemented_for_a_stub(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("your code here")

    class StubScaler(LossScaler):
        scale = unscale_ = step = update = stub

    result = getattr(E, name)(StubScaler if name == "check_loss_scaler" else stub)
    assert not result and result.not_implemented
    assert capsys.readouterr().out == E.not_implemented_line(E.TITLES[name]) + "\n"


@pytest.mark.parametrize("name", sorted(E.TITLES))
def test_checker_survives_broken_learner_code(name, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")

    def junk(*args, **kwargs):
        return "junk"

    for answer in (broken, junk):
        result = getattr(E, name)(answer)
        out = capsys.readouterr().out
        assert not result and not result.not_implemented and result.failures
        assert out.startswith(f"✗ {E.TITLES[name]}: ") and "expected:" in out and "got:" in out


@pytest.mark.parametrize("name,what,answer,hint", WRONG, ids=[f"{n}-{w}" for n, w, _, _ in WRONG])
def test_checker_catches_a_plausible_wrong_answer(name, what, answer, hint, capsys):
    result = getattr(E, name)(answer)
    out = capsys.readouterr().out
    assert not result, f"{name} accepted a wrong answer: {what}"
    assert result.failures and out.startswith(f"✗ {E.TITLES[name]}: {len(result.failures)} of {result.cases}")
    assert hint in out, f"the feedback for {what!r} should mention {hint!r}:\n{out}"


def test_every_checker_has_a_wrong_answer_test():
    assert {n for n, *_ in WRONG} == set(E.TITLES)


def test_failure_report_is_capped(capsys):
    E.check_param_count(lambda shape: 0)
    out = capsys.readouterr().out
    assert out.count("  • ") == E.MAX_SHOWN and "… and 2 more failing case(s)" in out


def test_result_object():
    r = E.CheckResult("x", 3)
    assert r and r.summary() == "✓ x: all 3 cases pass" and "all 3 cases pass" in repr(r)
    assert not E.CheckResult("x", 3, [E.Failure("c", "1", "2")])
    assert not E.CheckResult("x", 3, not_implemented=True)


def test_fake_gpu_keeps_failing_until_freed():
    gpu = E.FakeGPU(4)
    gpu.train_step(4)
    with pytest.raises(torch.OutOfMemoryError):
        gpu.train_step(5)
    with pytest.raises(torch.OutOfMemoryError, match="never|still"):
        gpu.train_step(1)
    gpu.free_memory()
    gpu.train_step(1)


def test_reference_fit_keeps_the_effective_batch_and_fits():
    for _, kw, budget in FIT_CASES:
        cfg = RunConfig(**kw)
        got = reference_fit(cfg, budget)
        if got is not None:
            assert got.effective_batch == cfg.effective_batch and E.theory_peak(got) <= budget
    # the discussion prompt: 8B at 4 × 8 does not fit a T4; micro-batch 1 × 32 does
    prompt = RunConfig(model="llama-3.1-8b", micro_batch=4, seq_len=2048, grad_accum=8)
    assert reference_fit(prompt, FIT_CASES[0][2]) == prompt.replace(micro_batch=1, grad_accum=32)


def test_grad_accumulation_cases_really_need_token_normalisation():
    """The uneven case must separate the naive loop from the right one by far more than float noise."""
    model = E.TinyLM(seed=0)
    mbs = E.make_micro_batches(4, 2, 8, seed=1, lengths=[8, 8, 8, 7, 1, 2, 1, 1])
    good = reference_grads(model, mbs, "big")
    naive = reference_grads(model, mbs, "mean_per_micro")
    assert max_diff(good, naive) > 1e-2


def test_loss_scaler_sequences_exercise_every_branch():
    """GradScaler itself must skip, back off and grow on the check's sequences, or the check proves little."""
    for _, init, interval, seq in E.SCALER_SEQUENCES:
        trail = E.scaler_run(None, seq, len(seq[0]), init, interval, mine=False)
        scales = [init] + [s for _, s, _ in trail]
        assert any(f for f, _, _ in trail)                                   # a skipped step
        assert any(b < a for a, b in zip(scales, scales[1:]))                # backoff
        assert any(b > a for a, b in zip(scales, scales[1:])) or interval > len(seq)   # growth


# ---------------------------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------------------------
def test_stub_keeps_indentation_and_the_code_around_the_block():
    src = f"def f(x):\n    y = x + 1\n    {BEGIN}\n    return y * 2\n    {END}\n\nprint('after')"
    text, blocks, top = stub_source(src, "code")
    assert blocks == 1 and not top
    assert text == ("def f(x):\n    y = x + 1\n" + "".join(f"    {s}\n" for s in CODE_STUB) + "\nprint('after')")
    compile(text, "<stub>", "exec")


def test_stub_handles_several_blocks_and_top_level_ones():
    src = f"{BEGIN}\nx = 1\n{END}\nclass A:\n    def m(self):\n        {BEGIN}\n        return 1\n        {END}"
    text, blocks, top = stub_source(src, "code")
    assert blocks == 2 and top and text.count("raise NotImplementedError") == 2
    assert "        raise NotImplementedError" in text and "x = 1" not in text and "return 1" not in text
    compile(text, "<stub>", "exec")


def test_markdown_answer_is_replaced_by_a_prompt():
    text, blocks, top = stub_source(f"**Q.** Why?\n\n{BEGIN}\nBecause.\n{END}", "markdown")
    assert blocks == 1 and not top and text == "**Q.** Why?\n\n" + TEXT_STUB[0]


@pytest.mark.parametrize("src", [f"{BEGIN}\nx = 1", f"x = 1\n{END}", f"{BEGIN}\n{BEGIN}\n{END}\n{END}"])
def test_unbalanced_delimiters_are_refused(src):
    with pytest.raises(ValueError):
        stub_source(src)


def _nb(*cells):
    return {"cells": list(cells), "metadata": {"kernelspec": {"name": "python3"}, "widgets": {"state": {}}},
            "nbformat": 4, "nbformat_minor": 5}


def _code(src, tags=None, outputs=None):
    return {"cell_type": "code", "id": "c", "execution_count": 3, "source": src,
            "metadata": {"tags": tags} if tags else {},
            "outputs": outputs or [{"output_type": "stream", "name": "stdout", "text": "hi\n"}]}


def test_exercise_notebook_clears_tags_and_pins():
    nb = _nb(_code(f"def f():\n    {BEGIN}\n    return 1\n    {END}"),
             _code("# NBVAL_CHECK_OUTPUT\nex.check_accumulation(f)"),
             _code("print(f())", tags=["uses-solution"]),
             _code("print('plain')"))
    out = exercise_notebook(nb, "solutions/x.ipynb")
    stub, check, demo, plain = out["cells"]
    assert nb["cells"][0]["outputs"] and "widgets" in nb["metadata"]          # the input is left alone
    assert stub["metadata"]["tags"] == [RAISES_TAG] and stub["outputs"] == [] and stub["execution_count"] is None
    assert check["execution_count"] == 2 and check["outputs"] == [{
        "name": "stdout", "output_type": "stream",
        "text": [E.not_implemented_line(E.TITLES["check_accumulation"]) + "\n"]}]
    assert demo["metadata"]["tags"] == ["uses-solution", RAISES_TAG] and demo["outputs"] == []
    assert "tags" not in plain["metadata"] and plain["outputs"] == [] and plain["execution_count"] is None
    assert "widgets" not in out["metadata"] and out["metadata"]["labkit_generated_from"] == "solutions/x.ipynb"


def test_check_cell_with_an_unknown_checker_is_refused():
    with pytest.raises(ValueError, match="check_nothing"):
        exercise_notebook(_nb(_code("# NBVAL_CHECK_OUTPUT\nex.check_nothing(f)")))


def test_build_is_deterministic_and_removes_only_stale_generated_notebooks(tmp_path):
    src, dst = tmp_path / "solutions", tmp_path / "exercises"
    src.mkdir()
    (src / "ex_a.ipynb").write_text(json.dumps(_nb(_code(f"{BEGIN}\nx = 1\n{END}"))), encoding="utf-8")
    (src / "ex_b.ipynb").write_text(json.dumps(_nb(_code("y = 2"))), encoding="utf-8")
    build(src, dst)
    first = {p.name: p.read_bytes() for p in dst.iterdir()}
    build(src, dst)
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == first
    assert all(b.endswith(b"\n") for b in first.values())
    assert out_of_date(src, dst) == []
    (dst / "mine.ipynb").write_text(json.dumps(_nb()), encoding="utf-8")     # not generated: must survive
    (src / "ex_b.ipynb").unlink()
    assert out_of_date(src, dst) == [str(dst / "ex_b.ipynb")]
    build(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["ex_a.ipynb", "mine.ipynb"]


def test_cli_check_and_bad_input(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    def run(*args):
        return subprocess.run([sys.executable, "-m", "labkit.checkers.build", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    p = run("missing", "out")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "does not exist" in p.stderr
    (tmp_path / "sol").mkdir()
    (tmp_path / "sol" / "e.ipynb").write_text(json.dumps(_nb(_code("x = 1"))), encoding="utf-8")
    p = run("sol", "ex", "--check")
    assert p.returncode == 1 and "out of date" in p.stderr
    assert run("sol", "ex").returncode == 0 and run("sol", "ex", "--check").returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# The committed notebooks
# ---------------------------------------------------------------------------------------------------------------
def test_committed_exercises_match_a_fresh_build(tmp_path):
    build(SOLUTIONS, tmp_path)
    fresh = {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")}
    committed = {p.name: p.read_bytes() for p in EXERCISES.glob("*.ipynb")}
    assert sorted(committed) == sorted(fresh), "run: python -m labkit.checkers.build solutions exercises"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} out of date — run: python -m labkit.checkers.build solutions exercises"


def _notebooks():
    return sorted(SOLUTIONS.glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell):
    return "".join(cell["source"])


def test_solutions_are_saved_as_jupyter_saves_them():
    for path in _notebooks():
        text = path.read_text(encoding="utf-8")
        assert dumps(json.loads(text)) == text, f"{path.name}: save it with Jupyter or dumps()"


def test_every_lesson_has_exercises_and_there_are_at_least_eight_checks():
    names = [p.name for p in _notebooks()]
    for lesson in LESSONS:
        assert any(n.startswith(f"ex{lesson}_") for n in names), f"no exercise notebook for lesson {lesson}"
    calls = [name for p in _notebooks() for c in _cells(p) if "# NBVAL_CHECK_OUTPUT" in _text(c)
             for name in re.findall(r"\b(check_\w+)\(", _text(c))]
    assert len(calls) >= 8 and set(calls) == set(E.TITLES) and len(calls) == len(set(calls))


def test_solution_check_cells_pin_the_pass_line():
    for path in _notebooks():
        for cell in _cells(path):
            if cell["cell_type"] != "code" or "# NBVAL_CHECK_OUTPUT" not in _text(cell):
                continue
            (name,) = re.findall(r"\b(check_\w+)\(", _text(cell))
            outputs = cell["outputs"]
            assert cell["execution_count"] is not None and len(outputs) == 1, f"{path.name}: run {name}'s cell"
            assert re.fullmatch(rf"✓ {re.escape(E.TITLES[name])}: all \d+ cases pass\n", "".join(outputs[0]["text"]))


def test_solution_cells_carry_nbgrader_metadata_and_exercises_stub_them():
    for path in _notebooks():
        solution_cells = [c for c in _cells(path) if BEGIN in _text(c)]
        assert solution_cells, f"{path.name} has no solution block"
        for cell in solution_cells:
            nbg = cell["metadata"].get("nbgrader", {})
            assert nbg.get("solution") is True and nbg.get("grade_id") == cell["id"], f"{path.name} {cell['id']}"
        ex_cells = {c["id"]: c for c in _cells(EXERCISES / path.name)}
        for cell in solution_cells:
            stub = ex_cells[cell["id"]]
            assert BEGIN not in _text(stub) and END not in _text(stub)
            if cell["cell_type"] == "code":
                assert "raise NotImplementedError" in _text(stub) and RAISES_TAG in stub["metadata"]["tags"]


def test_setup_cell_and_badge_point_at_this_repository():
    for path in _notebooks():
        cells = _cells(path)
        setup = _text(cells[1])
        assert f'REPO_URL, BRANCH = "{links.REPO_URL}", "{links.BRANCH}"' in setup, \
            f"{path.name}: setup cell installs another repository"
        assert '"--no-deps"' in setup, f"{path.name}: setup cell would let pip replace Colab's packages"
        assert links.badge_markdown(f"exercises/{path.name}") in _text(cells[0])


def test_each_exercise_links_to_its_lesson():
    for path in _notebooks():
        links_found = re.findall(r"\]\(\.\./(notebooks/[^)]+\.ipynb)\)", _text(_cells(path)[0]))
        assert links_found, f"{path.name}: no link to its lesson"
        for target in links_found:
            assert (REPO / target).is_file(), f"{path.name} links to {target}, which does not exist"
            assert Path(target).name[:2] == path.name[2:4], f"{path.name} links to another lesson: {target}"
