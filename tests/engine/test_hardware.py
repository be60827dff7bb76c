"""The doctor: facts on this machine, the bf16 trap on a (pretend) T4, offline mode, and the T4 memory cap."""
import json
import time
import types

import pytest
import torch

from labkit.engine import hardware
from labkit.engine.hardware import T4_TOTAL_MEMORY, device_facts, format_doctor, t4_profile


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")


def test_cpu_facts(offline):
    f = device_facts("cpu")
    assert f["type"] == "cpu" and f["capability"] is None
    assert f["memory_kind"] == "host RAM" and f["total_memory"] > 0
    assert f["recommended_precision"] == "fp32"
    assert f["versions"]["torch"] == torch.__version__
    assert set(f["versions"]) >= {"python", "torch", "transformers", "peft", "bitsandbytes", "accelerate"}
    assert f["in_colab"] is False and f["t4"] is None
    assert f["hub_reachable"] is False and "offline mode" in f["hub_reason"]
    text = format_doctor(f)
    assert "no GPU" in text and "host RAM" in text and "offline mode" in text


def test_hf_offline_too(monkeypatch):
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hardware.hub_status() == (False, "offline mode (HF_HUB_OFFLINE is set)")


def test_hub_probe_cannot_hang(monkeypatch):
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import urllib.request
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: time.sleep(30))   # a DNS lookup that never ends
    t0 = time.perf_counter()
    ok, reason = hardware.hub_status(timeout=0.5)
    assert (ok, reason) == (False, "no answer within 0.5 s")
    assert time.perf_counter() - t0 < 1.5


def test_hub_refusal_is_not_reachable(monkeypatch):
    import urllib.error
    import urllib.request
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*a, **k):   # e.g. a proxy that answers 403 for every host
        raise urllib.error.HTTPError(hardware.HUB_URL, 403, "Forbidden", {}, None)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    ok, reason = hardware.hub_status(timeout=0.5)
    assert ok is False and "403" in reason


@pytest.mark.parametrize("conf, expected", [("expandable_segments:True", True),
                                            ("max_split_size_mb:128,expandable_segments:True", True),
                                            ("expandable_segments:False", False), ("", False)])
def test_expandable_segments(monkeypatch, offline, conf, expected):
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", conf)
    assert device_facts("cpu")["expandable_segments"] is expected


def _pretend_gpu(monkeypatch, name, major, minor, total, bf16_says):
    """Make torch.cuda look like a GPU of this kind (the CI machine has none)."""
    props = types.SimpleNamespace(name=name, major=major, minor=minor, total_memory=total, multi_processor_count=40)
    set_calls = []
    for attr, value in {
        "is_available": lambda: True, "is_initialized": lambda: False, "current_device": lambda: 0,
        "get_device_properties": lambda i: props, "mem_get_info": lambda i: (total - 2**28, total),
        "is_bf16_supported": lambda: bf16_says,
        "set_per_process_memory_fraction": lambda frac, i: set_calls.append((frac, i)),
    }.items():
        monkeypatch.setattr(torch.cuda, attr, value)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    return set_calls


def test_t4_bf16_trap(monkeypatch, offline):
    _pretend_gpu(monkeypatch, "Tesla T4", 7, 5, T4_TOTAL_MEMORY, bf16_says=True)
    f = device_facts()
    assert f["type"] == "cuda" and f["capability"] == [7, 5]
    assert f["native_bf16"] is False and f["torch_says_bf16_supported"] is True   # the trap, side by side
    assert f["recommended_precision"] == "fp16"
    assert f["total_memory"] == 15_835_660_288 and f["memory_kind"] == "GPU memory"
    assert f["t4"] and "sm_75" in f["t4"]["architecture"]
    text = format_doctor(f)
    assert "native bf16: no" in text and "is_bf16_supported() says True" in text and "emulation" in text
    assert "memory: 14.7 GiB total" in text and "Tesla T4 facts" in text    # units.fmt_bytes: 3 significant figures


