"""Sweeps: run a grid of configs one after another, saving each record the moment it finishes.

The results file is JSON Lines, one record per line, appended and fsync'ed after every run, so a crash, a Colab
disconnect or Ctrl-C loses at most the run in flight. Run the same sweep again and the finished configs are read
back instead of rerun (resume). A line cut short by a kill mid-write is dropped with a warning; any other line that
is not a run record (a stray `123`, a `{"status": "ok"}` pasted in) is skipped with a warning and left in the file,
which a sweep only ever appends to.

One sweep writes a file at a time: `<file>.lock` holds the writer's pid while it runs, and a second sweep on the
same file is refused (SweepFileBusy, naming the pid) instead of appending duplicate records beside it. A lock left by
a process that no longer runs is taken over with a warning. The output path is checked before the first run.

    configs = grid(RunConfig(model="tiny"), {"gradient_checkpointing": [True, False], "micro_batch": [1, 2, 4]})
    records = run_sweep(configs, "runs/sweep.jsonl")       # 2 × 3 = 6 runs
"""
from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import socket
import sys
import time
import warnings

from labkit.config import LabkitWarning, RunConfig, check_configs, check_steps, check_text
from labkit.engine import notices
from labkit.record import RunRecord, build, read_jsonl, write_jsonl

# statuses that count as a finished result on resume; an "error" run is tried again
FINISHED = ("ok", "oom")


def grid(base: RunConfig, axes: dict) -> list[RunConfig]:
    """Every combination of the axis values, applied to `base` (the first axis varies slowest).
    A bad field name or value raises ValueError naming it; duplicate combinations are dropped."""
    fields = set(base.to_dict())
    for name, values in axes.items():
        if name not in fields:
            raise ValueError(f"unknown sweep axis {name!r}; RunConfig fields are {', '.join(sorted(fields))}")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"sweep axis {name!r} needs a list of values, got {values!r}")
        if not list(values):
            raise ValueError(f"sweep axis {name!r} has no values")
        for v in values:   # check each value alone first, so the message names it
            try:
                base.replace(**{name: v})
            except (ValueError, TypeError) as e:
                raise ValueError(f"sweep value {name}={v!r}: {e}") from None
    configs, seen = [], set()
    names = list(axes)
    for combo in itertools.product(*(list(axes[n]) for n in names)):
        changes = dict(zip(names, combo))
        try:
            cfg = base.replace(**changes)
        except (ValueError, TypeError) as e:
            raise ValueError(f"sweep combination {changes}: {e}") from None
        if cfg.key() not in seen:
            seen.add(cfg.key())
            configs.append(cfg)
    return configs


def record_key(record: dict) -> str:
    """What a finished record stands for: its RunConfig key plus the steps and warm-up it ran (records without
    them, from older files, never match, so they are run again rather than replayed for other settings)."""
    try:
        config = RunConfig.from_dict(record["config"]).key()
    except (ValueError, TypeError):   # a config written by another version of the kit: compare as stored
        config = json.dumps(record["config"], sort_keys=True)
    run = record.get("run")
    run = run if isinstance(run, dict) else {}
    return run_key(config, run.get("steps"), run.get("warmup"))


def run_key(config_key: str, steps, warmup) -> str:
    return json.dumps([config_key, steps, warmup])


def load_records(path) -> list[RunRecord]:
    """All records in a sweep file, in the order they were written (a truncated last line is skipped)."""
    return read_jsonl(path)


# ---- the output file: checked before the first run, locked while a sweep writes it -------------------------------
class SweepFileBusy(ValueError):
    """Another sweep is writing this results file (its lock names the pid). A ValueError: the input cannot be used
    as given (the command line answers with one line and exit code 2)."""


def lock_path(out_path) -> str:
    return os.fspath(out_path) + ".lock"


