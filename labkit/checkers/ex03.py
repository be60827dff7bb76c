"""Checkers of exercises 03 (batch size and gradient accumulation): planning the accumulation, and accumulating
gradients that equal one big batch's."""
from __future__ import annotations

import numbers

import torch

from labkit.checkers._engine import CheckResult, Failure, call_learner, is_number, raised_text, run_cases
from labkit.checkers._fixtures import TinyLM, grads_of, make_micro_batches
from labkit.checkers._references import reference_grads
from labkit.config import accumulation_for


def check_accumulation(plan_accumulation) -> CheckResult:
    """`plan_accumulation(effective_batch, micro_batch, num_gpus) -> int`, compared with
    labkit.config.accumulation_for; a batch that does not divide must raise ValueError."""
    specs = [(32, 2, 1), (32, 2, 2), (64, 4, 2), (32, 32, 1), (128, 8, 4), (30, 4, 1), (32, 3, 1), (16, 4, 8),
             (32, 0, 1)]
    cases = []
    for eff, mb, g in specs:
        def case(eff=eff, mb=mb, g=g):
            label = f"plan_accumulation({eff}, micro_batch={mb}, num_gpus={g})"
            try:
                exp = accumulation_for(eff, mb, g)
            except ValueError:
                exp = None
            status, got = call_learner(plan_accumulation, eff, mb, g)
            if exp is None:
                if status == "raised" and isinstance(got, ValueError):
                    return None
                if status == "raised":
                    return Failure(label, "ValueError", raised_text(got),
                                   "check the inputs yourself and raise ValueError with a sentence that says why")
                return Failure(label, "ValueError", repr(got),
                               "a rounded accumulation silently changes the effective batch: raise ValueError "
                               "when micro_batch × num_gpus does not divide it")
            if status == "raised":
                return Failure(label, repr(exp), raised_text(got))
            if got == exp and not isinstance(got, bool) and isinstance(got, numbers.Integral):
                return None
            if is_number(got) and got == exp:
                return Failure(label, repr(exp), repr(got), "return a whole number (use //, not /)")
            hint = "effective batch = micro_batch × accumulation × num_gpus: solve for accumulation"
            if got == eff // mb and g > 1:
                hint = "each GPU runs its own micro-batch: divide by micro_batch × num_gpus"
            return Failure(label, repr(exp), repr(got), hint)
        cases.append(case)
    return run_cases("check_accumulation", cases)


def same_grads(a, b, rtol=1e-4, atol=1e-6) -> bool:
    """Two gradient lists agree: none missing, same shapes, equal within float noise."""
    if any(x is None for x in a) or any(y is None for y in b):
        return False
    return all(x.shape == y.shape and torch.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b))


def max_diff(a, b) -> float:
    """The largest absolute difference between two gradient lists."""
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def check_grad_accumulation(accumulate_gradients) -> CheckResult:
    """`accumulate_gradients(model, micro_batches)`: leave in every `p.grad` the gradient of the whole cycle, equal
    to one big batch's (loss averaged over all label tokens). Compared with torch on the big batch."""
    specs = [  # (label, n_micro, micro_batch, seq_len, lengths, stale gradients before the call)
        ("4 micro-batches, no padding", 4, 2, 6, [6] * 8, False),
        ("4 micro-batches, very different padding", 4, 2, 8, [8, 8, 8, 7, 1, 2, 1, 1], False),
        ("1 micro-batch (no accumulation)", 1, 4, 5, None, False),
        ("8 micro-batches of one sequence each", 8, 1, 7, None, False),
        ("3 micro-batches, random padding", 3, 3, 9, None, False),
        ("gradients left over from an earlier step", 2, 2, 6, [6, 2, 5, 1], True),
    ]
    cases = []
    for idx, (what, n_micro, mb, s, lengths, stale) in enumerate(specs):
        def case(idx=idx, what=what, n_micro=n_micro, mb=mb, s=s, lengths=lengths, stale=stale):
            label = f"case {idx + 1}: {what}"
            model = TinyLM(seed=10 + idx)
            batches = make_micro_batches(n_micro, mb, s, seed=20 + idx, lengths=lengths)
            exp = reference_grads(model, batches, "big")
            before = [p.detach().clone() for p in model.parameters()]
            if stale:
                for p in model.parameters():
                    p.grad = torch.ones_like(p)
            status, got = call_learner(accumulate_gradients, model, [(i.clone(), lab.clone()) for i, lab in batches])
            if status == "raised":
                return Failure(label, "gradients equal to the big batch's", raised_text(got))
            if any(not torch.equal(p.detach(), q) for p, q in zip(model.parameters(), before)):
                return Failure(label, "the parameters unchanged", "parameters that moved",
                               "only accumulate gradients here: the optimizer step comes after the cycle")
            grads = grads_of(model)
            if any(g is None for g in grads):
                return Failure(label, "a gradient on every parameter", "some p.grad is None",
                               "call backward() on each micro-batch's loss")
            if same_grads(grads, exp):
                return None
            got_text = f"gradients that differ by up to {max_diff(grads, exp):.3g}"
            hint = "normalise every micro-batch's summed token loss by the label tokens of the whole cycle"
            if stale and same_grads(grads, [e + 1 for e in exp]):
                hint = "the old gradients were added to: zero them before the cycle (model.zero_grad())"
            elif same_grads(grads, reference_grads(model, batches, "mean_per_micro")):
                hint = ("the token-count pitfall: averaging each micro-batch's mean loss weights tokens unequally "
                        "when micro-batches hold different numbers of label tokens; sum the token losses and divide "
                        "by the label tokens of the whole cycle (transformers PR #34191)")
            elif same_grads(grads, reference_grads(model, batches, "sum_of_means")):
                hint = "the micro-batch losses were added up unscaled: normalise by the whole cycle's label tokens"
            elif same_grads(grads, reference_grads(model, batches, "per_sequence")):
                hint = "divide by the number of label tokens (padding excluded), not by the number of sequences"
            return Failure(label, "gradients equal to the big batch's", got_text, hint)
        cases.append(case)
    return run_cases("check_grad_accumulation", cases)
