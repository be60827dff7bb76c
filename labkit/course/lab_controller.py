"""What the lab does when asked: runs (through `labkit.experiment.run`), replays of reference records, the
history of this kernel with each entry's delta against the one before it, the messages, and the CSV export.

`LabController` is the non-widget half of `labkit.course.lab.Lab`; `LabView` is the other half. The controller owns
`history`, `messages`, `busy`, `last_delta` and `last_compared_with`. Each run or replay starts the panel's message
area afresh (an OOM's message does not linger through the next good run); `messages` keeps them all. From the view
it uses the controls (`set()`, `config()`), the chosen reference set (`reference_name`, `reference_pool`,
`use_reference()`) and the rendering (`_show_busy`, `_show_loading`, `_on_step`, `_show_outcome`, `_render_messages`,
`_render_record`).
Failures never escape: a failed run, an OOM or a record that cannot be shown becomes a message.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

from labkit.course.lab_controls import LIVE
from labkit.report.reference import as_reference, matches, missing_combination_text, provenance, reference_sets
from labkit.record import RunRecord, typed
from labkit.report.html import lab_of
from labkit.report.text import config_label, delta_text, history_csv, history_row, labels_text
from labkit.units import fmt_row

COMPARED_FIELDS = ("gradient_checkpointing", "micro_batch", "grad_accum", "precision", "seq_len")
OOM_ADVICE = ("Change the micro-batch first (keep the effective batch with more accumulation), then the sequence "
              "length, then the LoRA rank.")


class LabController:
    """Runs, replays, history and messages of the lab. See `labkit.course.lab.Lab` for the public handle."""

    def _start(self, device: str, steps: int, warmup: int, weights: str, runner=None):
        """The state before any widget exists: how to run, and an empty history."""
        self.device, self.steps, self.warmup, self.weights = device, steps, warmup, weights
        self._runner = runner                     # None: labkit.experiment.run
        self.history: list[dict] = []
        self.messages: list[str] = []
        self._levels: list[str] = []              # "info", "advice", "error" or "oom", one per message
        self._shown_from = 0                      # the panel shows messages[_shown_from:], the latest action's
        self.last_delta = "no run yet"
        self.last_compared_with = None
        self.busy = False

    def _say(self, level: str, text: str):
        self.messages.append(text)
        self._levels.append(level)
        self._render_messages()

    def _fresh_messages(self):
        """A new action begins: the panel's message area starts empty (the old messages stay in `messages`)."""
        self._shown_from = len(self.messages)
        self._render_messages()

    # -- running -------------------------------------------------------------------------------------------------------
    def run(self, **values) -> dict | None:
        """Press Run: set any given controls, run real steps, show the results. Returns the record, or None when
        nothing ran (bad settings, an error outside the run). Never raises for a failed run."""
        if self.busy:
            self._say("info", "a run is already in progress: wait for it to finish")
            return None
        self._fresh_messages()
        if self.reference_name is not None:
            self._say("info", f"nothing runs while reference set '{self.reference_name}' is chosen: press Replay "
                              f"to see its record, or choose '{LIVE}' under 'results from' (panel.use_live()) "
                              "to run here")
            return None
        cfg = self._config_with(values)
        if cfg is None:
            return None
        record = self._run_busy(cfg)
        if record is None:
            return None
        self._show_outcome(typed(record).status)
        self._add(record, source="run")
        return record

    def _config_with(self, values: dict):
        """Set the given controls and read the config back; None, with the reason said, if a value is refused."""
        try:
            self.set(**values)
            return self.config()
        except ValueError as e:
            self._say("error", f"settings rejected: {e}")
            return None

    def _run_busy(self, cfg):
        """The run itself, with the panel busy: the record, or None with a message saying why there is none."""
        runner = self._runner
        if runner is None:
            from labkit import experiment
            runner = experiment.run
        arithmetic_gpus = None
        if cfg.num_gpus > 1 and cfg.num_gpus > getattr(self, "gpus_visible", 0):
            # the GPU control is arithmetic here: measure one process, say what the N counts for
            self._say("info", f"GPUs is arithmetic on this machine ({self._gpus_seen()}): this run measures one "
                              f"process; the effective batch {cfg.effective_batch_text} counts {cfg.num_gpus} GPUs "
                              "that would each run the same micro-batch (lesson 03 runs several processes for real)")
            arithmetic_gpus, cfg = cfg.num_gpus, cfg.replace(num_gpus=1)
        self.busy = True
        self._show_busy()
        self._show_loading()
        record = None
        try:
            record = runner(cfg, steps=self.steps, warmup=self.warmup, device=self.device, weights=self.weights,
                            on_step=self._on_step)
            if arithmetic_gpus is not None:              # the settings' N, labelled: one process was measured
                record = typed(record)
                record.config["num_gpus"] = arithmetic_gpus
                record.labels.append("gpus-arithmetic")
        except ValueError as e:
            self._say("error", f"settings rejected: {e}")
        except KeyboardInterrupt:
            self._say("error", "run interrupted: nothing recorded")
        except Exception as e:  # noqa: BLE001 — anything else is a message, never a traceback wall
            self._say("error", f"the run failed outside the measured steps: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}")
        finally:
            self.busy = False
            self._show_busy()
            if record is None:
                from labkit.engine.measure import free_memory
                free_memory()
                self._show_outcome(None)
        return record

    def _gpus_seen(self) -> str:
        seen = getattr(self, "gpus_visible", 0)
        return "no GPU" if seen == 0 else f"{seen} GPU{'s' if seen != 1 else ''} visible"

    # -- replaying -----------------------------------------------------------------------------------------------------
    def replay(self, records=None, name: str | None = None, **values) -> list[RunRecord]:
        """Replay reference results; returns what was added to the history.
        Without `records`: switch to the set `name` (if given), set any given controls, and show the set's record
        for these settings. With `records` (a record or a list): add them all, labelled "reference"."""
        self._fresh_messages()
        if records is not None:
            if not isinstance(records, Mapping) and (isinstance(records, (str, bytes))
                                                     or not isinstance(records, Iterable)):
                raise ValueError(f"replay takes a record or a list of records (labkit.load_records(path) reads "
                                 f"them), got {type(records).__name__} {records!r:.60}")
            chosen = [as_reference(r) for r in ([records] if isinstance(records, Mapping) else list(records))]
        else:
            found = self._find_in_set(name, values)
            chosen = [copy.deepcopy(found)] if found else []
        for rec in chosen:
            self._add(rec, source="reference")
        if chosen:
            self._show_outcome(chosen[-1].status, replayed=True)
        return chosen

    def _find_in_set(self, name: str | None, values: dict) -> RunRecord | None:
        """The chosen set's record for the controls (after `values`), or None with a message saying why not."""
        try:
            if name is not None and name != self.reference_name:
                self.use_reference(name)
        except ValueError as e:
            self._say("error", f"cannot replay: {e}")
            return None
        if self.reference_name is None:
            self._say("info", "choose a reference set first, under 'results from' (or panel.use_reference(name)); "
                              f"recorded sets: {', '.join(reference_sets()) or 'none'}")
            return None
        cfg = self._config_with(values)
        if cfg is None:
            return None
        found = [r for r in self.reference_pool if matches(r, cfg)]
        if not found:
            self._say("info", missing_combination_text(self.reference_name, self.reference_pool, cfg))
            return None
        return found[-1]

    # -- the history ---------------------------------------------------------------------------------------------------
    def _previous(self, record: RunRecord) -> RunRecord | None:
        """The entry a new one is compared with: the previous live run, or the previous replay of the same set."""
        key = (lab_of(record)["source"], record.extra.get("reference_set"))
        for entry in reversed(self.history[:-1]):
            if (lab_of(entry)["source"], entry.extra.get("reference_set")) == key:
                return entry
        return None

    def _add(self, record, source: str):
        record = copy.copy(typed(record))            # the history's own entry: the caller's record stays as it was
        record.extra = {**record.extra, "lab": {"run": len(self.history) + 1, "source": source,
                                                "provenance": provenance(record) or None}}
        self.history.append(record)
        try:
            self._show(record)
        except Exception as e:  # noqa: BLE001 — a record the panel cannot display is a message, not a traceback
            self._say("error", f"run {lab_of(record)['run']} is in the history but could not be shown: "
                               f"{type(e).__name__}: {e}")

    def _show(self, record: RunRecord):
        """The delta against the previous comparable entry, the messages for this one, then the panel."""
        prev = self._previous(record)
        lab = lab_of(record)
        self.last_delta = delta_text(prev, record, names=(f"run {lab['run']}",
                                                          f"run {lab_of(prev)['run']}" if prev else ""))
        self.last_compared_with = compared_with(prev, record)
        where = f" ({lab['provenance']})" if lab["provenance"] else ""
        if record.status == "ok":
            self._say("info", f"run {lab['run']} done{where}: {config_label(record)} · {labels_text(record)}")
        elif record.status == "oom":
            self._say("oom", oom_text(record))
        else:
            self._say("error", f"run failed{where}: {record.error}")
        for w in record.warnings:
            self._say("advice", f"advice: {w}")
        self._render_record(record)

    def history_rows(self) -> list[dict]:
        """One flat dict per history entry (the CSV columns)."""
        return [history_row(r) for r in self.history]

    def to_csv(self, path=None) -> str:
        """The history as CSV text; also written to `path` when given. Returns the text."""
        text = history_csv(self.history)
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        return text


