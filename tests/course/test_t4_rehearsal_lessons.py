"""Lessons as a T4 learner's Run All takes them, rehearsed on the CPU (see tests/course/test_t4_rehearsal.py): the lessons
whose cells branch on the precision a run resolves to (02-05: calibration, fp16 with loss scaling, the 4-bit
compute dtype), executed end to end in a kernel started with LABKIT_T4_REHEARSAL=1. A cell that raises fails the
test; so does a line on stderr (red in a notebook) and a lesson in which no run said fp16."""
import json
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[2]
LESSONS = ["02_gradient_checkpointing", "04_mixed_precision", "05_qlora_together"]


@pytest.mark.lessons
@pytest.mark.parametrize("lesson", LESSONS)
def test_the_lesson_runs_end_to_end_on_the_t4_path(lesson, monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_T4_REHEARSAL", "1")          # the kernel inherits it
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    stderr = [o["text"] for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert stderr == [], f"{lesson} printed on stderr under the T4 rehearsal: {stderr}"
    text = json.dumps([o.get("text") or o.get("data", {}).get("text/plain") for o in outputs])
    assert "fp16" in text, f"no output of {lesson} says fp16: the rehearsal did not reach its runs"
