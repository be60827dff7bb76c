"""Reference sets: records measured on some other machine (labkit/reference/<name>.jsonl) — listing and loading
them labelled with their provenance, and matching the lab's settings to a recorded run (or saying which runs the
set has instead).

    reference_sets()                    → ['cpu-tiny', 'h100-t4-profile-llama-3.2-1b-2026-11-22']
    load_reference("cpu-tiny")          → records labelled "reference", each with its "provenance"
    [r for r in pool if matches(r, cfg)]
"""
from __future__ import annotations

import copy
import json
from importlib import resources

from labkit.config import RunConfig, resolve_precision
from labkit.record import RunRecord, as_record, typed
from labkit.report.text import resolved_precision

# the settings a reference record must share with the controls to be replayed for them (GPUs are arithmetic only)
MATCHED_FIELDS = ("gradient_checkpointing", "precision", "micro_batch", "grad_accum", "seq_len", "lora_r")
FIELD_NAMES = {"gradient_checkpointing": "checkpointing", "precision": "precision", "micro_batch": "micro-batch",
               "grad_accum": "accumulation", "num_gpus": "GPUs", "seq_len": "seq", "lora_r": "r"}


# ---- provenance ------------------------------------------------------------------------------------------------------
def provenance(record) -> str:
    """'reference · measured on Tesla T4, 2025-03-01' for a replayed record; '' otherwise. A run in T4 profile (a
    bigger GPU capped at a T4's memory) says so: 'measured on NVIDIA H100 80GB HBM3 (T4 profile), 2026-11-22'."""
    record = typed(record)
    if "reference" not in record.labels:
        return ""
    dev = record.device or {}
    name = dev.get("name") or "an unknown device"
    where = f"CPU ({name})" if dev.get("type") == "cpu" else name
    if "t4-profile" in record.labels:
        where += " (T4 profile)"
    date = (record.time or "")[:10] or "unknown date"
    return f"reference · measured on {where}, {date}"


def as_reference(record, source: str | None = None) -> RunRecord:
    """A copy of `record` labelled as a reference (replayed, not run here), with its provenance (and the set it came
    from) beside its parts."""
    rec = copy.deepcopy(typed(record))
    if "reference" not in rec.labels:
        rec.labels = rec.labels + ["reference"]
    rec.extra["provenance"] = provenance(rec)
    if source:
        rec.extra["reference_set"] = source
    return rec


# ---- the recorded sets -----------------------------------------------------------------------------------------------
def _reference_dir():
    return resources.files("labkit").joinpath("reference")


def reference_sets() -> list[str]:
    """Names of the recorded reference sets (labkit/reference/<name>.jsonl), sorted."""
    folder = _reference_dir()
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError, OSError):
        return []
    return sorted(e.name[:-len(".jsonl")] for e in entries if e.name.endswith(".jsonl"))


def load_reference(name: str) -> list[RunRecord]:
    """The records of one reference set, each labelled "reference" with its provenance. ValueError if unknown."""
    names = reference_sets()
    if name not in names:
        raise ValueError(f"unknown reference set {name!r}; recorded sets: {', '.join(names) or 'none'}")
    text = _reference_dir().joinpath(f"{name}.jsonl").read_text(encoding="utf-8")
    return [as_reference(as_record(json.loads(line)), name) for line in text.splitlines() if line.strip()]


# ---- matching the lab's settings to a recorded run -------------------------------------------------------------------
def _precision_matches(record, precision: str) -> bool:
    """Was the record run with this precision? The same request matches (the record says what it resolved to:
    "auto" under a T4 profile is fp16 even on an H100); another request is resolved on the record's device."""
    record = typed(record)
    if record.config.get("precision") == precision:
        return True
    dev = record.device or {}
    cap = tuple(dev["capability"]) if dev.get("capability") else None
    try:
        wanted = resolve_precision(precision, dev.get("type") or "cpu", cap)
    except ValueError:
        return False
    return resolved_precision(record) == wanted


def field_matches(record, field: str, value) -> bool:
    """Does the record have this value for one controlled setting?"""
    if field == "precision":
        return _precision_matches(record, value)
    return typed(record).config.get(field) == value


def matches(record, cfg: RunConfig) -> bool:
    """Does a (reference) record have the lab's controlled settings? The model may differ: a GPU reference of the
    real model answers 'what would this config do there'. "auto" precision is resolved on the record's device."""
    return all(field_matches(record, field, getattr(cfg, field)) for field in MATCHED_FIELDS)


def recorded_values(pool: list, field: str) -> list:
    """The values one setting takes across a reference set, sorted."""
    return sorted({typed(r).config.get(field) for r in pool}, key=lambda v: (v is None, v))


def recorded_precisions(pool: list) -> list[tuple[str, str]]:
    """The precision dropdown of a reference set: [(label, requested value)], "auto" labelled with what it became."""
    options = []
    for r in pool:
        asked, got = typed(r).config.get("precision"), resolved_precision(r)
        option = (f"{asked} ({got})" if asked == "auto" and got else str(asked), asked)
        if option not in options:
            options.append(option)
    return options


def closest_record(pool: list, wanted: dict):
    """The record sharing the most of the `wanted` settings ({field: value}); the earliest among equals."""
    return max(pool, key=lambda r: sum(field_matches(r, f, v) for f, v in wanted.items()))


# ---- saying what a set has -------------------------------------------------------------------------------------------
def settings_text(values: dict) -> str:
    """'checkpointing off, precision auto, micro-batch 2, ...' for {field: value}."""
    def shown(field, value):
        return ("on" if value else "off") if field == "gradient_checkpointing" else value
    return ", ".join(f"{FIELD_NAMES.get(f, f)} {shown(f, v)}" for f, v in values.items())


def _recorded_text(pool) -> str:
    """'checkpointing on/off, precision fp16, micro-batch 1/2/4, …': what a set recorded, setting by setting."""
    def values(field):
        return [str(v) for v in recorded_values(pool, field)]
    prec = sorted({str(resolved_precision(r)) for r in pool})
    return ("checkpointing " + "/".join("on" if v == "True" else "off" for v in values("gradient_checkpointing"))
            + f", precision {'/'.join(prec)}, micro-batch {'/'.join(values('micro_batch'))}, "
            f"accumulation {'/'.join(values('grad_accum'))}, seq {'/'.join(values('seq_len'))}, "
            f"r {'/'.join(values('lora_r'))}")


def missing_combination_text(name: str, pool: list, cfg: RunConfig) -> str:
    """What to tell a learner whose settings no record of the set has: what it recorded, and the runs one setting
    away from theirs."""
    wanted = {f: getattr(cfg, f) for f in MATCHED_FIELDS}
    text = (f"no run in reference set '{name}' has these settings ({settings_text(wanted)}); it recorded "
            + _recorded_text(pool))
    nearest = []
    for r in pool:
        differing = [f for f, v in wanted.items() if not field_matches(r, f, v)]
        if len(differing) == 1:
            f = differing[0]
            value = resolved_precision(r) if f == "precision" else typed(r).config.get(f)
            nearest.append(settings_text({f: value}))
    if nearest:
        text += "; one setting away it has: " + ", ".join(dict.fromkeys(nearest))
    return text
