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


# ---- lines that are not records: skipped with a warning, left in the file ------------------------------------------
def test_resume_skips_lines_that_are_not_records_and_keeps_them(tmp_path):
    out = tmp_path / "s.jsonl"
    configs = grid(BASE, {"micro_batch": [1, 2]})
    calls = []
    run_sweep(configs[:1], out, steps=1, warmup=0, progress=False, runner=fake_runner(calls))
    finished = out.read_text()
    stray = ['123', '{"status": "ok"}', '', '{"config": {"model": "ti', '[1, 2]', '{"config": {}, "measured": 5}']
    out.write_text("\n".join(stray) + "\n" + finished)                # a record after six lines of debris
    before = out.read_bytes()
    with pytest.warns(UserWarning) as caught:
        records = run_sweep(configs, out, steps=1, warmup=0, progress=False, runner=fake_runner(calls))
    said = " | ".join(str(w.message) for w in caught)
    for n in (1, 2, 4, 5, 6):                                         # the blank line 3 is not worth a word
        assert f"line {n}" in said
    assert "line 3" not in said
    assert calls == [c.key() for c in configs]                        # mb 1 replayed from line 7, mb 2 run
    assert [r["config"]["micro_batch"] for r in records] == [1, 2]
    after = out.read_bytes()
    assert after.startswith(before)                                   # nothing rewritten, nothing dropped
    assert len(after.splitlines()) == len(before.splitlines()) + 1    # one record appended
    with pytest.warns(UserWarning):
        assert [r["config"]["micro_batch"] for r in load_records(out)] == [1, 2]


def test_a_record_with_an_odd_run_field_is_not_replayed(tmp_path):
    out = tmp_path / "s.jsonl"
    cfg = BASE.replace(micro_batch=1)
    out.write_text(json.dumps({"config": cfg.to_dict(), "status": "ok", "run": 5}) + "\n")
    calls = []
    run_sweep([cfg], out, steps=1, warmup=0, progress=False, runner=fake_runner(calls))
    assert calls == [cfg.key()]                       # "run": 5 says nothing about the steps: run it again


# ---- one writer at a time ---------------------------------------------------------------------------------------
HOLD_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from labkit.config import RunConfig
    from labkit.sweeps import run_sweep
    out, go = sys.argv[1], sys.argv[2]

    def runner(cfg, steps, warmup):
        while not os.path.exists(go):             # hold the lock until the parent says go
            time.sleep(0.02)
        return {"config": cfg.to_dict(), "status": "ok"}

    run_sweep([RunConfig(model="tiny", seq_len=64, precision="fp32")], out, steps=1, warmup=0, progress=False,
              runner=runner)
