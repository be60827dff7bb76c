"""Reference sets: recorded on another machine, loaded labelled with where and when, matched to the lab's settings."""
import hashlib
import json
from pathlib import Path

import pytest

from labkit.config import RunConfig
from labkit.report import reference
from labkit.report.reference import (as_reference, closest_record, load_reference, matches, missing_combination_text,
                                     provenance, recorded_precisions, recorded_values, reference_sets, settings_text)

GPU_SET = "h100-t4-profile-llama-3.2-1b-2026-11-22"
GPU_PROVENANCE = "reference · measured on NVIDIA H100 80GB HBM3 (T4 profile), 2026-11-22"
REFERENCE_DIR = Path(reference.__file__).parent.parent / "reference"


# ---- the recorded sets -----------------------------------------------------------------------------------------------
def test_reference_sets_load_labelled():
    assert "cpu-tiny" in reference_sets()
    records = load_reference("cpu-tiny")
    assert records and all("reference" in r["labels"] for r in records)
    assert all(r["provenance"].startswith("reference · measured on ") for r in records)
    assert all(r["status"] == "ok" and r["measured"]["saved_activation_bytes"] for r in records)
    with pytest.raises(ValueError, match="unknown reference set"):
        load_reference("no-such-set")


def test_gpu_reference_set_is_the_recording_byte_for_byte():
    path = REFERENCE_DIR / f"{GPU_SET}.jsonl"
    data = path.read_bytes()
    # sha256 of lab-grid-llama-3.2-1b.jsonl as recorded (shared/gpu-records/h100-t4-profile-2026-11-22/)
    assert hashlib.sha256(data).hexdigest() == "06e9a8456583d6d43040d3c02c4528f11e9d3b46598c2afd049710cdb8ebc998"
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert len(records) == 12
    assert {r["device"]["name"] for r in records} == {"NVIDIA H100 80GB HBM3"}
    assert all(r["labels"] == ["t4-profile", "shape-only"] and r["resolved"]["precision"] == "fp16"
               for r in records)
    assert [(r["config"]["seq_len"], r["config"]["micro_batch"], r["config"]["gradient_checkpointing"])
            for r in records if r["status"] == "oom"] == [(2048, 2, False), (2048, 4, True), (2048, 4, False)]
    assert records[0]["measured"]["peak_allocated_bytes"] == 2088387072
    assert records[0]["time"] == "2026-11-22T15:01:19+00:00"
    assert all(r["provenance"] == GPU_PROVENANCE for r in load_reference(GPU_SET))


def test_provenance_names_the_t4_profile():
    rec = {"labels": ["t4-profile", "reference"], "time": "2026-11-22T15:01:19+00:00",
           "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}}
    assert provenance(rec) == GPU_PROVENANCE
    rec["labels"] = ["reference"]
    assert provenance(rec) == "reference · measured on NVIDIA H100 80GB HBM3, 2026-11-22"


def test_matching_resolves_auto_on_the_reference_device():
    t4 = as_reference({"config": RunConfig(model="llama-3.2-1b", seq_len=128, micro_batch=2, grad_accum=4).to_dict(),
                       "resolved": {"precision": "fp16", "device": "cuda"},
                       "device": {"type": "cuda", "name": "Tesla T4", "capability": [7, 5]}, "labels": []})
    cfg = RunConfig(model="tiny", seq_len=128, micro_batch=2, grad_accum=4)
    assert matches(t4, cfg)                                   # auto → fp16 on a T4
    assert matches(t4, cfg.replace(precision="fp16"))
    assert not matches(t4, cfg.replace(precision="fp32"))
    assert not matches(t4, cfg.replace(precision="bf16"))     # bf16 cannot be asked of a T4
    assert not matches(t4, cfg.replace(micro_batch=4))


def test_no_reference_folder_means_no_sets(tmp_path, monkeypatch):
    monkeypatch.setattr(reference, "_reference_dir", lambda: tmp_path / "missing")
    assert reference_sets() == []
    with pytest.raises(ValueError, match="recorded sets: none"):
        load_reference("cpu-tiny")


def test_as_reference_labels_a_copy_and_names_its_set():
    rec = {"labels": ["cpu"], "device": {"type": "cpu", "name": "x86_64"}, "time": "2026-01-02T00:00:00+00:00"}
    ref = as_reference(rec, "my-set")
    assert ref["labels"] == ["cpu", "reference"] and ref["reference_set"] == "my-set"
    assert ref["provenance"] == "reference · measured on CPU (x86_64), 2026-01-02"
    assert rec == {"labels": ["cpu"], "device": {"type": "cpu", "name": "x86_64"},
                   "time": "2026-01-02T00:00:00+00:00"}                          # the original is left alone
    assert as_reference(ref)["labels"] == ["cpu", "reference"]                   # labelled once
    assert provenance({"labels": ["cpu"]}) == ""                                 # not replayed: no provenance
    assert provenance({"labels": ["reference"]}) == "reference · measured on an unknown device, unknown date"


# ---- what a set offers, and what to say when it lacks a combination --------------------------------------------------
def _grid():
    """A small handmade set: seq 512 at micro-batch 1 and 2, seq 2048 at micro-batch 1, all auto → fp16 on a T4."""
    out = []
    for seq, micro in ((512, 1), (512, 2), (2048, 1)):
        cfg = RunConfig(model="llama-3.2-1b", seq_len=seq, micro_batch=micro, grad_accum=4)
        out.append(as_reference({"config": cfg.to_dict(), "resolved": {"precision": "fp16"}, "labels": [],
                                 "device": {"type": "cuda", "name": "Tesla T4", "capability": [7, 5]}}))
    return out


def test_recorded_values_and_precisions():
    pool = _grid()
    assert recorded_values(pool, "seq_len") == [512, 2048] and recorded_values(pool, "micro_batch") == [1, 2]
    assert recorded_precisions(pool) == [("auto (fp16)", "auto")]


def test_closest_record_shares_the_most_settings_the_earliest_first():
    pool = _grid()
    assert closest_record(pool, {"seq_len": 2048, "micro_batch": 2}) is pool[1]      # one each: the earliest
    assert closest_record(pool, {"seq_len": 2048, "micro_batch": 1}) is pool[2]


def test_missing_combination_names_what_was_recorded_and_the_runs_one_setting_away():
    cfg = RunConfig(model="tiny", seq_len=2048, micro_batch=2, grad_accum=4)
    assert not any(matches(r, cfg) for r in _grid())
    assert missing_combination_text("t4-grid", _grid(), cfg) == (
        "no run in reference set 't4-grid' has these settings (checkpointing on, precision auto, micro-batch 2, "
        "accumulation 4, seq 2048, r 16); it recorded checkpointing on, precision fp16, micro-batch 1/2, "
        "accumulation 4, seq 512/2048, r 16; one setting away it has: seq 512, micro-batch 1")
    assert settings_text({"gradient_checkpointing": False, "lora_r": 8}) == "checkpointing off, r 8"