def check_output_path(out_path, what: str = "sweep output") -> None:
    """Refuse, before any run, an output that could not be written: a directory, a file that is not writable, or a
    folder that neither exists nor can be created (the nearest folder that exists must be writable)."""
    check_text(what, os.fspath(out_path))
    path = os.path.abspath(os.fspath(out_path))
    if os.path.isdir(path):
        example = os.path.join(out_path, "sweep.jsonl")
        raise ValueError(f"{what} {out_path} is a folder; give a file name such as {example}")
    if os.path.exists(path):
        if not os.path.isfile(path):               # a named pipe would block the sweep at its first record
            raise ValueError(f"{what} {out_path} is not a regular file (a pipe or a device); give a file name")
        if not os.access(path, os.W_OK):
            raise ValueError(f"{what} {out_path} is not writable")
        return
    folder = os.path.dirname(path)
    existing = folder
    while not os.path.exists(existing):             # the nearest ancestor that exists is where mkdir would start
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{what} {out_path}: {existing} is a file, so the folder {folder} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {out_path}: folder {existing} is not writable")


def plot_formats() -> list[str]:
    """The file types matplotlib can write here (png, pdf, svg, …), read from matplotlib itself."""
    from matplotlib.figure import Figure

    return sorted(Figure().canvas.get_supported_filetypes())


def check_plot_path(plot_path, what: str = "plot") -> None:
    """Refuse, before any run, a chart path matplotlib could not write: a type it does not know (x.txt), no type at
    all (matplotlib would add .png to the name), a folder, or a folder that does not exist or is not writable."""
    check_text(what, os.fspath(plot_path))
    if not os.fspath(plot_path).strip():
        raise ValueError(f"{what} is empty; give a file name such as runs/sweep.png")
    path = os.path.abspath(os.fspath(plot_path))
    if os.path.isdir(path):
        example = os.path.join(plot_path, "sweep.png")
        raise ValueError(f"{what} {plot_path} is a folder; give a file name such as {example}")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"{what} {plot_path} is not a regular file (a pipe or a device); give a file name")
    kind = os.path.splitext(path)[1].lstrip(".").lower()
    formats = plot_formats()
    if kind not in formats:
        said = f"matplotlib cannot write .{kind} files" if kind else "the name has no file type"
        raise ValueError(f"{what} {plot_path}: {said}; end it in .png, .svg or .pdf (any of: {', '.join(formats)})")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ValueError(f"{what} {plot_path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{what} {plot_path} is not writable")


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (signal 0 checks without sending anything)."""
    if os.name == "nt":                # os.kill(pid, 0) is not a probe on Windows: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # it runs, as another user
        return True
    return True


def _read_lock(path: str, patience_s: float = 1.0) -> dict | None:
    """The lock's {"pid", "host", "since"}, or None when it vanished. A lock is written right after it is created;
    one still empty or unreadable after `patience_s` is reported as such ({"unreadable": True})."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except ValueError:
            pass
        if time.monotonic() > deadline:
            return {"unreadable": True}
        time.sleep(0.05)


def _busy_message(out_path, lock: str, holder: dict) -> str:
    if holder.get("unreadable"):
        who = "a lock file that cannot be read"
    else:
        here = holder.get("host") == socket.gethostname()
        who = (f"pid {holder['pid']}" + ("" if here else f" on host {holder.get('host')}")
               + (" (this process)" if here and holder["pid"] == os.getpid() else "")
               + (f", since {holder['since']}" if holder.get("since") else ""))
    return (f"{out_path} is being written by another sweep ({who}); wait for it to finish or write to another "
            f"file. Lock: {lock} (delete it only if no sweep is running)")


@contextlib.contextmanager
def sweep_lock(out_path):
    """Hold `<out_path>.lock` while a sweep writes `out_path`. Created with O_CREAT|O_EXCL, so of two sweeps that
    start together exactly one gets it; it holds {"pid", "host", "since"}. A live holder → SweepFileBusy; a holder
    on this host that no longer runs → its lock is taken over with a warning. Removed on the way out, whatever
    ended the sweep (a finished grid, a failed run, Ctrl-C)."""
    lock = lock_path(out_path)
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            if holder is None:
                continue                                 # released between our two looks: try again
            if holder.get("unreadable") or holder.get("host") != socket.gethostname() or _pid_alive(holder["pid"]):
                raise SweepFileBusy(_busy_message(out_path, lock, holder)) from None
            warnings.warn(f"{lock}: taking over the lock of pid {holder['pid']}, which no longer runs "
                          "(a sweep that was killed)", LabkitWarning, stacklevel=4)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            continue                                     # race the O_EXCL create again; a live winner refuses us
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(mine)
        break
    try:
        yield lock
    finally:
        try:                                             # remove it only while it is still ours
            with open(lock, encoding="utf-8") as f:
                ours = f.read() == mine
            if ours:
                os.unlink(lock)
        except FileNotFoundError:
            pass


