import sys

import pytest

from labkit.search import largest_micro_batch, search_largest
from labkit.config import RunConfig


@pytest.mark.parametrize("limit,hi", [(1, 64), (10, 64), (37, 64), (64, 64), (5, 5), (3, 100)])
def test_search_finds_the_largest_that_fits(limit, hi):
    best, tries = search_largest(lambda n: n <= limit, 1, hi)
    assert best == min(limit, hi)
    assert len(tries) <= 2 * hi.bit_length() + 1
    assert all(ok == (n <= limit) for n, ok in tries)


def test_search_when_nothing_fits_and_bad_bounds():
    assert search_largest(lambda n: False, 1, 64) == (None, [(1, False)])
    with pytest.raises(ValueError):
        search_largest(lambda n: True, 0, 4)
    with pytest.raises(ValueError):
        search_largest(lambda n: True, 8, 4)


def test_largest_micro_batch_survives_simulated_ooms():
    out = largest_micro_batch(RunConfig(seq_len=64, memory_budget_gb=0.012), lo=1, hi=32)
    statuses = [e["status"] for e in out["trail"]]
    assert "oom" in statuses and "ok" in statuses
    assert "simulated-oom" in out["labels"]
    best = out["best"]
    assert best is not None
    fits = {e["micro_batch"]: e["status"] for e in out["trail"]}
    assert fits[best] == "ok" and fits.get(best + 1, "oom") == "oom"      # bisected to the edge
    saved = {e["micro_batch"]: e["saved_activation_bytes"] for e in out["trail"]}
    assert saved[2] == pytest.approx(2 * saved[1], rel=0.01)


# ---- a failure that is not an OOM ends the search with one line ---------------------------------------------------
def _fail_at(monkeypatch, micro_batch: int | None):
    """A stand-in model (one small Linear: the search logic is under test, not the model) whose forward + backward
    succeeds below `micro_batch` and raises a RuntimeError that is not an OOM there (None: never)."""
    import types
    import torch
    import labkit.search

    def load_model(cfg, precision, device, weights):
        return torch.nn.Linear(4, 4), types.SimpleNamespace(kind="shape-only")

    def forward_backward(model, batch, *args, **kwargs):
        if micro_batch is not None and batch["input_ids"].shape[0] >= micro_batch:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")
    monkeypatch.setattr(labkit.search, "load_model", load_model)
    monkeypatch.setattr(labkit.search, "forward_backward", forward_backward)


TINY = RunConfig(seq_len=64)
STOPPED = ("search stopped at micro-batch 8: RuntimeError: CUDA error: an illegal memory access was encountered "
           "(tried 1 ok, 2 ok, 4 ok, 8 error)")


def test_a_non_oom_failure_raises_with_the_tries_so_far(monkeypatch):
    _fail_at(monkeypatch, 8)
    with pytest.raises(RuntimeError, match="illegal memory access") as failed:
        largest_micro_batch(TINY, lo=1, hi=32)
    if sys.version_info >= (3, 11):                               # exception notes exist from 3.11
        assert failed.value.__notes__ == ["labkit: " + STOPPED]
    assert failed.value.__traceback__ is not None                 # the original error, its traceback intact


def test_a_non_oom_failure_can_come_back_as_a_result(monkeypatch):
    from labkit.search import stopped_text
    _fail_at(monkeypatch, 8)
    out = largest_micro_batch(TINY, lo=1, hi=32, on_error="return")
    assert out["status"] == "error" and out["best"] is None and out["stopped_at"] == 8
    assert [(e["micro_batch"], e["status"]) for e in out["trail"]] == [(1, "ok"), (2, "ok"), (4, "ok"), (8, "error")]
    assert out["trail"][-1]["error"] == out["error"] == \
        "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert stopped_text(out) == STOPPED
    with pytest.raises(ValueError, match="on_error"):
        largest_micro_batch(TINY, on_error="ignore")


def test_a_search_that_works_says_ok(monkeypatch):
    _fail_at(monkeypatch, None)
    out = largest_micro_batch(TINY, lo=1, hi=4, on_error="return")
    assert out["best"] == 4 and out["status"] == "ok" and out["error"] is None and "stopped_at" not in out


def test_cli_search_failure_is_one_line_and_exit_1(monkeypatch, capsys):
    import json
    from labkit import cli
    _fail_at(monkeypatch, 8)
    assert cli.main(["search", "--seq-len", "64", "--max", "32"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "labkit: " + STOPPED + "\n" and captured.out == ""
    assert cli.main(["search", "--seq-len", "64", "--max", "32", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["stopped_at"] == 8 and captured.err == "labkit: " + STOPPED + "\n"


def test_a_model_that_fails_to_load(monkeypatch):
    import labkit.search

    def broken_load(*args, **kwargs):
        raise RuntimeError("safetensors: header too large")
    monkeypatch.setattr(labkit.search, "load_model", broken_load)
    out = largest_micro_batch(TINY, on_error="return")
    assert out["status"] == "error" and out["stopped_at"] is None and out["trail"] == []
    assert labkit.search.stopped_text(out) == \
        "search stopped before its first try: RuntimeError: safetensors: header too large (tried none)"

    def bad_input(*args, **kwargs):
        raise ValueError("unknown model 'llama-9'")
    monkeypatch.setattr(labkit.search, "load_model", bad_input)
    with pytest.raises(ValueError, match="llama-9"):           # bad input stays a ValueError (exit 2), as before
        largest_micro_batch(TINY, on_error="return")
