"""bitsandbytes' missing-CPU-kernel notice: captured at its logger, shown once as one calm line on stdout.

bitsandbytes logs "Failed to load CPU gemm_4bit_forward …" when it is imported on a CPU with AVX-512 BF16 and the
optional `kernels` package is absent. To see it on any CPU, the child processes here make bitsandbytes take that
branch (its has_avx512bf16 answers True while its CPU backend is imported); everything after that is bitsandbytes'
own code, logging through its own logger.
"""
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from labkit.engine import notices

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FORCE_AVX512_BF16 = textwrap.dedent("""
    import importlib.abc, importlib.util, sys

    class ForceAvx512Bf16(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "bitsandbytes.backends.cpu.ops":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            real_exec = spec.loader.exec_module

            def exec_module(module):
                sys.modules["bitsandbytes.functional"].has_avx512bf16 = lambda: True
                real_exec(module)
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, ForceAvx512Bf16())
""")

needs_the_notice = pytest.mark.skipif(importlib.util.find_spec("kernels") is not None,
                                      reason="`kernels` is installed, so bitsandbytes has nothing to complain about")


def child(body: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", FORCE_AVX512_BF16 + textwrap.dedent(body)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord(notices.BNB_CPU_LOGGER, logging.WARNING, "ops.py", 253, message, (), None)


def test_the_filter_drops_only_the_kernel_notice_and_speaks_once(capsys):
    notices.send_notes_to("stdout")                    # the default; a command-line test may have run main before
    kernel_notice = notices._CpuKernelNotice()
    message = notices.BNB_CPU_KERNEL_MESSAGE + " from kernels-community: No module named 'kernels'."
    assert kernel_notice.filter(record(message)) is False
    assert kernel_notice.filter(record(message)) is False
    assert kernel_notice.filter(record("something else bitsandbytes wants to say")) is True
    out, err = capsys.readouterr()
    assert out == notices.CPU_KERNEL_NOTE + "\n" and err == ""


def test_install_is_idempotent():
    notices.install()
    notices.install()
    logger = logging.getLogger(notices.BNB_CPU_LOGGER)
    assert sum(isinstance(f, notices._CpuKernelNotice) for f in logger.filters) == 1
    with pytest.raises(ValueError, match="stdout"):
        notices.send_notes_to("nowhere")


def test_the_command_line_sends_notes_to_stderr_only_while_it_runs(capsys):
    """Importing labkit.cli changes nothing for a notebook; its main sends notes to stderr, then puts them back."""
    from labkit import cli
    notices.send_notes_to("stdout")
    seen = []
    original = cli._main
    try:
        cli._main = lambda argv: seen.append(notices._stream_name) or 0
        assert cli.main(["doctor"]) == 0
    finally:
        cli._main = original
    assert seen == ["stderr"] and notices._stream_name == "stdout"


@needs_the_notice
def test_without_labkit_bitsandbytes_prints_the_red_line():
    """The control: the children below do reproduce the notice a learner saw."""
    p = child("import bitsandbytes")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Failed to load CPU gemm_4bit_forward" in p.stderr


@needs_the_notice
@pytest.mark.parametrize("body, stream", [
    # lesson 05: a labkit module first, then peft (which imports bitsandbytes) in the learner's own cell
    ("import labkit.engine.hardware\nfrom peft import LoraConfig\nimport bitsandbytes", "stdout"),
    # the command line: stdout carries tables and JSON, so while its main runs (as below) the note goes to stderr
    ("import labkit.cli\nwith labkit.cli.notices.notes_to('stderr'):\n    import bitsandbytes", "stderr"),
])
def test_the_notice_becomes_one_calm_line(body, stream):
    p = child(body)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Failed to load" not in p.stderr
    assert getattr(p, stream).count(notices.CPU_KERNEL_NOTE) == 1
    assert notices.CPU_KERNEL_NOTE not in getattr(p, "stderr" if stream == "stdout" else "stdout")


@needs_the_notice
def test_two_real_4bit_cpu_runs_show_the_note_once():
    p = child("""
        import labkit
        for _ in range(2):
            rec = labkit.run(labkit.RunConfig(seq_len=32, micro_batch=1, grad_accum=1), steps=1, warmup=0,
                             progress=False)
            assert rec["status"] == "ok" and rec["config"]["quant"] == "nf4", rec["error"]
        print("done")
    """)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Failed to load" not in p.stderr
    assert p.stdout.count(notices.CPU_KERNEL_NOTE) == 1 and p.stdout.endswith("done\n")
