"""The step runner: OOM is a result, the process stays usable, accumulation equals the big batch."""
import pytest
import torch

from labkit.engine import data, runner
from labkit.config import RunConfig
from labkit.experiment import run
from labkit.engine.models import load_model, tokenizer_for

SMALL = dict(seq_len=64, micro_batch=2, grad_accum=2)


def test_a_run_records_measurements():
    rec = run(RunConfig(**SMALL), steps=2, warmup=1)
    m = rec.measured
    assert rec.status == "ok" and rec.error is None
    assert rec.model_source == "shape-only" and "shape-only" in rec.labels
    assert len(m.loss) == 2 and all(v > 0 for v in m.loss)
    assert len(m.step_times_s) == 2 and m.step_time_s == m.step_times_s[1]
    assert m.tokens_per_s == pytest.approx(2 * 64 * 2 / m.step_time_s)
    assert m.peak_allocated_bytes is None                         # CPU: no allocator counter, no made-up figure
    assert set(m.resident) == {"quantized_weights", "unquantized_weights", "lora", "gradients", "optimizer"}


def test_the_engine_hands_over_a_typed_measured_part():
    """The engine's half of a record is typed where it is made (runner and data-parallel ranks alike), so nothing
    between the engine and the record reads it as a dict."""
    from labkit.engine.data_parallel import combine
    from labkit.record import Measured, Resident
    half = runner.measure_run(RunConfig(**SMALL), steps=1, warmup=0)
    assert isinstance(half["measured"], Measured) and isinstance(half["measured"].resident, Resident)
    ranks = [{**half, "measured": half["measured"].to_dict(), "labels": ["cpu"]} for _ in range(2)]
    for r in ranks:
        r["measured"].update(sync_time_s=0.0)
    assert isinstance(combine(ranks, None, half["device"])["measured"], Measured)


def test_oom_is_a_result_and_the_next_run_works(monkeypatch):
    real = runner.forward_backward
    calls = {"free": 0}
    real_free = runner.free_memory

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def counting_free():
        calls["free"] += 1
        real_free()

    monkeypatch.setattr(runner, "forward_backward", boom)
    monkeypatch.setattr(runner, "free_memory", counting_free)
    rec = run(RunConfig(**SMALL), steps=1, warmup=0)
    assert rec["status"] == "oom"
    assert rec["error"].startswith("CUDA out of memory")
    assert rec["config"]["micro_batch"] == 2                      # the record says which config ran out
    assert calls["free"] == 1
    monkeypatch.setattr(runner, "forward_backward", real)
    again = run(RunConfig(**SMALL), steps=1, warmup=0)
    assert again["status"] == "ok"


def test_other_failures_are_errors_not_crashes(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("something else broke\nsecond line")

    monkeypatch.setattr(runner, "forward_backward", broken)
    rec = run(RunConfig(**SMALL), steps=1, warmup=0)
    assert rec["status"] == "error"
    assert rec["error"] == "RuntimeError: something else broke"


def test_budget_on_cpu_is_a_labelled_simulated_oom():
    rec = run(RunConfig(**SMALL, memory_budget_gb=0.001), steps=1, warmup=0)
    assert rec["status"] == "oom"
    assert "simulated-oom" in rec["labels"] and "budget-simulated" in rec["labels"]
    assert "budget" in rec["error"]
    fits = run(RunConfig(**SMALL, memory_budget_gb=4), steps=1, warmup=0)
    assert fits["status"] == "ok" and "simulated-oom" not in fits["labels"]


@pytest.mark.parametrize("steps,warmup", [(0, 0), (2, 2), (1.5, 0)])
def test_bad_step_counts(steps, warmup):
    with pytest.raises(ValueError):
        runner.measure_run(RunConfig(**SMALL), steps=steps, warmup=warmup)


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model"):
        run(RunConfig(model="no-such-model"))


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters() if p.requires_grad]