""")


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_a_second_sweep_on_the_same_file_is_refused(tmp_path, capsys):
    from labkit import cli
    from labkit.sweeps import SweepFileBusy, lock_path
    out, go = tmp_path / "s.jsonl", tmp_path / "go"
    lock = lock_path(out)
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(out), str(go)], env=_env())
    try:
        deadline = time.monotonic() + 60
        while not (os.path.exists(lock) and os.path.getsize(lock) > 0):   # created, then written: wait for both
            assert proc.poll() is None, "the first sweep ended before it took the lock"
            assert time.monotonic() < deadline, "no lock within 60 s"
            time.sleep(0.02)
        holder = json.loads(open(lock).read())
        assert holder["pid"] == proc.pid

        calls = []
        with pytest.raises(SweepFileBusy, match=f"pid {proc.pid}") as refused:
            run_sweep(grid(BASE, {"micro_batch": [1, 2]}), out, progress=False, runner=fake_runner(calls))
        assert isinstance(refused.value, ValueError) and lock in str(refused.value)
        assert calls == [] and not out.exists()                       # nothing ran, nothing was written

        assert cli.main(["sweep", "--out", str(out), "--micro-batch", "1,2", "--seq-len", "64"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("labkit: error: ") and err.count("\n") == 1
        assert f"pid {proc.pid}" in err and lock in err
        assert os.path.exists(lock) and json.loads(open(lock).read())["pid"] == proc.pid   # theirs, untouched

        go.touch()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not os.path.exists(lock)                                   # released by its owner
    assert len(load_records(out)) == 1


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    import socket
    from labkit.sweeps import lock_path
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)                                       # a process that has ended (and been reaped)
    out = tmp_path / "s.jsonl"
    with open(lock_path(out), "w") as f:
        json.dump({"pid": dead_pid, "host": socket.gethostname(), "since": "earlier"}, f)
    calls = []
    with pytest.warns(UserWarning, match=f"pid {dead_pid}, which no longer runs"):
        run_sweep([BASE], out, progress=False, runner=fake_runner(calls))
    assert len(calls) == 1 and len(load_records(out)) == 1
    assert not os.path.exists(lock_path(out))


def test_a_lock_from_another_machine_is_not_taken_over(tmp_path):
    from labkit.sweeps import SweepFileBusy, lock_path
    out = tmp_path / "s.jsonl"
    with open(lock_path(out), "w") as f:
        json.dump({"pid": 1, "host": "some-other-host", "since": "earlier"}, f)
    with pytest.raises(SweepFileBusy, match="pid 1 on host some-other-host"):
        run_sweep([BASE], out, progress=False, runner=fake_runner([]))
    assert os.path.exists(lock_path(out))                             # whose it is cannot be told from here


def test_the_lock_is_released_after_failed_runs_and_ctrl_c(tmp_path):
    from labkit.sweeps import lock_path
    out = tmp_path / "s.jsonl"

    def broken(cfg, steps, warmup):
        raise RuntimeError("driver hiccup")
    with pytest.warns(UserWarning, match="driver hiccup"):
        run_sweep([BASE], out, progress=False, runner=broken)
    assert not os.path.exists(lock_path(out))

    def interrupted(cfg, steps, warmup):
        assert os.path.exists(lock_path(out))                         # held while the run is in flight
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_sweep([BASE.replace(micro_batch=1)], out, progress=False, runner=interrupted)
    assert not os.path.exists(lock_path(out))


# ---- paths checked before the first run ------------------------------------------------------------------------
def _no_runs(cfg, steps, warmup, **kw):
    raise AssertionError("a run started although the output path was bad")


def test_bad_output_paths_are_refused_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        run_sweep([BASE], tmp_path, progress=False, runner=_no_runs)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run_sweep([BASE], a_file / "runs" / "s.jsonl", progress=False, runner=_no_runs)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_refused_before_any_run(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="not writable"):
        run_sweep([BASE], locked / "new" / "s.jsonl", progress=False, runner=_no_runs)


@pytest.mark.parametrize("plot, words", [
    ("chart.txt", "matplotlib cannot write .txt files"),
    ("chart", "no file type"),
    ("missing/chart.png", "does not exist"),
    (".", "is a folder"),
])
def test_cli_checks_the_plot_before_any_run(plot, words, tmp_path, monkeypatch, capsys):
    import labkit.experiment
    from labkit import cli
    monkeypatch.setattr(labkit.experiment, "run", _no_runs)
    out = tmp_path / "runs" / "s.jsonl"
    assert cli.main(["sweep", "--out", str(out), "--plot", str(tmp_path / plot), "--micro-batch", "1,2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit: error: --plot ") and words in err and err.count("\n") == 1
    assert not out.exists() and not out.parent.exists()               # nothing ran, nothing was made


def test_cli_refuses_a_folder_as_out(tmp_path, monkeypatch, capsys):
    import labkit.experiment
    from labkit import cli
    monkeypatch.setattr(labkit.experiment, "run", _no_runs)
    assert cli.main(["sweep", "--out", str(tmp_path), "--micro-batch", "1,2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labkit: error: --out ") and "is a folder" in err


def test_every_plot_format_matplotlib_lists_is_accepted(tmp_path):
    from labkit.sweeps import check_plot_path, plot_formats
    assert {"png", "svg", "pdf"} <= set(plot_formats())
    for kind in ("png", "PNG", "svg", "pdf"):
        check_plot_path(tmp_path / f"chart.{kind}")
