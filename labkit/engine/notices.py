"""What the kit does with each message its libraries print on the kit's own paths: one table, decided per message.

A notebook shows anything written to stderr as red text, and a learner reads red text as an error. Python prints an
unconfigured library logger's warnings on stderr, and `warnings.warn` too. Most of what transformers, peft,
bitsandbytes, accelerate, kernels and huggingface_hub say on a CPU or offline run asks nothing of the learner, so
each message the kit's paths can reach is listed in NOTICES with one decision:

    silence   dropped: it says nothing the learner can act on, or the record already says it (a label)
    note      dropped, and one calm line said instead, once per process, on stdout (plain text in a notebook);
              the command line sends it to stderr, since its stdout carries tables and JSON
    pass      shown as the library wrote it: the learner must act (a wrong setting, a real failure)

Anything not in the table passes unchanged. `install()` puts one filter on each listed logger and one warnings
filter per silenced warning; labkit.engine calls it when imported, before any engine module imports bitsandbytes
(peft imports it too, so `from peft import LoraConfig` in a lesson is covered once a labkit.engine module has been
imported). tests/engine/test_notices.py forces the messages that a machine without AVX-512 BF16 would not print
by itself (bitsandbytes' hub-kernel path, offline) and shows the control: the raw lines without the kit; a real
4-bit run and the Trainer path there must leave stderr empty, so `make test-newest` finds tomorrow's new message.

How the list was made: the kit's CPU and offline paths (runs in fp32, bf16 and fp16, with and without checkpointing
and 4-bit, the paged and plain optimizers, the Trainer path, calibrate, a hub preset offline) were run at the newest
end with every log record and warning captured; the silenced warnings of older releases (deprecations, Jupyter's
paths) are the ones the kit silenced before this table. The entry that passes is kept to say it was decided.
"""
from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from dataclasses import dataclass

CPU_KERNEL_NOTE = ("note: 4-bit matmul runs the slower CPU path, dequantize then a plain PyTorch matmul "
                   "(bitsandbytes' optional fused CPU kernel, fetched from the Hugging Face Hub by the `kernels` "
                   "package, is not available here); this is expected on a CPU")


@dataclass(frozen=True)
class Notice:
    kind: str        # "log": a logger's record; "warning": a warnings.warn
    source: str      # the logger's name, or the library that warns (for the reader: warnings match by message)
    message: str     # a regular expression matched at the start of the message (warnings: as Python does)
    decision: str    # "silence" | "note" | "pass"
    why: str
    note: str | None = None

    def matches(self, text: str) -> bool:
        return re.match(self.message, text) is not None


NOTICES = (
    Notice("log", "bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward", "note",
           "on a CPU with AVX-512 BF16, bitsandbytes tries a fused 4-bit kernel from the hub; without `kernels`, "
           "offline or unreachable, it falls back to dequantize + matmul, as a CPU run expects",
           CPU_KERNEL_NOTE),
    Notice("log", "kernels._internals.hf_hub", r"Skipping publisher trust check for .* offline mode", "silence",
           "only says the hub is offline; the kernel then fails to load and the note above says what it means"),
    Notice("warning", "bitsandbytes", r".*Paged optimizers are not supported on CPU", "silence",
           "the record says it: label paging-off-on-cpu"),
    Notice("warning", "bitsandbytes", r".*compiled without GPU support", "silence",
           "a CPU build on a CPU machine; `labkit doctor` says what this runtime can run"),
    Notice("warning", "transformers", r".*`gradient_checkpointing_enable` is deprecated", "silence",
           "the kit's own call, kept for transformers releases that lack the new name"),
    Notice("warning", "transformers", r".*`is_gradient_checkpointing` is deprecated", "silence",
           "the kit's own read, kept for transformers releases that lack the new name"),
    Notice("warning", "torch", r".*torch.utils.checkpoint: the use_reentrant parameter", "silence",
           "the kit passes use_reentrant=False itself; the warning is about callers that do not"),
    Notice("warning", "jupyter_core", r".*Jupyter is migrating its paths", "silence",
           "about Jupyter's own configuration folders, nothing in a lesson"),
    Notice("log", "kernels", r"", "pass",
           "anything else `kernels` says (a kernel that fails to load online, a bad cache) may need the learner"),
)

_stream_name = "stdout"     # "stdout" or "stderr": looked up when a note is shown, so capture and redirects work


def send_notes_to(stream_name: str) -> None:
    """Where the calm notes go: "stdout" (notebooks, scripts), "stderr" (the command line) or "off" (the ranks of
    a data-parallel run but the first: one note per run, not one per process)."""
    if stream_name not in ("stdout", "stderr", "off"):
        raise ValueError(f"notes go to 'stdout', 'stderr' or 'off', not {stream_name!r}")
    global _stream_name
    _stream_name = stream_name


def say(text: str) -> None:
    """One calm line from the kit itself, where the notes go (never on a notebook's stderr, never in --json's
    stdout)."""
    if _stream_name != "off":
        print(text, file=getattr(sys, _stream_name), flush=True)


def handover() -> tuple[str, tuple[str, ...]]:
    """What a child process needs to speak as this one would: where notes go, and the notes already said."""
    return _stream_name, tuple(sorted(_Decided.said))


def take_over(stream_name: str, said) -> None:
    """In a child process: notes go where the parent's went, and what the parent said is not said again. A note
    decided here before, while notes were off (a forked rank: in the imports of the server it was forked from), is
    said now, unless the parent said it."""
    send_notes_to(stream_name)
    _Decided.said.update(said)
    for note in _Decided.held:
        if note not in _Decided.said:
            _Decided.said.add(note)
            say(note)
    _Decided.held.clear()


@contextlib.contextmanager
def notes_to(stream_name: str):
    """send_notes_to for the length of a `with` block (the command line's main), then back to where they went."""
    before = _stream_name
    send_notes_to(stream_name)
    try:
        yield
    finally:
        send_notes_to(before)


def decide(kind: str, source: str, text: str) -> Notice | None:
    """The table's entry for a message, or None (not listed: it passes)."""
    for notice in NOTICES:
        if notice.kind == kind and (kind == "warning" or notice.source == source) and notice.matches(text):
            return notice
    return None


class _Decided(logging.Filter):
    """On one logger: drops what NOTICES silences or notes; a note is said the first time, once per process."""

    said: set = set()        # the notes said in this process, shared by every logger's filter
    held: list = []          # notes decided while notes were off, not said: take_over says them

    def filter(self, record: logging.LogRecord) -> bool:
        notice = decide("log", record.name, record.getMessage())
        if notice is None or notice.decision == "pass":
            return True
        if notice.decision == "note" and notice.note not in self.said:
            if _stream_name == "off":
                if notice.note not in self.held:
                    self.held.append(notice.note)
            else:
                self.said.add(notice.note)
                print(notice.note, file=getattr(sys, _stream_name), flush=True)
        return False


def silence_warnings() -> None:
    """A warnings filter for each warning the table silences. Python keeps one copy of a filter however often it
    is added; inside `warnings.catch_warnings()` the filters last until the block ends."""
    for notice in NOTICES:
        if notice.kind == "warning" and notice.decision == "silence":
            warnings.filterwarnings("ignore", message=notice.message)


def install() -> None:
    """A filter on each logger the table names (once; calling again changes nothing), and the warnings filters.
    getLogger returns the object the library gets later, so this works before the library is imported."""
    for name in {n.source for n in NOTICES if n.kind == "log" and n.decision != "pass"}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Decided) for f in logger.filters):
            logger.addFilter(_Decided())
    silence_warnings()
