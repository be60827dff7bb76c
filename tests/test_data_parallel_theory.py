"""The data-parallel theory: per-GPU memory unchanged by DDP, ring all-reduce bytes, link time, sharding."""
import pytest

from labkit import estimate, theory
from labkit.config import RunConfig
from labkit.shapes import resolve_shape
from labkit.theory import data_parallel as dp

TINY = resolve_shape("tiny")


def test_ring_allreduce_sends_the_gradients_once_for_two_ranks_and_twice_at_the_limit():
    g = 458_752                                              # tiny, r 16 on q,k,v,o: 114,688 fp32 gradients
    assert dp.gradient_bytes(TINY, RunConfig(model="tiny")) == g
    assert dp.ring_allreduce_bytes(g, 1) == 0
    assert dp.ring_allreduce_bytes(g, 2) == g                # 2·(2−1)/2 = 1
    assert dp.ring_allreduce_bytes(g, 8) == pytest.approx(1.75 * g)
    assert dp.ddp_buckets(g) == 1 and dp.ddp_buckets(dp.DDP_FIRST_BUCKET_BYTES + 1) == 2
    assert dp.ddp_buckets(dp.DDP_FIRST_BUCKET_BYTES + 50 * dp.MiB) == 3


def test_allreduce_time_is_bytes_over_the_link_plus_latency():
    t4 = dp.link_for("cuda", "Tesla T4")
    assert t4["key"] == "pcie3_x16" and t4["bytes_per_s"] == 15.75e9
    g = 10 ** 9
    assert dp.allreduce_seconds(g, 2, t4) == pytest.approx(g / 15.75e9 + 2 * t4["latency_s"])
    assert dp.allreduce_seconds(g, 1, t4) == 0
    assert dp.link_for("cuda", "NVIDIA H100 80GB HBM3")["key"] == "nvlink4"
    assert dp.link_for("cuda", "NVIDIA H100 PCIe")["key"] == "pcie5_x16"
    assert "assumed" in dp.link_for("cuda", "Some Future GPU")
    assert "stand-in" in dp.link_for("cpu")["source"]


def test_per_gpu_memory_is_one_gpus_and_only_sharding_divides_the_base():
    one = estimate(RunConfig(model="llama-3.1-8b", seq_len=1024, micro_batch=2, num_gpus=1), device="cpu")
    two = estimate(RunConfig(model="llama-3.1-8b", seq_len=1024, micro_batch=2, num_gpus=2), device="cpu")
    part = two.theory["data_parallel"]
    assert two.theory.peak == one.theory.peak == part["memory_per_rank"]["peak"]     # DDP copies the whole base
    assert "WHOLE 4-bit base" in part["memory_per_rank"]["note"]
    assert "data_parallel" not in one.theory
    assert part["sharded_weights_per_rank"] < one.theory.weights / 2 + one.theory.weights / 32 + 1
    assert dp.sharded_weight_bytes(1000, 4) == 250


def test_the_effective_batch_step_is_one_ranks_step_plus_the_sync():
    cfg = RunConfig(model="tiny", seq_len=64, micro_batch=2, grad_accum=2, num_gpus=2)
    memory = theory.predict_memory(TINY, cfg, "fp16")
    part = dp.predict_data_parallel(TINY, cfg, memory, {"step_s": 0.1}, "cuda", "Tesla T4")
    assert part["step_s"] == pytest.approx(0.1 + part["sync_s"])
    assert part["tokens_per_s"] == pytest.approx(2 * 2 * 2 * 64 / part["step_s"])
    assert 0 < part["sync_share"] < 0.01                     # 0.46 MB over PCIe: tens of µs
    assert dp.predict_data_parallel(TINY, cfg, memory, None, "cpu")["step_s"] is None
