"""Sweeps: the grid, append-as-you-go, resume, a truncated last line, and a real SIGKILL mid-sweep."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from labkit.config import RunConfig
from labkit.sweeps import grid, load_records, record_key, run_key, run_sweep

BASE = RunConfig(model="tiny", seq_len=64, precision="fp32")


def fake_runner(calls):
    def run(cfg, steps, warmup):
        calls.append(cfg.key())
        return {"config": cfg.to_dict(), "status": "ok", "labels": ["fake"], "measured": {"step_time_s": 0.1},
                "theory": {}, "steps": steps, "warmup": warmup}
    return run


def test_grid_product_and_errors():
    configs = grid(BASE, {"gradient_checkpointing": [True, False], "micro_batch": [1, 2, 4]})
    assert len(configs) == 6
    assert [(c.gradient_checkpointing, c.micro_batch) for c in configs[:3]] == [(True, 1), (True, 2), (True, 4)]
    assert len(grid(BASE, {"micro_batch": [2, 2, 1]})) == 2        # duplicates dropped
    with pytest.raises(ValueError, match="micro_batch=0"):
        grid(BASE, {"micro_batch": [1, 0]})
    with pytest.raises(ValueError, match="precision='fp64'"):
        grid(BASE, {"precision": ["fp32", "fp64"]})
    with pytest.raises(ValueError, match="unknown sweep axis 'batch_size'"):
        grid(BASE, {"batch_size": [1]})
    with pytest.raises(ValueError, match="no values"):
        grid(BASE, {"micro_batch": []})


def test_append_and_resume(tmp_path):
    out = tmp_path / "runs" / "s.jsonl"
    configs = grid(BASE, {"micro_batch": [1, 2, 3]})
    calls = []
    records = run_sweep(configs[:2], out, steps=1, warmup=0, progress=False, runner=fake_runner(calls))
    assert len(calls) == 2 and len(records) == 2
    assert [record_key(r) for r in load_records(out)] == [run_key(c.key(), 1, 0) for c in configs[:2]]
    assert records[0]["steps"] == 1 and records[0]["warmup"] == 0

    # resume: only the new config runs; all three come back in order
    records = run_sweep(configs, out, steps=1, warmup=0, progress=False, runner=fake_runner(calls))
    assert calls == [c.key() for c in configs]
    assert [r["config"]["micro_batch"] for r in records] == [1, 2, 3]
    assert len(load_records(out)) == 3

    # no resume: everything runs again, appended (nothing is overwritten)
    run_sweep(configs[:1], out, steps=1, warmup=0, resume=False, progress=False, runner=fake_runner(calls))
    assert len(calls) == 4 and len(load_records(out)) == 4


def test_error_lines_rerun_but_oom_does_not(tmp_path):
    out = tmp_path / "s.jsonl"
    configs = grid(BASE, {"micro_batch": [1, 2]})

    def flaky(cfg, steps, warmup):
        if cfg.micro_batch == 1:
            return {"config": cfg.to_dict(), "status": "oom"}
        raise RuntimeError("driver hiccup")
    with pytest.warns(UserWarning, match="driver hiccup"):
        records = run_sweep(configs, out, progress=False, runner=flaky)
    assert [r["status"] for r in records] == ["oom", "error"]
    calls = []
    records = run_sweep(configs, out, progress=False, runner=fake_runner(calls))
    assert calls == [configs[1].key()]                    # the OOM is a result; the error is tried again
    assert [r["status"] for r in records] == ["oom", "ok"]


def test_truncated_last_line(tmp_path):
    out = tmp_path / "s.jsonl"
    configs = grid(BASE, {"micro_batch": [1, 2]})
    calls = []
    run_sweep(configs[:1], out, progress=False, runner=fake_runner(calls))
    with open(out, "a") as f:
        f.write('{"config": {"model": "tiny", "micro_b')      # killed mid-write
    with pytest.warns(UserWarning, match="truncated last line"):
        assert len(load_records(out)) == 1
    with pytest.warns(UserWarning, match="truncated last line"):
        records = run_sweep(configs, out, progress=False, runner=fake_runner(calls))
    assert len(calls) == 2 and len(records) == 2
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)   # the partial line was cut, not glued to


def test_progress_bar_shows_config(tmp_path, capsys):
    run_sweep(grid(BASE, {"gradient_checkpointing": [True, False]}), tmp_path / "s.jsonl", runner=fake_runner([]))
    err = capsys.readouterr().err
    assert "gc off · mb 2 · fp32" in err and "2/2" in err


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from labkit.config import RunConfig
    from labkit.sweeps import grid, run_sweep
    out, log, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])

    def runner(cfg, steps, warmup):
        if cfg.micro_batch > 1:
            time.sleep(slow)                      # the parent kills us in here
        with open(log, "a") as f:                 # a run counts once it has finished
            f.write(cfg.key() + "\\n")
        return {"config": cfg.to_dict(), "status": "ok"}

    configs = grid(RunConfig(model="tiny", seq_len=64, precision="fp32"), {"micro_batch": [1, 2, 3]})
    run_sweep(configs, out, progress=False, runner=runner)
""")


def test_sigkill_mid_sweep_then_resume(tmp_path):
    out, log = tmp_path / "s.jsonl", tmp_path / "finished.log"
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(out), str(log), "30"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text().count("\n") >= 1):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no record landed within 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert len(load_records(out)) == 1                     # the first run survived the kill

    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), str(log), "0"], env=env, check=True, timeout=120)
    finished = log.read_text().splitlines()
    configs = grid(BASE, {"micro_batch": [1, 2, 3]})
    assert sorted(finished) == sorted(c.key() for c in configs)   # each config ran to the end exactly once
    assert [r["config"]["micro_batch"] for r in load_records(out)] == [1, 2, 3]


def test_real_tiny_sweep(tmp_path):
    """Two real CPU runs through labkit.experiment.run: records land in the file, and a rerun reads them back."""
    configs = grid(RunConfig(model="tiny", seq_len=64, micro_batch=1, grad_accum=1, precision="fp32"),
                   {"gradient_checkpointing": [True, False]})
    out = tmp_path / "real.jsonl"
    records = run_sweep(configs, out, steps=1, warmup=0, progress=False)
    assert [r["status"] for r in records] == ["ok", "ok"]
    on, off = (r["measured"]["saved_activation_bytes"] for r in records)
    assert 0 < on < off                                            # checkpointing keeps less
    calls = []
    again = run_sweep(configs, out, steps=1, warmup=0, progress=False, runner=fake_runner(calls))
    assert calls == [] and again == load_records(out)


def test_resume_does_not_replay_runs_made_with_other_settings(tmp_path):
    out = tmp_path / "s.jsonl"
    configs = grid(BASE, {"micro_batch": [1, 2]})
    calls = []
    run_sweep(configs, out, steps=1, warmup=0, progress=False, runner=fake_runner(calls))
    run_sweep(configs, out, steps=1, warmup=0, progress=False, runner=fake_runner(calls))
    assert len(calls) == 2                                   # same settings: replayed from the file
    run_sweep(configs, out, steps=3, warmup=1, progress=False, runner=fake_runner(calls))
    assert len(calls) == 4                                   # more steps: run again, not replayed
