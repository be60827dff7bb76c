"""The lab: one panel of widgets that every lesson reuses — `lab()` builds it, `Lab` is its Python handle.

    import labkit
    panel = labkit.lab()   # an ipywidgets VBox; end a cell with it to show it
    panel.run()            # the same as pressing Run (tests and notebooks drive it this way)

Controls: gradient checkpointing, precision (only the formats this device runs natively; the others are named with
the reason), micro-batch, gradient accumulation, GPUs (arithmetic only), sequence length, LoRA rank, and on a CPU a
memory budget in GiB (empty: none) that turns an over-budget run into a simulated OOM. A live readout shows the
effective batch (micro × accum × GPUs = N).

Run executes real optimizer steps in this kernel (`labkit.experiment.run`), then shows the memory chart (theory
beside measured), a theory-vs-measured table with the source lesson's simple rule, step time measured vs predicted, the
delta against the previous run (naming that run and its settings), and a history table that exports to CSV. Bytes
follow one rule: figures side by side share a unit, GiB from 1 GiB up, MiB below; budgets in GiB. Everything stays
inside the panel: errors and OOMs become messages (each run starts them afresh), the button comes back, the kernel
stays usable. Where widgets cannot show, the displayed panel is a text view saying how to enable them.

Reference results: `labkit/reference/*.jsonl` hold records measured on some other machine. Choosing a set under
"results from" (`use_reference(name)`) switches the model and every control to the values the set recorded; Replay
(`replay()`) then shows the record for the chosen combination (or names the runs one setting away when the set has
none), every figure labelled "reference · measured on <device>, <date>". "live runs in this kernel" (`use_live()`)
brings the live controls back.

Where the parts live: `lab_controls` (what each control offers), `lab_view` (the widgets and what they show),
`lab_controller` (runs, replays, history, messages); the tables, charts and reference sets in `labkit.report`.
"""
from __future__ import annotations

from labkit.config import RunConfig, check_device, check_steps
from labkit.course.lab_controller import LabController
from labkit.course.lab_view import LabView


class Lab(LabController, LabView):
    """The lab panel (an ipywidgets VBox) and its Python handle.

    Attributes tests and notebooks use: `controls` (dict: RunConfig field → widget), `run_button`, `progress`,
    `readout` (effective batch), `reference_dropdown` ("results from": live runs or a reference set),
    `reference_name` (the chosen set, None for live runs), `history` (records of this kernel, oldest first),
    `messages` (strings, oldest first; the panel shows those of the latest run or replay), `last_delta`,
    `last_compared_with`, `last_figure`, `chart` (an Image holding the memory chart as PNG bytes), `result_html`,
    `delta_html`, `messages_html`, `history_html`, `controls_box`.
    Methods: `config()`, `set(**values)` (ValueError for a value the lab does not offer), `run(**values)`,
    `use_reference(name)`, `use_live()`, `replay(records=None, name=None, **values)`, `to_csv(path=None)`,
    `history_rows()`, `text_view()` (the panel as plain text, what a notebook without widgets shows).
    """

    def __init__(self, model: str | None = None, device: str | None = None, steps: int = 3, warmup: int = 1,
                 base: RunConfig | None = None, weights: str = "auto", runner=None, reference: str | None = None):
        from labkit.engine.device import device_summary, pick_device

        check_steps(steps, warmup)
        check_device(device)
        device = pick_device(device)
        self._start(device, steps, warmup, weights, runner)                  # the controller's state first …
        LabView.__init__(self, device_summary(device), model=model, base=base)   # … then the widgets showing it
        if reference is not None:
            try:
                self.use_reference(reference)
            except ValueError as e:
                self._say("error", f"cannot replay: {e}")


def lab(model: str | None = None, **kwargs) -> Lab:
    """Build the lab panel. On a GPU the default model is 'llama-3.2-1b'; without one, 'tiny' on the CPU."""
    return Lab(model=model, **kwargs)
