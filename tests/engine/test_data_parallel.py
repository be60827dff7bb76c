"""Data parallelism for real, on a CPU: N gloo processes under DDP give one process's update with micro-batch × N.

The ranks fork from a server that imported torch, transformers and peft once (data_parallel.start_method), so a run
costs its steps, not an import per rank (≈ 10 s each on 2 busy cores when they were spawned). This file runs three:
the equivalence (weights, gradients, unequal label counts), the command line (one record, the losses), and an
injected failure.
"""
import json
import multiprocessing
import os
import subprocess
import sys

import pytest
import torch

from labkit import cli
from labkit.config import RunConfig
from labkit.engine import data, data_parallel, device, runner
from labkit.engine.runner import label_tokens

pytestmark = pytest.mark.long      # half a minute or more: started early (tests/conftest.py)

# 2 ranks × mb 2 × accum 2 = 8 sequences an optimizer step = 1 process × mb 4 × accum 2; dropout 0 so that the
# forward is a function of the weights and the batch only; adamw: bitsandbytes' 8-bit states would round
SEQ = 256          # with the seed-0 order, the ranks' first step has 1001 and 1020 label tokens (padding differs)
TWO_RANKS = RunConfig(model="tiny", seq_len=SEQ, micro_batch=2, grad_accum=2, num_gpus=2, lora_dropout=0.0,
                      optim="adamw")
ONE_PROCESS = TWO_RANKS.replace(micro_batch=4, num_gpus=1)


def _rank_label_tokens(cfg: RunConfig, steps: int) -> list[tuple[int, int]]:
    """Label tokens of rank 0's and rank 1's rows, per optimizer step, as the runner draws them."""
    stream = data.batches(data.byte_tokenizer(), data.course_texts(), cfg.seq_len, cfg.micro_batch * 2,
                          cfg.pad_to_seq_len, seed=cfg.seed)
    out = []
    for _ in range(steps):
        cycle = [next(stream) for _ in range(cfg.grad_accum)]
        out.append(tuple(sum(label_tokens({"labels": b["labels"][r * 2:(r + 1) * 2]}) for b in cycle)
                         for r in range(2)))
    return out


def test_two_ranks_give_one_process_weights_even_with_unequal_label_counts(tmp_path):
    """After 2 optimizer steps the LoRA weights match, and so do the first step's (all-reduced) gradients —
    although rank 0 and rank 1 saw different numbers of label tokens: each rank divides by the tokens of ALL
    ranks and multiplies by N against DDP's average, so the mean is the big batch's gradient.

    Tolerance rtol 1e-5, atol 1e-7: the two runs add the same products in a different order (two half-batches
    summed by the all-reduce, then ÷ 2, vs one batch of 4), so float32 rounding differs in the last bits
    (≈ 1e-7 relative); a wrong normalisation (each rank ÷ its own tokens) is off by ≈ 1 %, five orders more."""
    counts = _rank_label_tokens(TWO_RANKS, 2)
    assert counts[0][0] != counts[0][1], counts        # the point of the test: unequal per rank
    two = data_parallel.measure_data_parallel(TWO_RANKS, steps=2, warmup=1, weights="random",
                                              adapters_path=str(tmp_path / "two.pt"))
    one = runner.measure_run(ONE_PROCESS, steps=2, warmup=1, weights="random", adapters_path=str(tmp_path / "one.pt"))
    assert two["status"] == "ok", two["error"]
    assert [r["label_tokens"] for r in two["ranks"]] == [[c[r] for c in counts] for r in range(2)]
    a, b = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert a["lora"].keys() == b["lora"].keys() and len(a["lora"]) == 32      # 4 layers × 4 targets × (A, B)
    for what in ("first_step_grads", "lora"):
        for name in a[what]:
            torch.testing.assert_close(a[what][name], b[what][name], rtol=1e-5, atol=1e-7, msg=f"{what} {name}")
    assert any(g.abs().max() > 0 for g in a["first_step_grads"].values())
    assert two["measured"]["loss"] == pytest.approx(one["measured"]["loss"], rel=1e-4)
    assert all(r["loss"] == two["measured"]["loss"] for r in two["ranks"])     # every rank reports the big batch's


