"""Sweeps: run a grid of configs one after another, saving each record the moment it finishes.

The results file is JSON Lines, one record per line, appended and fsync'ed after every run, so a crash, a Colab
disconnect or Ctrl-C loses at most the run in flight. Run the same sweep again and the finished configs are read
back instead of rerun (resume). A line cut short by a kill mid-write is dropped with a warning.

    configs = grid(RunConfig(model="tiny"), {"gradient_checkpointing": [True, False], "micro_batch": [1, 2, 4]})
    records = run_sweep(configs, "runs/sweep.jsonl")       # 2 × 3 = 6 runs
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import warnings

from labkit.config import RunConfig
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
    run = record.get("run") or {}
    return run_key(config, run.get("steps"), run.get("warmup"))


def run_key(config_key: str, steps, warmup) -> str:
    return json.dumps([config_key, steps, warmup])


def load_records(path) -> list[RunRecord]:
    """All records in a sweep file, in the order they were written (a truncated last line is skipped)."""
    return read_jsonl(path)


def _failed_record(cfg: RunConfig, error: Exception) -> RunRecord:
    """A runner that raised still leaves a line, so the sweep file shows every config that was tried."""
    return build(config=cfg.to_dict(), status="error", error=f"{type(error).__name__}: {error}")


def run_sweep(configs, out_path, steps: int = 3, warmup: int = 1, resume: bool = True, progress: bool = True,
              runner=None) -> list[dict]:
    """Run `configs` one after another with `runner(config, steps=, warmup=)` (default labkit.experiment.run),
    appending each record to `out_path` as it finishes. With resume, configs that already have an "ok" or "oom"
    line are read back, not rerun. Returns one record per config, in the order of `configs`."""
    configs = list(configs)
    if runner is None:
        from labkit.experiment import run as runner
    parent = os.path.dirname(os.fspath(out_path))
    if parent:
        os.makedirs(parent, exist_ok=True)

    done = {}
    if resume and os.path.exists(out_path):
        for rec in read_jsonl(out_path, repair=True):   # later lines win
            if rec.get("status") in FINISHED:
                done[record_key(rec)] = rec
    elif os.path.exists(out_path):
        read_jsonl(out_path, repair=True)                # still cut a partial line before appending after it

    bar = None
    if progress:
        from tqdm.auto import tqdm
        from labkit.report.text import sweep_labels
        labels = sweep_labels([{"config": c.to_dict()} for c in configs])
        bar = tqdm(total=len(configs), desc="sweep", unit="run", file=sys.stderr)

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
                    warnings.warn(f"run {i + 1}/{len(configs)} failed: {type(e).__name__}: {e}", stacklevel=2)
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
