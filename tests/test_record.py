"""The run record as a type: built in one place, read from every file the kit ever wrote, written back unchanged."""
import json
import pathlib
import warnings

import pytest

from labkit.config import RunConfig
from labkit.experiment import estimate
from labkit.record import (RECORD_START, SCHEMA, Measured, RunRecord, Theory, TimeTheory, as_record, dumps, read_jsonl,
                           write_jsonl)

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the committed reference sets, and the GPU records shared beside a checkout (present in development and CI)
FILES = sorted((ROOT / "labkit" / "reference").glob("*.jsonl")) + \
    sorted((ROOT.parent / "shared" / "gpu-records").glob("*/*.jsonl"))


def leaves(d, prefix=()):
    """(path, value) for every non-dict value in a nested dict."""
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def at(d, path):
    for k in path:
        d = d[k]
    return d


def test_there_are_old_records_to_read():
    assert any("reference" in str(p) for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_record_ever_written_loads_and_keeps_every_value(path):
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = read_jsonl(path)
    assert len(records) == len(lines)
    for raw, rec in zip(lines, records):
        assert rec.schema == raw.get("schema", 1)
        back = rec.to_dict()
        for key_path, value in leaves(raw):
            assert at(back, key_path) == value, key_path           # nothing lost or changed
        added = {p for p, _ in leaves(back)} - {p for p, _ in leaves(raw)}
        assert all(at(back, p) is None for p in added)             # only fields the old version did not measure
        assert rec.measured.peak_allocated_bytes == raw["measured"].get("peak_allocated_bytes")
        assert rec["theory"]["peak"] == rec.theory.peak == raw["theory"].get("peak")


def test_a_new_record_reads_by_attribute_and_by_key_alike():
    rec = estimate(RunConfig(micro_batch=2))
    assert isinstance(rec, RunRecord) and rec.schema == SCHEMA
    assert isinstance(rec.theory, Theory) and isinstance(rec.measured, Measured)
    assert rec.theory.activations == rec["theory"]["activations"] > 0
    assert isinstance(rec.theory.time, TimeTheory) and rec.theory.time.step_s == rec["theory"]["time"]["step_s"]
    assert rec.measured.peak_allocated_bytes is None and rec["measured"].get("peak_allocated_bytes") is None
    assert rec.config["micro_batch"] == 2 and "theory-only" in rec.labels
    assert rec["theory"]["activations_breakdown"] == rec.theory.activations_breakdown               # a breakdown
    rec["theory"]["term_of_a_later_kit"] = 1                                                        # unknown → extra
    assert rec.theory.extra == {"term_of_a_later_kit": 1} and rec["theory"]["term_of_a_later_kit"] == 1
    old = Theory.from_dict({"peak": 5})                    # a record from before the breakdowns: none gained as null
    assert old.to_dict() == {**{k: None for k in old}, "peak": 5} and "activations_breakdown" not in old.to_dict()
    rec["run"] = {"steps": 1}
    assert rec.run == {"steps": 1}
    assert json.loads(dumps(rec))["schema"] == SCHEMA


def test_write_then_read_gives_the_same_record(tmp_path):
    rec = estimate(RunConfig())
    path = tmp_path / "one.jsonl"
    write_jsonl(path, rec)
    write_jsonl(path, rec.to_dict())                              # the JSON form writes the same line
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]
    again = read_jsonl(path)[0]
    assert again.to_dict() == rec.to_dict() and again == rec and rec == rec.to_dict()
    assert again != estimate(RunConfig(micro_batch=3))
    assert as_record(rec) is rec and as_record(rec.to_dict()).to_dict() == rec.to_dict()


def test_lines_that_are_not_records_are_skipped_with_a_warning(tmp_path):
    good = dumps(estimate(RunConfig()))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([good, "123", '{"status": "ok"}', "not json", good]) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_jsonl(path)
    assert len(records) == 2
    said = " | ".join(str(w.message) for w in caught)
    assert "line 2" in said and "line 3" in said and "line 4" in said
    assert path.read_text().count("\n") == 5                       # the file is left as it was