def _failed_record(cfg: RunConfig, error: Exception) -> RunRecord:
    """A runner that raised still leaves a line, so the sweep file shows every config that was tried."""
    return build(config=cfg.to_dict(), status="error", error=f"{type(error).__name__}: {error}")


def run_sweep(configs, out_path, steps: int = 3, warmup: int = 1, resume: bool = True, progress: bool = True,
              runner=None) -> list[dict]:
    """Run `configs` one after another with `runner(config, steps=, warmup=)` (default labkit.experiment.run),
    appending each record to `out_path` as it finishes. With resume, configs that already have an "ok" or "oom"
    line are read back, not rerun. Returns one record per config, in the order of `configs`.

    Before the first run: `out_path` must be writable (ValueError if not), and no other sweep may be writing it
    (SweepFileBusy, a ValueError, naming the other sweep's pid)."""
    configs = check_configs(configs)
    check_steps(steps, warmup)                       # before the file is touched: no error record for a typo
    check_output_path(out_path)
    if runner is None:
        from labkit.experiment import run as runner
    parent = os.path.dirname(os.fspath(out_path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with sweep_lock(out_path):
        return _run_locked(configs, out_path, steps, warmup, resume, progress, runner)


def _finished_runs(out_path, resume: bool) -> dict:
    """run_key → the last finished record for it in `out_path` (empty without resume). Lines that are not records
    are skipped with a warning by read_jsonl and stay in the file; a partial last line is cut so the next append
    starts on a line of its own."""
    if not os.path.exists(out_path):
        return {}
    records = read_jsonl(out_path, repair=True)
    done = {}
    for rec in records if resume else ():       # later lines win
        if rec.get("status") in FINISHED:
            done[record_key(rec)] = rec
    return done


def _run_locked(configs, out_path, steps, warmup, resume, progress, runner) -> list[dict]:
    done = _finished_runs(out_path, resume)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        from labkit.report.text import sweep_labels
        labels = sweep_labels([{"config": c.to_dict()} for c in configs])
        bar = tqdm(total=len(configs), desc="sweep", unit="run", file=sys.stderr)

    resumed = sum(run_key(cfg.key(), steps, warmup) in done for cfg in configs)
    if progress and resumed:          # a rerun is not new measurements: say so before the bar shows them done
        notices.say(f"resumed: {resumed} of {len(configs)} runs already measured in {out_path} are read back, not "
                    "rerun (resume=False, or --no-resume, measures them again)")
    records = []
    try:
        for i, cfg in enumerate(configs):
            key = run_key(cfg.key(), steps, warmup)
            if bar:
                bar.set_postfix_str(labels[i] + (" (saved)" if key in done else ""))
            if key in done:
                records.append(done[key])
            else:
                try:
                    record = runner(cfg, steps=steps, warmup=warmup)
                except Exception as e:  # noqa: BLE001 — one broken config must not end the sweep
                    warnings.warn(f"run {i + 1}/{len(configs)} failed: {type(e).__name__}: {e}", LabkitWarning,
                                  stacklevel=3)
                    record = _failed_record(cfg, e)
                record["run"] = {**(record.get("run") or {}), "steps": steps, "warmup": warmup}
                write_jsonl(out_path, record)
                done[key] = record
                records.append(record)
            if bar:
                bar.update(1)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(records)} of {len(configs)} runs are saved in {out_path}; "
              "run the same sweep again to resume", file=sys.stderr)
        raise
    finally:
        if bar:
            bar.close()
    return records