def _json_record(capfd, *argv) -> dict:
    assert cli.main(["run", "--model", "tiny", "--seq-len", "32", "--grad-accum", "2", "--steps", "2",
                     "--lora-dropout", "0", "--optim", "adamw", "--weights", "random", "--json", *argv]) == 0
    said = capfd.readouterr()                           # the file descriptors: what the ranks print is in here too
    lines = said.out.strip().splitlines()
    assert len(lines) == 1, said.out[-2000:]            # stdout is the one record (all ranks inside), nothing else
    assert "Warning" not in said.err, said.err[-2000:]   # e.g. torch's FutureWarning at DDP's old argument name
    return json.loads(lines[0])


def test_the_command_line_prints_one_record_with_every_rank_and_the_big_batch_loss(capfd):
    two = _json_record(capfd, "--num-gpus", "2", "--micro-batch", "2")
    one = _json_record(capfd, "--num-gpus", "1", "--micro-batch", "4")
    assert two["status"] == "ok" and two["schema"] == 3 and "cpu-processes" in two["labels"]
    assert "ranks" not in one and "cpu-processes" not in one["labels"]
    assert [r["rank"] for r in two["ranks"]] == [0, 1]
    for r in two["ranks"]:
        assert r["step_time_s"] > 0 and 0 < r["sync_time_s"] < r["step_time_s"]
        assert r["saved_activation_bytes"] > 0 and r["resident"]["quantized_weights"] > 0
    # every rank holds the whole 4-bit base: the same resident bytes as one process
    assert two["ranks"][1]["resident"]["quantized_weights"] == one["measured"]["resident"]["quantized_weights"]
    summary = two["measured"]["ranks_summary"]
    assert summary["step_time_s"]["min"] <= summary["step_time_s"]["max"] and summary["sync_share"]["max"] < 1
    assert two["measured"]["loss"] == pytest.approx(one["measured"]["loss"], rel=1e-4)
    dp = two["theory"]["data_parallel"]
    assert dp["world_size"] == 2 and dp["allreduce_bytes_per_rank"] == dp["gradient_bytes"]
    assert dp["memory_per_rank"]["peak"] == two["theory"]["peak"]   # a rank = one process with its micro-batch


def _forkservers_and_ranks() -> tuple[list[int], list[int]]:
    """This process's forkservers (which fork CPU ranks and stay, idle, by design) and the rank processes it
    started, alive or zombie (Linux /proc): spawned children (`spawn_main` in the command line) and the children of
    its forkservers; multiprocessing's one resource tracker is neither."""
    me, procs = os.getpid(), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                procs[int(pid)] = (parent, f.read())
        except (OSError, IndexError, ValueError):
            continue
    servers = [pid for pid, (parent, cmd) in procs.items() if parent == me and b"multiprocessing.forkserver" in cmd]
    ranks = [pid for pid, (parent, cmd) in procs.items()
             if (parent == me and b"spawn_main" in cmd) or parent in servers]
    return servers, ranks


