"""Runs in a fresh process (labkit.fresh) and the fragmentation lesson's plumbing (labkit.course.fragmentation), on a CPU:
the commands and environments built, a real child run parsed back, and the gap arithmetic on handmade records."""
import os
import sys

import pytest

from labkit import cli, flags, fresh
from labkit.engine import data
from labkit.course import fragmentation
from labkit.config import RunConfig

pytestmark = pytest.mark.long      # half a minute or more: started early (tests/conftest.py)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def child_finds_labkit(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LABKIT_OFFLINE", "1")


def test_run_command_is_labkit_run_json_with_the_config_flags():
    cfg = RunConfig(model="llama-3.2-1b", seq_len=512, micro_batch=2, grad_accum=1, pad_to_seq_len=False)
    argv = fresh.run_command(cfg, steps=30, weights="random", t4_profile=True)
    assert argv[:5] == [sys.executable, "-m", "labkit", "run", "--json"]
    assert argv[argv.index("--steps") + 1] == "30" and argv[argv.index("--pad") + 1] == "off"
    assert "--t4-profile" in argv and "--warmup" not in argv           # the CLI's default warm-up applies
    args = cli.build_parser().parse_args(argv[3:])
    assert flags.config_from_args(args) == cfg and args.weights == "random" and args.t4_profile
    assert "--t4-profile" not in fresh.run_command(cfg, steps=2)
    search = fresh.search_command(cfg, lo=1, hi=32, weights="random", t4_profile=True)
    args = cli.build_parser().parse_args(search[3:])
    assert args.command == "search" and (args.min, args.max) == (1, 32) and flags.config_from_args(args) == cfg


def test_child_env_sets_the_allocator_in_the_child_only(monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "garbage_collection_threshold:0.6")
    plain = fresh.child_env(None)
    assert "PYTORCH_CUDA_ALLOC_CONF" not in plain and "PYTORCH_ALLOC_CONF" not in plain   # the defaults, really
    assert fresh.child_env("expandable_segments:True")["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert os.environ["PYTORCH_ALLOC_CONF"] == "garbage_collection_threshold:0.6"       # ours untouched
    assert fresh.child_env(None, base={"A": "1"}) == {"A": "1"}


def test_parse_output_takes_the_record_line():
    assert fresh.parse_output('loading…\n{"status": "ok"}\n') == {"status": "ok"}
    assert fresh.parse_output('{"a": 1}\n{\n  "b": {\n    "c": 2\n  }\n}\n') == {"b": {"c": 2}}
    with pytest.raises(ValueError, match="no JSON record"):
        fresh.parse_output("Traceback …\n")


def test_a_real_child_run_on_the_cpu(child_finds_labkit):
    rec = fresh.run(RunConfig(seq_len=64, micro_batch=1, grad_accum=1), steps=1, timeout=300)
    assert rec.status == "ok" and rec.config["seq_len"] == 64 and rec.run["warmup"] == 0
    assert "cpu" in rec.labels and "time-includes-warmup" in rec.labels
    with pytest.raises(ValueError, match="no per-step CUDA memory"):
        fragmentation.gap_per_step(rec)                                 # a CPU has no caching allocator


def test_the_allocator_setting_reaches_the_child(child_finds_labkit):
    argv = [sys.executable, "-m", "labkit", "doctor", "--json"]
    facts = fresh.call(argv, fresh.child_env(fragmentation.EXPANDABLE), timeout=120)
    assert facts["alloc_conf"] == "expandable_segments:True" and facts["expandable_segments"] is True
    assert fresh.call(argv, fresh.child_env(None), timeout=120)["alloc_conf"] is None


def test_a_child_that_refuses_its_input_raises_its_line(child_finds_labkit):
    with pytest.raises(ValueError, match="--warmup 1 must be below --steps 1"):
        fresh.run(RunConfig(), steps=1, warmup=1, timeout=120)


def test_batches_without_padding_change_width_and_with_padding_do_not():
    def widths(pad):
        stream = data.batches(data.byte_tokenizer(), data.course_texts(), 512, 2, pad)
        return {next(stream)["input_ids"].shape[1] for _ in range(30)}
    assert widths(True) == {512}
    assert len(widths(False)) > 10 and max(widths(False)) < 512      # the texts are 214–389 bytes


def test_three_scenes_and_their_commands():
    cfg = RunConfig(model="llama-3.2-1b", seq_len=512, micro_batch=2, grad_accum=1)
    scenes = fragmentation.scenes(cfg)
    assert [(s["config"].pad_to_seq_len, s["alloc_conf"]) for s in scenes] == \
        [(False, None), (True, None), (False, "expandable_segments:True")]
    lines = dict(fragmentation.commands(cfg, steps=30))
    assert all("-m labkit run --json --steps 30" in line for line in lines.values())
    assert "--pad off" in lines["changing lengths"] and "--pad" not in lines["padded to seq_len"]
    expandable = lines["changing lengths, expandable_segments"]
    assert expandable.startswith("PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True ")
    assert not lines["changing lengths"].startswith("PYTORCH")


def _record(reserved, allocated, labels=("t4-profile",), status="ok"):
    return {"config": RunConfig(model="llama-3.2-1b", seq_len=512).to_dict(), "status": status, "error": None,
            "labels": list(labels), "device": {"name": "NVIDIA H200"}, "resolved": {"device": "cuda"},
            "measured": {"reserved_after_step": reserved, "allocated_after_step": allocated,
                         "peak_reserved_bytes": max(reserved), "peak_allocated_bytes": max(allocated) + 5 * 1024 ** 2}}


def test_compare_gap_rows_and_chart_from_handmade_records():
    MiB = fragmentation.MiB
    calls = []

    def runner(cfg, steps, weights, alloc_conf):
        calls.append((cfg.pad_to_seq_len, alloc_conf, steps, weights))
        grow = 0 if cfg.pad_to_seq_len or alloc_conf else 10 * MiB        # only the unpadded default run climbs
        return _record([100 * MiB + grow * i for i in range(4)], [60 * MiB] * 4)

    records = fragmentation.compare(RunConfig(seq_len=512), steps=4, weights="random", runner=runner)
    assert calls == [(False, None, 4, "random"), (True, None, 4, "random"), (False, "expandable_segments:True", 4,
                                                                           "random")]
    assert fragmentation.gap_per_step(records["changing lengths"]) == [40 * MiB, 50 * MiB, 60 * MiB, 70 * MiB]
    rows = fragmentation.summary_rows(records)
    assert rows[0] == ("changing lengths", "40 MiB", "70 MiB", "70 MiB", "130 MiB", "65 MiB")
    assert rows[1][1:4] == ("40 MiB", "40 MiB", "40 MiB")
    fig = fragmentation.chart(records)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == [name for name, _, _ in fragmentation.SCENES]
    assert list(ax.lines[0].get_ydata()) == [40, 50, 60, 70]
    assert "T4-profile" in ax.get_title() and "H200" in ax.get_title()
    records["padded to seq_len"] = _record([1], [1], status="oom")
    assert fragmentation.summary_rows(records)[1][1] == "oom" and len(fragmentation.chart(records).axes[0].lines) == 2
