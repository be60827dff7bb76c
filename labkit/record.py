"""The run record: one experiment's config, what was measured and what the theory predicted — as a type.

    rec = labkit.run(RunConfig())
    rec.measured.peak_allocated_bytes            # attributes, for new code
    rec.theory.peak
    rec["measured"]["peak_allocated_bytes"]      # the JSON keys still read the same (scripts written before the type)
    rec.to_dict()                                # the JSON form; write_jsonl / read_jsonl for files

Built in one place (`build`), serialised in one place (`RunRecord.to_dict`, `write_jsonl`), read in one place
(`RunRecord.from_dict`, `read_jsonl`). Reading is forgiving on purpose: every record the kit ever wrote loads.
A field a record lacks reads None; a key this version does not know is kept in `extra` and written back unchanged.

Schema versions (the `schema` key; a record without it is version 1):
    1  records up to 2026-11-29 (the shared GPU records of 2026-11-22, the reference sets)
    2  adds measured.allocated_before_bytes/_source, per-step CUDA memory (peak_reserved_per_step,
       allocated_after_step, reserved_after_step) and the `schema` key itself
    3  adds `ranks`: each rank's measured dict for a data-parallel run (num_gpus > 1; None for one process), with
       measured.ranks_summary (min/max across ranks) and theory.data_parallel
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from labkit.config import LabkitWarning

SCHEMA = 3
# The phases of a step in which ops are counted and timed, measured (engine.op_count) and predicted (theory)
PHASES = ("forward", "recompute", "backward")


class _Part(MutableMapping):
    """Mapping access over a dataclass, for scripts written when records were dicts: `part["name"]` is `part.name`
    (set and update too: a part set from its JSON form is typed as it is set); unknown keys live in `part.extra`."""

    extra: dict

    def _names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.name != "extra"]

    def __getitem__(self, key):
        if key in self._names():
            return getattr(self, key)
        return self.extra[key]

    def __setitem__(self, key, value):
        if key in self._names():
            parse = self._nested().get(key)          # a part set from its JSON form is typed as it is set
            if parse is not None and isinstance(value, Mapping) and not isinstance(value, _Part):
                value = parse(value)
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key):
        if key in self._names():
            setattr(self, key, None)
        else:
            del self.extra[key]

    def _left_out(self, name: str, value) -> bool:
        """Whether a field stays out of the JSON form (and so out of the mapping view): a field its JSON form did not
        have and that is still None (an older record gains no nulls by being read and written), or a part's own
        rule."""
        return value is None and name in getattr(self, "_absent", ())

    def __iter__(self):
        yield from (n for n in self._names() if not self._left_out(n, getattr(self, n)))
        yield from self.extra

    def __len__(self):
        return sum(1 for _ in self)

    def __contains__(self, key):
        return key in self.extra or (key in self._names() and not self._left_out(key, getattr(self, key)))

    def to_dict(self) -> dict:
        out = {}
        for name in self:
            value = self[name]
            out[name] = value.to_dict() if isinstance(value, _Part) else value
        return out

    @classmethod
    def from_dict(cls, d: Mapping | None):
        d = dict(d or {})
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        for name, parse in cls._nested().items():
            if kwargs.get(name) is not None:
                kwargs[name] = parse(kwargs[name])
        part = cls(**kwargs, extra=d)
        part._absent = frozenset(known) - set(kwargs)    # not a field: what the JSON form lacked
        return part

    @classmethod
    def _nested(cls) -> dict:
        return {}

    # equality is Mapping's: by value, like the dicts records used to be (a record equals its own JSON form)
    __hash__ = None


@dataclass(eq=False)
class Resident(_Part):
    """Bytes that stay in memory through a step, read from the live tensors after the first optimizer step."""
    quantized_weights: int | None = None       # 4-bit data + quantisation constants
    unquantized_weights: int | None = None     # embeddings, norms, lm_head: whatever stayed 16/32-bit
    lora: int | None = None                    # trainable adapter weights (fp32)
    gradients: int | None = None               # their .grad
    optimizer: int | None = None               # every tensor in optimizer.state
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Measured(_Part):
    """What a run measured. None = not measured here (e.g. CUDA peaks on a CPU), never a made-up figure."""
    saved_activation_bytes: int | None = None   # autograd's saved tensors of the first micro-batch's forward
    peak_allocated_bytes: int | None = None     # CUDA: max over steps of torch.cuda.max_memory_allocated
    peak_reserved_bytes: int | None = None      # CUDA: the same for memory the caching allocator reserved
    peak_allocated_per_step: list | None = None
    peak_reserved_per_step: list | None = None
    allocated_after_step: list | None = None    # CUDA: allocated right after each optimizer step
    reserved_after_step: list | None = None     # … and reserved; the gap is the allocator's free blocks
    cuda_context_bytes: int | None = None
    step_time_s: float | None = None            # median over the steps after the warm-up
    step_times_s: list | None = None
    tokens_per_s: float | None = None           # padding included
    loss: list | None = None                    # one value per optimizer step
    resident: Resident | None = None
    batch_has_padding: bool | None = None
    allocated_before_bytes: int | None = None   # already in memory when the run started
    allocated_before_source: str | None = None  # "cuda-allocator" or "live-tensors"
    aten_ops: dict | None = None                # ops the first micro-batch dispatched: forward, recompute, backward
    extra: dict = field(default_factory=dict)

    @classmethod
    def _nested(cls):
        return {"resident": Resident.from_dict}


@dataclass(eq=False)
class TimeTheory(_Part):
    """theory.time (labkit.theory.time.predict_time): one micro-step's predicted seconds in three parts and the
    regime that binds, then the whole optimizer step. Every figure None, with `note` saying why, where the device has
    no constants (a CPU never calibrated)."""
    compute_s: float | None = None
    memory_s: float | None = None
    overhead_s: float | None = None
    total_s: float | None = None                # one micro-step: the sum (CPU) or max(work, overhead) (GPU)
    regime: str | None = None                   # "compute", "memory" or "overhead"
    phases: dict | None = None                  # forward, recompute, backward: each with its three parts and ops
    optimizer_s: float | None = None
    optimizer: dict | None = None               # the optimizer step's three parts and ops
    step_s: float | None = None                 # the whole optimizer step: every micro-step + the optimizer
    optimizer_share: float | None = None
    combine: str | None = None                  # how the three parts combine on this device, in words
    constants: dict | None = None               # the device constants used, and their source
    note: str | None = None                     # why there are no figures
    extra: dict = field(default_factory=dict)


@dataclass(eq=False)
class Theory(_Part):
    """What the theory predicts for the same config (labkit.theory.predict): the headline terms, then the
    breakdowns; a term this version does not know (from a later kit) arrives in `extra` and reads the same way."""
    weights: int | None = None
    quantized_weights: int | None = None
    unquantized_weights: int | None = None
    lora: int | None = None
    trainable_params: int | None = None
    gradients: int | None = None
    optimizer: int | None = None
    activations: int | None = None              # saved by the decoder layers (+ final norm)
    logits: int | None = None                   # saved by the loss: fp32 log-softmax + targets
    logits_transient: int | None = None
    recompute: int | None = None
    peak: int | None = None
    simple_rule_activations: int | None = None  # the source lesson's b·s·h·L·2
    step_flops: float | None = None
    step_time_at_peak_s: float | None = None
    time: TimeTheory | None = None              # seconds: one micro-step in three parts, and the optimizer step
    # the breakdowns (records from before a term was added lack it: left out of the JSON form when None)
    activations_breakdown: dict | None = None   # saved bytes by part of a layer: norms, attention, rope, mlp, lora, …
    peak_phase: str | None = None               # where in the step the peak falls
    peak_breakdown: dict | None = None          # what is live at the peak
    peak_phases: dict | None = None             # the peak of each phase
    cuda_workspace: int | None = None           # cuBLAS workspace on CUDA
    padding_mask: bool | None = None            # whether the batch carries a padding mask (another attention path)
    step_flops_breakdown: dict | None = None    # forward, backward, recompute
    aten_ops: dict | None = None                # ops dispatched per phase (forward, recompute, backward)
    data_parallel: dict | None = None           # N ranks: all-reduce bytes and time, memory per rank, step_s
    extra: dict = field(default_factory=dict)

    _BREAKDOWNS = ("activations_breakdown", "peak_phase", "peak_breakdown", "peak_phases", "cuda_workspace",
                   "padding_mask", "step_flops_breakdown", "aten_ops", "data_parallel")

    def _left_out(self, name, value) -> bool:
        return super()._left_out(name, value) or (name in self._BREAKDOWNS and value is None)

    @classmethod
    def _nested(cls):
        return {"time": TimeTheory.from_dict}


@dataclass(eq=False)
class RunRecord(_Part):
    """One run: the config, where and how it ran, the theory, the measurement, and how it ended."""
    config: dict = field(default_factory=dict)   # RunConfig.to_dict()
    shape: dict | None = None
    resolved: dict | None = None                 # {"precision": "fp16", "device": "cuda"}: what 'auto' became
    model_source: str | None = None              # "hub", "checkpoint" or "shape-only"
    labels: list = field(default_factory=list)   # stand-in labels: cpu, t4-profile, shape-only, simulated-oom, …
    warnings: list = field(default_factory=list)
    theory: Theory = field(default_factory=Theory)
    measured: Measured = field(default_factory=Measured)
    status: str = "ok"                           # "ok", "oom" or "error"
    error: str | None = None
    traceback: str | None = None
    device: dict | None = None
    labkit_version: str | None = None
    time: str | None = None                      # UTC, ISO 8601
    run: dict | None = None                      # {"steps", "warmup", "weights"}
    ranks: list | None = None                    # data-parallel runs: one measured dict per rank (schema 3)
    schema: int = 1
    extra: dict = field(default_factory=dict)

    @classmethod
    def _nested(cls):
        return {"theory": Theory.from_dict, "measured": Measured.from_dict}

    def _left_out(self, name, value) -> bool:
        """Optional parts a record does not have (traceback, run, …) are left out rather than written as null, and
        a version-1 record has no `schema` key, as it was read."""
        return super()._left_out(name, value) or \
            (name in ("traceback", "run", "shape", "labkit_version", "time", "ranks") and value is None) or \
            (name == "schema" and value == 1)


def build(**fields) -> RunRecord:
    """A record of the current schema from its parts (nested parts may be dicts)."""
    return RunRecord.from_dict({**fields, "schema": SCHEMA})


STATUSES = ("ok", "oom", "error")


def check_record(d) -> None:
    """ValueError, in one line, for what is not a run record this kit can read: one from a newer kit (a schema
    above SCHEMA), a schema that is not a whole number, a config that names no model, an unknown status."""
    if not isinstance(d, Mapping):
        raise ValueError(f"a run record is a JSON object, got {type(d).__name__}")
    schema = d.get("schema", 1)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise ValueError(f"its schema is {schema!r}, not a version number (1 to {SCHEMA})")
    if schema > SCHEMA:
        raise ValueError(f"written by a newer labkit (record schema {schema}; this one reads 1 to {SCHEMA}): "
                         "upgrade labkit to read it")
    config = d.get("config")
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), str) or not config["model"]:
        raise ValueError("its config names no model, so it is not a run record")
    if d.get("status", "ok") not in STATUSES:
        raise ValueError(f"its status is {d.get('status')!r}, not one of {', '.join(STATUSES)}")


def as_record(obj) -> RunRecord:
    """A RunRecord from a record or from its JSON form (any schema up to SCHEMA; ValueError for what
    check_record refuses)."""
    if isinstance(obj, RunRecord):
        return obj
    check_record(obj)
    return RunRecord.from_dict(obj)


_NEVER_NONE = ("config", "labels", "warnings", "theory", "measured", "status")   # RunRecord's parts with a default


def typed(record) -> RunRecord:
    """A RunRecord to read by attribute: the record itself, or one made from its JSON form (a dict from a file, a
    child process, a reference set) without checking it. A part it lacks or holds as null reads as the default
    (an empty theory, measured, config or labels; status "ok"), so readers never test for a missing part.
    Readers use this; loaders check what they load (`as_record`, `read_jsonl`)."""
    if isinstance(record, RunRecord):
        return record
    d = {k: v for k, v in (record or {}).items() if not (k in _NEVER_NONE and v is None)}
    return RunRecord.from_dict(d)


def json_default(o: Any):
    """`json.dump`'s `default` for what a record holds: its typed parts as their JSON form, tensor and numpy scalars
    as numbers."""
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):                       # numpy / torch scalars
        return o.item()
    return str(o)


def dumps(record) -> str:
    """One record as one line of JSON."""
    return json.dumps(record.to_dict() if hasattr(record, "to_dict") else record, default=json_default)


# Every line dumps() writes for a record begins so (config is RunRecord's first field): only a last line that
# begins so may be cut as a kill mid-write.
RECORD_START = b'{"config": '


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, RecursionError):         # RecursionError: nested deeper than Python's stack
        return False
    return True


def write_jsonl(path, record) -> None:
    """Append one record as one line, flushed and synced: a kill leaves at most one partial line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path, repair: bool = False) -> list[RunRecord]:
    """Every record of a JSON Lines file, in order, old schemas included.

    A last line without its newline that begins as this kit begins a record but is cut short is a run killed
    mid-write: it is dropped with a warning (with repair=True, also cut from the file, so the next append starts on
    a clean line). Any other last line without its newline (a whole record, a note of the user's) is read like the
    others, and repair=True only adds the newline. A line that is not JSON, or is JSON but not a record (no
    "config" object), is skipped with a warning naming its line number; the file is left as it is."""
    if os.path.exists(path) and not os.path.isfile(path):   # a folder, or a named pipe that would block the read
        raise ValueError(f"{path} is not a regular file (a folder, a pipe or a device): not a records file")
    with open(path, "rb") as f:
        data = f.read()
    complete, _, tail = data.rpartition(b"\n")
    if not data.endswith(b"\n") and tail.strip():
        begun = tail.strip()
        if (begun.startswith(RECORD_START) or RECORD_START.startswith(begun)) and not _is_json(tail):
            warnings.warn(f"{path}: ignoring a truncated last line ({len(tail)} bytes, a run killed mid-write)",
                          LabkitWarning, stacklevel=2)
            if repair:
                os.truncate(path, len(complete) + 1 if complete else 0)
        else:   # a whole record killed before its newline, or the user's own bytes: never cut
            complete, tail = data, b""
            if repair:
                with open(path, "ab") as f:
                    f.write(b"\n")
    records = []
    for n, line in enumerate(complete.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            warnings.warn(f"{path}: ignoring unreadable line {n}", LabkitWarning, stacklevel=2)
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict):
            warnings.warn(f"{path}: ignoring line {n}: JSON, but not a run record (no config)", LabkitWarning,
                          stacklevel=2)
            continue
        try:
            check_record(obj)
        except ValueError as e:
            warnings.warn(f"{path}: ignoring line {n}: {e}", LabkitWarning, stacklevel=2)
            continue
        try:
            records.append(RunRecord.from_dict(obj))
        except (TypeError, ValueError, AttributeError) as e:   # e.g. "measured": 5 — a part that is not an object
            warnings.warn(f"{path}: ignoring line {n}: JSON, but not a run record ({type(e).__name__}: {e})",
                          LabkitWarning, stacklevel=2)
    return records
