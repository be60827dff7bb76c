"""Lessons as a T4 learner's Run All takes them, rehearsed on the CPU (see tests/course/test_t4_rehearsal.py): the lessons
whose cells branch on the precision a run resolves to (02-05: calibration, fp16 with loss scaling, the 4-bit
compute dtype), executed end to end in a kernel started with LABKIT_T4_REHEARSAL=1. A cell that raises fails the
test; so does an output a learner must not read (stderr, which is red in a notebook; nan; None; error text:
`labkit.course.lesson_outputs`) and a lesson in which no run shows its 't4-rehearsal' label.

The three lessons run one after another in one kernel, its namespace emptied (%reset -f) before each, as a
learner's Restart & Run All would leave it but for the modules already imported: a kernel each would import
torch, transformers and peft twice more (~9 s of CPU each) and check nothing more than which branches run. What a
process says once (the kit's notes, a library's warn-once) is said in the first lesson that meets it, so one
lesson run alone (-k) can show a line the three together show only in an earlier one."""
import json
import os
import pathlib

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

from labkit.course.lesson_outputs import problems

ROOT = pathlib.Path(__file__).resolve().parents[2]
LESSONS = ["02_gradient_checkpointing", "04_mixed_precision", "05_qlora_together"]
# Where a lesson times several steps, the rehearsal times one, and lesson 05's stand-in batch is a quarter (seq 128,
# 2 accumulations: still an accumulation under the GradScaler, through the Trainer and the runner): it checks which
# branches a T4 takes, not the figures, and fp16 matrix products on this CPU run ~9× slower than fp32 (the tiny
# model at seq 256, micro-batch 2, 4 accumulations, one step: 12.8 s against 1.4 s). Each text must be in the
# lesson, or the test fails.
ONE_STEP = {
    "02_gradient_checkpointing": [("steps=4, warmup=1)", "steps=1, warmup=0)")],
    "05_qlora_together": [("trainer.train_with_trainer(cfg, steps=3, warmup=1)",
                           "trainer.train_with_trainer(cfg, steps=1, warmup=0)"),
                          ("experiment.run(cfg, steps=3, warmup=1)", "experiment.run(cfg, steps=1, warmup=0)"),
                          ("seq_len=256 if env.stand_in else 1024, micro_batch=2, grad_accum=4,",
                           "seq_len=128 if env.stand_in else 1024, micro_batch=2, grad_accum=2,")],
}


@pytest.fixture(scope="module")
def rehearsal_kernel(tmp_path_factory):
    """One kernel for the module, started in the T4 rehearsal (LABKIT_T4_REHEARSAL=1) by the first lesson run."""
    km = AsyncKernelManager(kernel_name="python3")
    env = {**os.environ, "LABKIT_T4_REHEARSAL": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    yield km, env, tmp_path_factory.mktemp("rehearsal")
    if km.has_kernel:
        run_sync(km.shutdown_kernel)(now=True)


@pytest.mark.lessons
@pytest.mark.parametrize("lesson", LESSONS)
def test_the_lesson_runs_end_to_end_on_the_t4_path(lesson, rehearsal_kernel):
    km, env, folder = rehearsal_kernel
    nb = nbformat.read(ROOT / "notebooks" / f"{lesson}.ipynb", as_version=4)
    for many, one in ONE_STEP.get(lesson, []):
        cells = [c for c in nb.cells if c.cell_type == "code" and many in c.source]
        assert cells, f"{lesson} no longer has {many!r}: update ONE_STEP"
        for cell in cells:
            cell.source = cell.source.replace(many, one)
    nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))     # nothing left from the lesson before
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(folder)}})
    try:
        client.execute(env=env)
    except BaseException:             # a cell still running or a dead kernel must not fail the lessons after it
        run_sync(km.restart_kernel)(now=True, env=env)
        raise
    finally:
        if client.kc is not None:     # a client of a kernel it does not own is left open by nbclient
            client.kc.stop_channels()
    assert run_sync(km.is_alive)(), f"the kernel died during {lesson}"
    nb.cells.pop(0)                   # the %reset cell: cell numbers as in the lesson
    said = problems(nb)               # stderr (red in a notebook), nan, None, error text
    assert said == [], f"{lesson} printed what a learner must not read under the T4 rehearsal: {said}"
    runs = [o for c in nb.cells if c.cell_type == "code" and "environment(" not in c.source   # not the banner,
            for o in c.get("outputs", [])]                                                # which names the label
    text = json.dumps([o.get("text") or o.get("data", {}).get("text/plain") for o in runs])
    # every record a rehearsed run makes carries the label (and the lessons print fp16 in their theory tables on
    # any machine, so "fp16" alone would pass without the rehearsal)
    assert "t4-rehearsal" in text, f"no run of {lesson} is labelled t4-rehearsal: the rehearsal did not reach them"