def test_accumulated_gradients_equal_the_big_batch():
    """4 rows in one micro-batch vs 4 micro-batches of 1 row: the same gradient, because the loss is normalised
    over the label tokens of the whole cycle. A per-micro-batch mean divided by 4 is not the same (rows differ
    in length), which is the pitfall transformers #34191 fixed."""
    cfg = RunConfig(seq_len=512, micro_batch=4, grad_accum=1, lora_dropout=0.0, gradient_checkpointing=False)
    model, src = load_model(cfg, "fp32", "cpu", "random")
    for p in model.parameters():                     # LoRA B starts at zero; give it values so A gets gradients
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    big = next(data.batches(tokenizer_for(src), data.course_texts(), 512, 4))
    rows = [{k: v[i:i + 1] for k, v in big.items()} for i in range(4)]
    n = runner.label_tokens(big)
    assert len({runner.label_tokens(r) for r in rows}) > 1        # rows of different lengths: the pitfall bites

    runner.forward_backward(model, big, n, "cpu", "fp32")
    g_big = _grads(model)
    model.zero_grad(set_to_none=True)
    for r in rows:
        runner.forward_backward(model, r, n, "cpu", "fp32")
    g_acc = _grads(model)
    model.zero_grad(set_to_none=True)
    for r in rows:                                   # the pitfall: mean per micro-batch, then / accumulation
        out = model(**r)
        (out.loss / 4).backward()
    g_naive = _grads(model)
    for a, b in zip(g_big, g_acc):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert max((a - b).abs().max().item() for a, b in zip(g_big, g_naive)) > 1e-4


def test_optimizer_and_schedule_step_once_per_accumulation_cycle(monkeypatch):
    """3 optimizer steps × 4 micro-batches: 12 forward/backward passes, 3 optimizer and scheduler steps."""
    counts = {"fb": 0, "opt": 0, "sched": 0}
    real_fb, real_opt, real_sched = runner.forward_backward, runner.make_optimizer, runner.make_scheduler

    def fb(*a, **k):
        counts["fb"] += 1
        return real_fb(*a, **k)

    def make_opt(model, cfg):
        opt = real_opt(model, cfg)
        step = type(opt).step                  # patched on the class: the LR scheduler wraps opt.step itself

        def counted(self, *a, **k):
            counts["opt"] += 1
            return step(self, *a, **k)
        monkeypatch.setattr(type(opt), "step", counted)
        return opt

    def make_sched(opt, steps):
        sched = real_sched(opt, steps)
        step = sched.step

        def counted(*a, **k):
            counts["sched"] += 1
            return step(*a, **k)
        sched.step = counted
        return sched

    monkeypatch.setattr(runner, "forward_backward", fb)
    monkeypatch.setattr(runner, "make_optimizer", make_opt)
    monkeypatch.setattr(runner, "make_scheduler", make_sched)
    rec = runner.measure_run(RunConfig(seq_len=64, micro_batch=1, grad_accum=4), steps=3, warmup=1)
    assert rec["status"] == "ok", rec["error"]
    assert counts == {"fb": 12, "opt": 3, "sched": 3}
    assert len(rec["measured"]["loss"]) == 3                          # loss logged per optimizer step


def test_a_cpu_run_with_the_paged_optimizer_says_so_in_its_labels_not_in_a_warning():
    import warnings

    import bitsandbytes as bnb

    p = torch.nn.Parameter(torch.zeros(4096))
    p.grad = torch.ones(4096)
    with warnings.catch_warnings(record=True) as control:      # bitsandbytes itself warns (the control)
        warnings.simplefilter("always")
        bnb.optim.PagedAdamW8bit([p]).step()
    assert any("Paged optimizers are not supported on CPU" in str(w.message) for w in control)
    cfg = RunConfig(model="tiny", seq_len=32, micro_batch=1, grad_accum=1, optim="paged_adamw_8bit")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        rec = runner.measure_run(cfg, steps=1, warmup=0, device="cpu")
    assert rec["status"] == "ok" and "paging-off-on-cpu" in rec["labels"]
    assert not [w for w in seen if "Paged optimizers" in str(w.message)]