def test_a_truncated_last_line_is_dropped_and_repaired(tmp_path):
    good = dumps(estimate(RunConfig()))
    path = tmp_path / "killed.jsonl"
    path.write_text(good + "\n" + good[: len(good) // 2])
    with pytest.warns(UserWarning, match="truncated last line"):
        assert len(read_jsonl(path, repair=True)) == 1
    assert path.read_text() == good + "\n"


def test_a_schema_2_record_reads_with_no_ranks_and_writes_back_unchanged():
    old = {"config": RunConfig().to_dict(), "labels": ["cpu"], "status": "ok", "schema": 2,
           "theory": {"peak": 123}, "measured": {"step_time_s": 0.5, "loss": [6.0]}}
    rec = RunRecord.from_dict(old)
    assert rec.ranks is None and rec.get("ranks") is None and rec.schema == 2
    # written back as it was read: no nulls for what it never had (only `warnings`, a list, gains its empty default)
    assert rec.to_dict() == {**old, "warnings": []}
    assert rec.measured.peak_allocated_bytes is None and rec.theory.time is None        # read as None all the same
    assert json.loads(dumps(rec))["schema"] == 2 and "ranks" not in json.loads(dumps(rec))


def test_a_data_parallel_record_keeps_every_rank():
    ranks = [{"rank": r, "status": "ok", "step_time_s": 0.5 + r, "sync_time_s": 0.01} for r in range(2)]
    rec = RunRecord.from_dict({"config": RunConfig(num_gpus=2).to_dict(), "schema": SCHEMA, "ranks": ranks,
                               "measured": {"loss": [6.0], "ranks_summary": {"step_time_s": {"min": 0.5, "max": 1.5}}}})
    back = RunRecord.from_dict(json.loads(dumps(rec)))
    assert SCHEMA == 3 and back.ranks == ranks and back == rec
    assert back.measured["ranks_summary"]["step_time_s"]["max"] == 1.5        # unknown measured keys → extra


@pytest.mark.parametrize("tail", ["# my note: the fp16 runs were on the second T4", "{\"config\": {\"model\"} note",
                                  "[1, 2", "{\"conf"])
def test_a_last_line_the_kit_did_not_start_is_never_cut(tmp_path, tail):
    """Only a line that begins as this kit begins a record may be cut as a kill mid-write; a user's own bytes stay,
    and repair only gives them their newline (unless they look like the start of a record)."""
    good = dumps(estimate(RunConfig()))
    path = tmp_path / "mine.jsonl"
    path.write_text(good + "\n" + tail)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert len(read_jsonl(path, repair=True)) == 1
    text = path.read_text()
    if tail.startswith(RECORD_START.decode()) or RECORD_START.decode().startswith(tail):   # cut short by a kill
        assert text == good + "\n"
    else:
        assert text == good + "\n" + tail + "\n"


def test_a_line_nested_too_deep_is_skipped_like_any_unreadable_line(tmp_path):
    good = dumps(estimate(RunConfig()))
    path = tmp_path / "deep.jsonl"
    path.write_text(good + "\n" + "[" * 100_000 + "]" * 100_000 + "\n" + "[" * 100_000)
    with pytest.warns(UserWarning, match="unreadable line 2"):
        assert len(read_jsonl(path, repair=True)) == 1


@pytest.mark.parametrize("change, said", [
    ({"schema": 99}, "written by a newer labkit .record schema 99"), ({"schema": "3"}, "schema is '3', not a version"),
    ({"schema": True}, "not a version"), ({"config": {}}, "config names no model"),
    ({"status": "fine"}, "status is 'fine'")])
def test_a_record_that_is_not_one_this_kit_reads_gets_one_line(tmp_path, change, said):
    from labkit.config import LabkitWarning
    from labkit.record import check_record
    good = json.loads(dumps(estimate(RunConfig())))
    bad = {**good, **change}
    with pytest.raises(ValueError, match=said):
        as_record(bad)
    with pytest.raises(ValueError, match=said):
        check_record(bad)
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.warns(LabkitWarning, match=f"line 2: .*{said}"):
        assert len(read_jsonl(path)) == 1                 # not read as status ok