def test_ampere_recommends_bf16(monkeypatch, offline):
    _pretend_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", 8, 0, 40 * 2**30, bf16_says=True)
    f = device_facts()
    assert f["native_bf16"] is True and f["recommended_precision"] == "bf16" and f["t4"] is None


def test_t4_profile_fraction(monkeypatch):
    """The cap is a T4's 14.75 GiB less the CUDA context a real T4 pays out of them, taken as the one this process
    holds here (what the GPU reports in use that the allocator did not reserve; 256 MiB in this pretend GPU)."""
    import labkit.engine.hardware as hardware
    monkeypatch.setattr(hardware, "_T4_PROFILE", False)          # put back after the test, whatever it sets
    h100 = 85_520_809_984
    calls = _pretend_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", 9, 0, h100, bf16_says=True)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i: 2 ** 20)
    frac = t4_profile()
    assert frac == pytest.approx((T4_TOTAL_MEMORY - (2 ** 28 - 2 ** 20)) / h100) and calls == [(frac, 0)]
    assert 0.18 < frac < 0.19 and hardware.t4_profile_active()
    assert t4_profile(fraction_of=10 ** 9) == pytest.approx(10 ** 9 / h100)      # a cap given is kept as given
    # another job holding 20 GB of this GPU is not a T4's context: at most 1.5 GiB is taken off the cap
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (h100 - 20 * 10 ** 9, h100))
    assert t4_profile() * h100 == pytest.approx(T4_TOTAL_MEMORY - hardware.CONTEXT_AT_MOST)
    # a GPU no bigger than a T4 is not capped below itself
    calls = _pretend_gpu(monkeypatch, "Tesla T4", 7, 5, T4_TOTAL_MEMORY, bf16_says=True)
    assert t4_profile() == 1.0


def test_the_lessons_environment_under_the_t4_profile(monkeypatch, capsys):
    """A bigger GPU capped by `t4_profile()` before a lesson starts (as benchmarks/gpu_check.py runs every lesson):
    the lesson's environment says so and resolves 'auto' as a T4 does (fp16), as the runs will; without the
    profile the same GPU is itself (bf16)."""
    import labkit.engine.hardware as hardware
    from labkit.course import lessons
    monkeypatch.setattr(hardware, "_T4_PROFILE", False)
    monkeypatch.setattr(lessons, "quiet", lambda: None)
    _pretend_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", 9, 0, 85_520_809_984, bf16_says=True)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i: 0)
    own = lessons.environment()
    assert own.precision == "bf16" and own.device_name == "NVIDIA H100 80GB HBM3"
    assert "compute capability 9.0" in capsys.readouterr().out
    assert t4_profile() < 1
    capped = lessons.environment()
    assert capped.precision == "fp16" and capped.capability == (7, 5) and capped.model == "llama-3.2-1b"
    out = capsys.readouterr().out
    assert "H100 80GB HBM3 in T4 profile" in out and "fp16" in out and "not a T4's" in out


def test_t4_profile_refuses_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA"):
        t4_profile()


def _facts(**over):
    base = {"type": "cuda", "name": "Tesla T4", "free_memory": 15 * 2 ** 30, "recommended_precision": "fp16",
            "hub_reachable": True, "versions": {p: "1.0" for p in ("torch", "transformers", "peft", "bitsandbytes",
                                                                   "accelerate")}}
    base.update(over)
    return base


def test_preflight_verdicts():
    from labkit.engine.hardware import preflight
    ready, lines = preflight(_facts())
    assert ready and lines[-1] == "READY: GPU lessons with the real model"
    ready, lines = preflight(_facts(hub_reachable=False))
    assert ready and "shape-only" in lines[-1]
    ready, lines = preflight(_facts(type="cpu", free_memory=None))
    assert ready and lines[-1] == "READY: CPU lessons with the tiny stand-in"
    ready, lines = preflight(_facts(versions={"torch": "2.5", "transformers": "4.57", "peft": None,
                                              "bitsandbytes": None, "accelerate": "1.0"}))
    assert not ready and "missing: peft, bitsandbytes" in lines[0] and lines[-1].startswith("NOT READY")
    ready, lines = preflight(_facts(free_memory=3 * 2 ** 30))
    assert ready and any("restart the runtime" in line for line in lines)
    assert "! only 3 GiB free on the GPU: restart the runtime to get a T4's ~14.7 GiB back" in lines


