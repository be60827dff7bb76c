"""A failed run leaves nothing behind: a failure is injected at every point of a run, and the live tensor bytes of
the process are counted before and after. They must come back to the baseline (±1 MiB) and the next run must be ok.

The failures are raised from inside the real code paths (a decoder layer's MLP forward, a backward hook, the
optimizer, the GradScaler, the Trainer, a batch-search probe), as a real OOM would be. The config is sized so that
a leak would be large: tiny, seq 128, micro-batch 2 keeps ~14 MiB of activations without checkpointing.
"""
import pytest
import torch
from transformers.models.llama import modeling_llama

from labkit.engine import device, measure, runner
from labkit.search import largest_micro_batch
from labkit.config import RunConfig
from labkit.experiment import run
from labkit.engine.models import load_model, tokenizer_for
from labkit.shapes import resolve_shape
from labkit.engine.trainer import train_with_trainer

pytestmark = pytest.mark.long      # half a minute or more: started early (tests/conftest.py)

MiB = 1024 ** 2
SLACK = 1 * MiB
LAYERS = resolve_shape("tiny").layers                      # 4 decoder layers → 4 MLP forwards per micro-batch


def cfg(checkpointing=False, **kw):
    return RunConfig(**{**dict(seq_len=128, micro_batch=2, grad_accum=2, gradient_checkpointing=checkpointing), **kw})


def oom(where="injected"):
    return torch.OutOfMemoryError(f"CUDA out of memory ({where})")


def mlp_calls_before_micro(micro: int, checkpointing: bool) -> int:
    """MLP forwards that run before micro-batch `micro` of step 0 starts: each micro-batch runs every layer once
    forward, and once more in backward when checkpointing recomputes it."""
    return micro * LAYERS * (2 if checkpointing else 1)


@pytest.fixture(scope="module")
def first_run():
    """One successful run, so that the caches a first run fills are filled before any baseline is counted."""
    assert run(cfg(), steps=1, warmup=0)["status"] == "ok"


@pytest.fixture
def baseline(first_run):
    """Live tensor bytes before this test's failure: after the module's first run, and after the successful run
    each test before it ended with (assert_nothing_left), so no run of its own is needed."""
    return measure.live_tensor_bytes()


def fail_in_mlp(monkeypatch, on_call: int, error=None, in_backward=False):
    """Make the `on_call`-th LlamaMLP forward (1-based) fail, in that forward or in its backward."""
    real = modeling_llama.LlamaMLP.forward
    calls = {"n": 0}

    def forward(self, x):
        calls["n"] += 1
        if calls["n"] == on_call and not in_backward:
            raise error or oom("forward")
        out = real(self, x)
        if calls["n"] == on_call and in_backward and out.requires_grad:
            def hook(grad):
                raise error or oom("backward")
            out.register_hook(hook)
        return out

    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", forward)
    return calls


def assert_nothing_left(baseline, monkeypatch, **next_run):
    monkeypatch.undo()
    left = measure.live_tensor_bytes()
    assert abs(left - baseline) <= SLACK, f"{(left - baseline) / MiB:.1f} MiB of the failed run stayed alive"
    again = run(cfg(**next_run), steps=1, warmup=0)
    assert again.status == "ok", again.error
    return left


@pytest.mark.parametrize("checkpointing", [False, True], ids=["ckpt-off", "ckpt-on"])
@pytest.mark.parametrize("where", ["metered-forward", "later-forward", "backward"])
def test_a_failure_in_a_micro_batch_leaves_nothing(baseline, monkeypatch, where, checkpointing):
    if where == "metered-forward":                # layer 2 of the first micro-batch: saved-tensor hooks are on
        fail_in_mlp(monkeypatch, 2)
    elif where == "later-forward":                # layer 2 of the second micro-batch: no hooks
        fail_in_mlp(monkeypatch, mlp_calls_before_micro(1, checkpointing) + 2)
    else:                                         # a backward hook on layer 2's MLP output, first micro-batch
        fail_in_mlp(monkeypatch, 2, in_backward=True)
    rec = run(cfg(checkpointing), steps=2, warmup=0)
    assert rec.status == "oom" and "CUDA out of memory" in rec.error
    assert rec.measured.step_time_s is None
    assert_nothing_left(baseline, monkeypatch, gradient_checkpointing=checkpointing)