def compared_with(previous: RunRecord | None, record: RunRecord) -> str:
    """Which entry the delta line compares against, with its settings:
    "run 3 (gc on · mb 2 · ga 4 · fp16 · seq 512, the previous replay of set 'x')"."""
    ref_set = typed(record).extra.get("reference_set")
    if lab_of(record)["source"] == "run":
        kind = "the previous live run"
    elif ref_set:
        kind = f"the previous replay of set '{ref_set}'"
    else:
        kind = "the previous replayed record"
    if previous is None:
        return f"nothing yet (no {kind[4:]})"
    return f"run {lab_of(previous)['run']} ({config_label(previous, COMPARED_FIELDS)}, {kind})"


def oom_text(record: RunRecord) -> str:
    """The message for an out-of-memory record: simulated here, real here, or recorded elsewhere."""
    record = typed(record)
    error = str(record.error or "").removeprefix("simulated OOM: ")
    lab = lab_of(record)
    if lab["source"] == "reference":
        short = ". ".join(error.split(". ")[:2]).rstrip(".")
        return (f"run {lab['run']} ({lab['provenance']}): out of memory when it was recorded: "
                f"{short}. Theory's peak for it: {fmt_row(record.theory.peak)[0]}. {OOM_ADVICE}")
    simulated = "simulated-oom" in record.labels
    return (f"out of memory{' (simulated: over the declared budget)' if simulated else ''}: {error}. The kernel is "
            f"fine, memory was freed. {OOM_ADVICE}")