def test_doctor_check_exit_codes(monkeypatch, capsys):
    from labkit import cli
    from labkit.engine import hardware
    monkeypatch.setattr(hardware, "device_facts", lambda *a, **k: _facts())
    assert cli.main(["doctor", "--check"]) == 0
    assert capsys.readouterr().out.strip().endswith("READY: GPU lessons with the real model")
    monkeypatch.setattr(hardware, "device_facts", lambda *a, **k: _facts(versions={"torch": "2.5"}))
    assert cli.main(["doctor", "--check", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ready"] is False


def test_the_doctor_says_which_precision_is_faster_on_a_cpu_from_measurements_only():
    from labkit.engine.hardware import cpu_bf16_line
    measured = {"flops_per_s": {"fp32": 210e9, "bf16": 865e9}, "date": "2026-12-07"}
    assert "865 GFLOP/s against fp32's 210" in cpu_bf16_line(measured)
    assert "bf16 is faster here; 'auto' still runs fp32" in cpu_bf16_line(measured)
    slow = {"flops_per_s": {"fp32": 133e9, "bf16": 3e9}, "date": "2026-12-07"}
    assert "fp32 is faster here" in cpu_bf16_line(slow) and "auto" not in cpu_bf16_line(slow)
    for unmeasured in (None, {"flops_per_s": {"fp32": 1e11}}):
        line = cpu_bf16_line(unmeasured)
        assert "faster here" not in line and "labkit calibrate measures both" in line


# ---- a child process on the GPU gets the memory this process caches ---------------------------------------------
def test_cached_gpu_memory_is_handed_back_only_where_cuda_started(monkeypatch):
    """Where CUDA never started here, nothing is asked of it (asking would start a context); where it did, the
    caching allocator's unused blocks go back to the driver on every GPU, and the bytes are counted."""
    reserved = {0: 6 * 2 ** 30, 1: 2 ** 30}                           # two GPUs, with blocks cached
    emptied = []
    asked = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i: asked.append(i) or reserved[i])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: asked.append("empty"))
    assert hardware.hand_back_cached_gpu_memory() == 0
    assert asked == []                                                # CUDA not started: nothing asked of it

    def empty_cache():
        emptied.append(True)
        reserved.update({0: 2 * 2 ** 30, 1: 0})                       # what live tensors still hold stays

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    assert hardware.hand_back_cached_gpu_memory() == 5 * 2 ** 30      # 4 GiB of GPU 0 + 1 GiB of GPU 1
    assert emptied == [True]


def test_fresh_children_and_ranks_start_after_the_cache_is_handed_back(monkeypatch):
    import subprocess

    from labkit import fresh
    from labkit.config import RunConfig
    from labkit.engine import data_parallel

    order = []
    monkeypatch.setattr(hardware, "hand_back_cached_gpu_memory", lambda: order.append("hand back") or 0)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: order.append("child") or types.SimpleNamespace(
        returncode=0, stdout='{"config": {"model": "tiny"}, "status": "ok"}', stderr=""))
    assert fresh.run(RunConfig(), steps=1).status == "ok"
    assert order == ["hand back", "child"]

    order.clear()

    def start_processes(*args, **kwargs):
        order.append("ranks")
        raise RuntimeError("not started in this test")
    monkeypatch.setattr("torch.multiprocessing.start_processes", start_processes)
    monkeypatch.setattr(data_parallel, "usable_cpus", lambda: 2)
    with pytest.raises(RuntimeError, match="not started"):
        data_parallel.measure_data_parallel(RunConfig(num_gpus=2, seq_len=32), steps=1, warmup=0, device="cpu",
                                            weights="random")
    assert order == ["hand back", "ranks"]