def test_a_rank_that_fails_is_a_record_and_leaves_no_process_behind(capfd):
    """Rank 1 raises in its second forward while rank 0 waits in the all-reduce: the parent gets status "error"
    naming rank 1, rank 0 ends (stopped, or failed by gloo's closed connection: never left hanging), and no child
    process is alive afterwards. What the rank printed reached this test's stderr: a forked rank writes where its
    parent writes now, not where the parent wrote when an earlier test of this file started the server."""
    out = data_parallel.measure_data_parallel(TWO_RANKS.replace(seq_len=32), steps=2, warmup=1, weights="random",
                                              _fail_rank=1)
    assert out["status"] == "error" and out["error"].startswith("rank 1 of 2:"), out["error"]
    assert "injected failure" in out["error"]
    assert out["ranks"][1]["status"] == "error"
    assert out["ranks"][0]["status"] in ("stopped", "error")      # killed, or gloo told it its peer was gone
    assert capfd.readouterr().err.count("injecting a failure in the second forward (a test)") == 1
    servers, ranks = _forkservers_and_ranks()
    assert not multiprocessing.active_children() and ranks == []
    if data_parallel.start_method("cpu") == "forkserver":
        assert len(servers) == 1        # the CPU ranks' server, shared by every run this process made, stays
        with open(f"/proc/{servers[0]}/maps") as f:
            assert "libtorch" in f.read()                           # it imported the libraries: ranks need not


def test_cpu_ranks_are_forked_from_a_server_only_on_linux_without_a_gpu(monkeypatch):
    """CPU ranks fork from a server that imported the libraries once (the runs in this file share it); CUDA ranks,
    and CPU ranks where a GPU is visible (importing bitsandbytes starts CUDA, and a process must not fork after
    that) or on macOS and Windows, start as new interpreters."""
    assert data_parallel.start_method("cuda") == "spawn"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert data_parallel.start_method("cpu") == "forkserver"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert data_parallel.start_method("cpu") == "spawn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for platform in ("darwin", "win32"):
        monkeypatch.setattr(sys, "platform", platform)
        assert data_parallel.start_method("cpu") == "spawn"


def test_more_cuda_ranks_than_gpus_are_refused_in_one_line(monkeypatch):
    cuda = {"type": "cuda", "name": "Tesla T4", "capability": [7, 5], "total_memory": 15 * 2 ** 30}
    monkeypatch.setattr(device, "pick_device", lambda d=None: "cuda")
    monkeypatch.setattr(device, "device_summary", lambda d: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"num_gpus=2 needs 2 GPUs and torch sees 1") as e:
        data_parallel.measure_data_parallel(RunConfig(num_gpus=2, precision="fp16"), steps=1, warmup=0)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    data_parallel.check_world(2, "cuda")                 # enough GPUs: no refusal
    monkeypatch.setattr(data_parallel, "usable_cpus", lambda: 8)
    data_parallel.check_world(8, "cpu")                  # a CPU runs N gloo processes instead, one per core


# ---- the parent's side, without spawning: refusals and how results become one record ---------------------------------
CPU = {"type": "cpu", "name": "x86_64"}


def _rank_result(rank, status="ok", labels=("cpu",), error=None, failed_at=None, step=0.5):
    measured = {**runner.empty_measured(), "step_time_s": step, "tokens_per_s": 1000.0, "sync_time_s": 0.01,
                "loss": [6.0], "saved_activation_bytes": 100}
    out = {"resolved": {"precision": "fp32", "device": "cpu"}, "device": CPU, "labels": list(labels),
           "warnings": [], "model_source": "shape-only", "measured": measured, "status": status, "error": error}
    if failed_at is not None:
        out.update(failed_at=failed_at, traceback=f"Traceback of rank {rank}")
    return out


def test_bad_steps_and_profiles_are_refused_before_any_process_starts(monkeypatch):
    started = []
    monkeypatch.setattr("torch.multiprocessing.start_processes", lambda *a, **k: started.append(a))
    with pytest.raises(ValueError, match="steps must be an integer"):
        data_parallel.measure_data_parallel(TWO_RANKS, steps=0)
    monkeypatch.setattr(data_parallel, "usable_cpus", lambda: 2)
    with pytest.raises(ValueError, match="num_gpus=3 on a CPU starts 3 processes"):
        data_parallel.measure_data_parallel(TWO_RANKS.replace(num_gpus=3), steps=2, device="cpu")
    monkeypatch.setattr("labkit.engine.hardware.t4_profile_active", lambda: True)
    with pytest.raises(ValueError, match="T4 profile caps the memory of this process only"):
        data_parallel.measure_data_parallel(TWO_RANKS, steps=2, device="cpu")
    assert started == []


