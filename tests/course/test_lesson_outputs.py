"""labkit.course.lesson_outputs: what a learner must never read in a lesson's outputs is found, with its cell;
what the lessons print on purpose is not."""
import nbformat
import pytest

from labkit.course.lesson_outputs import problems


def _nb(*outputs):
    """A notebook of one code cell per output."""
    cells = []
    for out in outputs:
        cell = nbformat.v4.new_code_cell("...")
        cell.outputs = [out]
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# lesson")] + cells)


def _stdout(text):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


@pytest.mark.parametrize("output, found", [
    (_stdout("step time: nan s\n"), "nan"),
    (_stdout("loss NaN after 3 steps\n"), "nan"),
    (_stdout("peak: None MiB\n"), "None"),
    (nbformat.v4.new_output("execute_result", data={"text/plain": "{'step_s': None}"}, execution_count=1), "None"),
    (_stdout("calibration failed: AssertionError: Attempted unscale_ but _scale is None\n"), "error text"),
    (_stdout("Traceback (most recent call last):\n  File ...\n"), "traceback"),
    (nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something\n"), "stderr"),
    (nbformat.v4.new_output("error", ename="NameError", evalue="name 'constants' is not defined",
                            traceback=["\x1b[31mNameError\x1b[0m: name 'constants' is not defined"]), "stderr"),
])
def test_what_a_learner_must_not_read_is_found_with_its_cell(output, found):
    got = problems(_nb(_stdout("fine\n"), output))
    assert len(got) == 1 and got[0].startswith(f"cell 3: {found} — "), got


@pytest.mark.parametrize("line", [
    "memory budget (GiB) 0.02 → none: saved",                     # a word, not Python's None
    "none: the work outweighs the overhead",
    "step 2: grads inf/nan → step skipped, scale 65536 → 32768",   # lesson 04's loss scaler at work
    "! Hugging Face Hub reachable: no — URLError: <urlopen error [Errno -2]>; presets fall back to shape-only",
    "ValueError: effective batch 32 is not a multiple of micro_batch × GPUs = 3",
    "bf16 on a T4 → ValueError: bf16 is not native on this GPU (compute capability 7.5 < 8.0): use fp16",
    "ValueError: Attempting to unscale FP16 gradients.",
    "finance: 12 GiB, Nonesuch 3",                                  # words that only contain the letters
])
def test_what_the_lessons_print_on_purpose_reads_clean(line):
    assert problems(_nb(_stdout(line + "\n"))) == []