def test_a_failure_in_the_optimizer_step_leaves_nothing(baseline, monkeypatch):
    import bitsandbytes as bnb

    real = bnb.optim.PagedAdamW8bit.step
    calls = {"n": 0}

    def step(self, *a, **k):                      # the second step fails, after the first made the 8-bit state
        calls["n"] += 1
        if calls["n"] == 2:
            raise oom("optimizer")
        return real(self, *a, **k)

    monkeypatch.setattr(bnb.optim.PagedAdamW8bit, "step", step)
    rec = run(cfg(), steps=3, warmup=0)
    assert rec.status == "oom" and calls["n"] == 2
    assert_nothing_left(baseline, monkeypatch)


@pytest.mark.parametrize("method", ["unscale_", "update"])
def test_a_failure_in_the_grad_scaler_leaves_nothing(baseline, monkeypatch, method):
    real = getattr(torch.amp.GradScaler, method)

    def failing(self, *a, **k):
        raise oom(f"GradScaler.{method}")

    monkeypatch.setattr(torch.amp.GradScaler, method, failing)
    # A run refuses fp16 on a CPU (a GPU recipe, as the lab says); the GradScaler's cleanup is the same code on
    # either device, so the refusal is lifted here to reach it where no GPU is.
    monkeypatch.setattr(device, "run_precision_refusal", lambda *a: None)
    # fp16 runs under a GradScaler. Sequence 64: fp16 matrix products run ~9× slower than fp32 on a CPU, and the
    # scaler fails after backward, when what a run could leave (gradients, optimizer and scaler state) does not
    # depend on the sequence length
    rec = run(cfg(precision="fp16", seq_len=64), steps=2, warmup=0)
    assert rec.status == "oom" and method in rec.error
    monkeypatch.setattr(torch.amp.GradScaler, method, real)
    assert_nothing_left(baseline, monkeypatch)


def test_a_cpu_allocation_failure_is_an_oom(baseline, monkeypatch):
    fail_in_mlp(monkeypatch, 2, error=RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                   "can't allocate memory: you tried to allocate 8589934592 bytes"))
    rec = run(cfg(), steps=1, warmup=0)
    assert rec.status == "oom" and "can't allocate memory" in rec.error
    assert_nothing_left(baseline, monkeypatch)


def test_an_error_that_is_not_an_oom_leaves_nothing(baseline, monkeypatch):
    fail_in_mlp(monkeypatch, 2, error=ValueError("a bug in a layer"))
    rec = run(cfg(), steps=1, warmup=0)
    assert rec.status == "error" and rec.error == "ValueError: a bug in a layer"
    assert_nothing_left(baseline, monkeypatch)


