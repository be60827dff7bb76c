"""Library notices that read like failures to a learner, replaced by one calm line each.

bitsandbytes, on a CPU with AVX-512 BF16, tries to load an optional fused 4-bit matmul kernel from the `kernels`
package when it is imported, and when that package is absent it logs

    Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make …

through its module logger. With logging unconfigured, Python prints that on stderr: red in a notebook, read as an
error. Nothing failed: 4-bit matmuls dequantize the weight and multiply in PyTorch, slower, as a CPU run expects.
A filter on that one logger drops the record and prints CPU_KERNEL_NOTE instead, once per process, on stdout (plain
text in a notebook). The command line sends it to stderr, since its stdout carries tables and JSON.

Installed when labkit.engine is imported, before anything in the kit imports bitsandbytes (peft imports it too,
so `from peft import LoraConfig` in a lesson is covered once a labkit.engine module has been imported).
Nothing else is filtered: other bitsandbytes messages, and all of stderr, pass as before.
"""
from __future__ import annotations

import contextlib
import logging
import sys

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_CPU_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward"
CPU_KERNEL_NOTE = ("note: 4-bit matmul runs the slower CPU path, dequantize then a plain PyTorch matmul "
                   "(bitsandbytes' optional fused CPU kernel is not installed); this is expected on CPU")

_stream_name = "stdout"     # "stdout" or "stderr": looked up when the note is shown, so capture and redirects work


def send_notes_to(stream_name: str) -> None:
    """Where the calm notes go: "stdout" (notebooks, scripts) or "stderr" (the command line)."""
    if stream_name not in ("stdout", "stderr"):
        raise ValueError(f"notes go to 'stdout' or 'stderr', not {stream_name!r}")
    global _stream_name
    _stream_name = stream_name


@contextlib.contextmanager
def notes_to(stream_name: str):
    """send_notes_to for the length of a `with` block (the command line's main), then back to where they went."""
    before = _stream_name
    send_notes_to(stream_name)
    try:
        yield
    finally:
        send_notes_to(before)


class _CpuKernelNotice(logging.Filter):
    """Drops bitsandbytes' missing-kernel record; the first one dropped in this process prints CPU_KERNEL_NOTE."""

    def __init__(self):
        super().__init__()
        self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(BNB_CPU_KERNEL_MESSAGE):
            return True                          # any other message from that logger passes unchanged
        if not self.shown:
            self.shown = True
            print(CPU_KERNEL_NOTE, file=getattr(sys, _stream_name), flush=True)
        return False


def install() -> None:
    """Put the filter on bitsandbytes' CPU logger (once; calling again changes nothing). The logger object is the
    one bitsandbytes gets from logging.getLogger later, so the filter is in place before its import runs."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _CpuKernelNotice) for f in logger.filters):
        logger.addFilter(_CpuKernelNotice())