def test_a_rank_killed_before_writing_is_named_and_the_record_has_every_measured_key():
    from torch.multiprocessing import ProcessExitedException
    killed = ProcessExitedException("process 1 terminated with signal SIGKILL", error_index=1, error_pid=42,
                                    exit_code=-9, signal_name="SIGKILL")
    out = data_parallel.combine([None, None], killed, CPU, "fp32")
    assert out["status"] == "error" and out["error"].startswith("rank 1 of 2: the process was killed by SIGKILL")
    assert out["resolved"]["precision"] == "fp32" and "batch_has_padding" in out["measured"]
    assert [r["status"] for r in out["ranks"]] == ["stopped", "error"]
    # its peer lost the connection and wrote that: the killed rank is still the cause
    peer = _rank_result(0, "error", error="RuntimeError: Connection closed by peer", failed_at=100.0)
    out = data_parallel.combine([peer, None], killed, CPU, "fp32")
    assert out["error"].startswith("rank 1 of 2: the process was killed by SIGKILL")


def test_the_first_rank_to_fail_is_the_cause_and_every_ranks_labels_stay():
    oom = _rank_result(1, "oom", labels=("cpu", "simulated-oom"), error="simulated OOM: …", failed_at=10.0)
    peer = _rank_result(0, "error", error="RuntimeError: Connection closed by peer", failed_at=11.0)
    out = data_parallel.combine([peer, oom], None, CPU, "fp32")
    assert out["status"] == "oom" and out["error"] == "rank 1 of 2: simulated OOM: …"
    assert "simulated-oom" in out["labels"] and "cpu-processes" in out["labels"]
    assert out["traceback"] == "Traceback of rank 1"


def test_tokens_per_s_of_the_effective_batch_wait_for_the_slowest_rank():
    out = data_parallel.combine([_rank_result(0, step=0.5), _rank_result(1, step=1.0)], None, CPU, "fp32")
    assert out["status"] == "ok"
    # rank 0: 1000 tokens/s × 0.5 s = 500 tokens; rank 1: 1000 tokens; 1500 tokens in the slowest rank's 1.0 s
    assert out["measured"]["tokens_per_s"] == pytest.approx(1500.0)
    assert out["measured"]["ranks_summary"]["step_time_s"] == {"min": 0.5, "max": 1.0}


SCRIPT = '''
import labkit
from labkit.engine.data_parallel import unguarded_script_line


def main():
    return unguarded_script_line()


print("top", unguarded_script_line())
print("via main", main())
if __name__ == "__main__":
    print("guarded", main())
if "__main__" == __name__:
    print("guarded too", unguarded_script_line())
try:
    if __name__ == "__main__" and len(print.__name__):
        print("guarded in a try", unguarded_script_line())
except OSError:
    pass
exec("print('exec', unguarded_script_line())")
{call}
'''


def test_a_script_that_starts_ranks_at_its_top_level_is_told_to_guard_it_before_anything_spawns(tmp_path):
    """Ranks (spawned, or forked from the server) import the script again; unguarded, each would start ranks of its
    own (two multiprocessing tracebacks and "rank 0 exited with code 1"). Found from the script's source before any
    process starts."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.replace("{call}", "labkit.run(labkit.RunConfig(num_gpus=2, seq_len=32))"))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.stdout.splitlines() == ["top 10", "via main 11", "guarded None", "guarded too None",
                                     "guarded in a try None", "exec None"]
    assert p.returncode == 1 and "if __name__ == \"__main__\":" in p.stderr and "line 22" in p.stderr
    assert "ValueError" in p.stderr and "exited with code" not in p.stderr     # refused before any rank started