def test_an_interrupt_frees_memory_even_while_its_exception_is_held(baseline, monkeypatch):
    """Jupyter keeps the last traceback (sys.last_traceback): holding it must not hold the run's tensors."""
    fail_in_mlp(monkeypatch, 3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as held:
        runner.measure_run(cfg(), steps=1, warmup=0)
    assert held.value.__traceback__ is not None                 # the traceback is still here …
    assert_nothing_left(baseline, monkeypatch)                  # … and holds nothing


def test_a_failed_trainer_run_is_a_result_and_leaves_nothing(baseline, monkeypatch):
    fail_in_mlp(monkeypatch, 2)
    out = train_with_trainer(cfg(), steps=2, warmup=0)
    assert out.status == "oom" and "CUDA out of memory" in out.error
    assert out.measured.step_time_s is None
    assert_nothing_left(baseline, monkeypatch)
    assert train_with_trainer(cfg(), steps=2, warmup=1)["status"] == "ok"


def embeddings_alive() -> int:
    import gc
    return sum(isinstance(o, torch.nn.Embedding) for o in gc.get_objects())


def test_trainer_runs_leave_no_model_behind_in_bitsandbytes_optimizer_manager(baseline):
    """Trainer registers each embedding with bitsandbytes' process-wide GlobalOptimManager for 8-bit optimizers;
    the kit must take its model's entries back, after a good run and after a failed one."""
    import bitsandbytes as bnb

    manager = bnb.optim.GlobalOptimManager.get_instance()
    registered, alive = len(manager.module_weight_config_triple), embeddings_alive()
    assert train_with_trainer(cfg(), steps=2, warmup=1)["status"] == "ok"
    assert len(manager.module_weight_config_triple) == registered
    assert embeddings_alive() == alive
    assert abs(measure.live_tensor_bytes() - baseline) <= SLACK


def test_failed_search_probes_leave_nothing(baseline, monkeypatch):
    """Probes above 3 rows fail inside the forward (as a real OOM would); the search still finds 3 and the
    process holds nothing of the failed probes afterwards."""
    real = modeling_llama.LlamaMLP.forward

    def forward(self, x):
        if x.shape[0] > 3:
            raise oom("probe")
        return real(self, x)

    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", forward)
    found = largest_micro_batch(cfg(), hi=8)
    assert found["best"] == 3
    assert [(t["micro_batch"], t["status"]) for t in found["trail"]] == [(1, "ok"), (2, "ok"), (4, "oom"),
                                                                          (3, "ok")]
    assert_nothing_left(baseline, monkeypatch)


def test_a_search_probe_that_fails_otherwise_ends_the_search_holding_nothing(baseline, monkeypatch):
    fail_in_mlp(monkeypatch, LAYERS + 2, error=ValueError("not a memory failure"))   # in the second probe
    with pytest.raises(ValueError, match="not a memory failure"):
        largest_micro_batch(cfg(), hi=8)
    assert_nothing_left(baseline, monkeypatch)


# ---- what was already in memory ----------------------------------------------------------------------------------
def test_a_record_says_what_was_held_before_and_warns_when_it_is_large():
    small = run(cfg(), steps=1, warmup=0)
    m = small.measured
    assert m["allocated_before_source"] == "live-tensors"
    assert 0 <= m["allocated_before_bytes"] < 256 * MiB
    assert "memory-held-before" not in small.labels
    kept = torch.ones(300 * MiB // 4)                          # a learner's own 300 MiB tensor
    try:
        big = run(cfg(), steps=1, warmup=0)
    finally:
        del kept
    assert big.measured.allocated_before_bytes >= 300 * MiB
    assert "memory-held-before" in big.labels
    assert any("already in memory" in w for w in big.warnings)
    assert big.status == "ok"


def test_warmup_zero_is_labelled_as_timing_the_first_step():
    rec = run(cfg(), steps=1, warmup=0)
    assert rec.status == "ok" and "time-includes-warmup" in rec.labels
    assert "time-includes-warmup" not in run(cfg(), steps=2, warmup=1)["labels"]


# ---- the fix itself does not change training ---------------------------------------------------------------------
@pytest.mark.parametrize("checkpointing", [False, True], ids=["ckpt-off", "ckpt-on"])
def test_metering_the_forward_does_not_change_the_gradients(checkpointing):
    """The saved-tensor meter packs detached views (so no reference cycle can outlive a failed forward); the
    gradients must be exactly those of an unmetered forward."""
    from labkit.engine import data

    c = cfg(checkpointing, lora_dropout=0.0, micro_batch=2)
    model, src = load_model(c, "fp32", "cpu", "random")
    for p in model.parameters():                  # LoRA B starts at zero; give it values so A gets gradients
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    batch = next(data.batches(tokenizer_for(src), data.course_texts(), c.seq_len, c.micro_batch))
    n = runner.label_tokens(batch)
    grads = []
    for meter in (False, True):
        model.zero_grad(set_to_none=True)
        _, saved = runner.forward_backward(model, batch, n, "cpu", "fp32", meter=meter)
        assert (saved is not None) == meter
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
