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
