"""Library messages on the kit's CPU and offline paths: each decided once, in notices.NOTICES.

bitsandbytes, imported on a CPU with AVX-512 BF16, tries to fetch a fused 4-bit kernel from the hub through the
`kernels` package. Offline, `kernels` logs "Skipping publisher trust check … offline mode" and then fails; without
`kernels`, the import fails; either way bitsandbytes logs "Failed to load CPU gemm_4bit_forward …". To see that on
any CPU, the child processes here make bitsandbytes take that branch (its has_avx512bf16 answers True while its CPU
backend is imported); everything after that is the libraries' own code, logging through their own loggers.
"""
import importlib.util
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from labkit.engine import notices

pytestmark = pytest.mark.long      # half a minute or more: started early (tests/conftest.py)

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

HAS_KERNELS = importlib.util.find_spec("kernels") is not None
KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward"
TRUST_NOTICE = "Skipping publisher trust check"


def child(body: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A fresh interpreter offline (as CI and the tests run), on bitsandbytes' AVX-512 BF16 path."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", FORCE_AVX512_BF16 + textwrap.dedent(body)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, "ops.py", 253, message, (), None)


def kernel_note_filter(name="bitsandbytes.backends.cpu.ops"):
    return next(f for f in logging.getLogger(name).filters if isinstance(f, notices._Decided))


def test_the_table_decides_each_listed_message_and_passes_the_rest(capsys, monkeypatch):
    notices.send_notes_to("stdout")                    # the default; a command-line test may have run main before
    monkeypatch.setattr(notices._Decided, "said", set())
    bnb = "bitsandbytes.backends.cpu.ops"
    noted = notices._Decided()
    message = KERNEL_NOTICE + " from kernels-community: No module named 'kernels'."
    assert noted.filter(record(bnb, message)) is False
    assert noted.filter(record(bnb, message)) is False
    assert noted.filter(record(bnb, "something else bitsandbytes wants to say")) is True
    trust = "Skipping publisher trust check for 'kernels-community/x' because Hugging Face Hub is in offline mode."
    assert noted.filter(record("kernels._internals.hf_hub", trust)) is False
    assert noted.filter(record("kernels._internals.hf_hub", "Kernel 'x' has no build for this torch")) is True
    assert noted.filter(record("somebody.else", message)) is True     # a logger decides only its own messages
    out, err = capsys.readouterr()
    assert out == notices.CPU_KERNEL_NOTE + "\n" and err == ""
    for n in notices.NOTICES:                          # every entry is whole: a decision, a reason, a note if noted
        assert n.kind in ("log", "warning") and n.decision in ("silence", "note", "pass") and n.why
        assert (n.note is not None) == (n.decision == "note")


def test_silenced_warnings_are_silent_and_others_show():
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notices.silence_warnings()
        warnings.warn("Paged optimizers are not supported on CPU. Falling back to non-paged optimizer behavior.")
        warnings.warn("The installed version of bitsandbytes was compiled without GPU support. 8-bit optimizers …")
        warnings.warn("something the learner must read")
    assert [str(w.message) for w in caught] == ["something the learner must read"]


def test_install_is_idempotent():
    notices.install()
    notices.install()
    for name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
        logger = logging.getLogger(name)
        assert sum(isinstance(f, notices._Decided) for f in logger.filters) == 1
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


def test_without_labkit_the_libraries_print_red_lines():
    """The control: the children below do reproduce what a learner saw (with `kernels` installed, its offline
    notice too)."""
    p = child("import bitsandbytes")
    assert p.returncode == 0, p.stderr[-2000:]
    assert KERNEL_NOTICE in p.stderr
    assert (TRUST_NOTICE in p.stderr) == HAS_KERNELS


def test_the_command_line_says_the_note_on_stderr():
    """stdout carries tables and JSON, so while the command line's main runs (as below) the note goes to stderr."""
    p = child("import labkit.cli\nwith labkit.cli.notices.notes_to('stderr'):\n    import bitsandbytes")
    assert p.returncode == 0, p.stderr[-2000:]
    assert KERNEL_NOTICE not in p.stderr and TRUST_NOTICE not in p.stderr
    assert p.stderr.count(notices.CPU_KERNEL_NOTE) == 1 and notices.CPU_KERNEL_NOTE not in p.stdout


def test_a_lesson_and_real_4bit_cpu_runs_print_nothing_on_stderr():
    """The class, not the instance. As lesson 05 does it, a labkit module first, then peft (which imports
    bitsandbytes) in the learner's own cell; then two 4-bit runs with the paged optimizer, one in bf16, and the
    Trainer path, offline on bitsandbytes' hub-kernel path: the note once, on stdout, and not one line on stderr."""
    p = child("""
        import labkit.engine.hardware
        from peft import LoraConfig
        import bitsandbytes
        import labkit
        from labkit.engine.trainer import train_with_trainer
        for precision in ("fp32", "bf16"):
            rec = labkit.run(labkit.RunConfig(seq_len=32, micro_batch=1, grad_accum=1, precision=precision),
                             steps=1, warmup=0, progress=False)
            assert rec["status"] == "ok" and rec["config"]["quant"] == "nf4", rec["error"]
        train_with_trainer(labkit.RunConfig(seq_len=32, micro_batch=1, grad_accum=1), steps=1, warmup=0,
                           device="cpu")
        print("done")
    """)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stderr == ""
    assert p.stdout.count(notices.CPU_KERNEL_NOTE) == 1 and p.stdout.endswith("done\n")


def test_a_note_decided_while_notes_were_off_is_said_when_a_rank_takes_over(capsys, monkeypatch):
    """A CPU rank is forked from a server that imported the libraries with notes off (data_parallel.start_method):
    what was decided there is said by the rank, once, where the parent's notes go; not when the parent said it."""
    monkeypatch.setattr(notices._Decided, "said", set())
    monkeypatch.setattr(notices._Decided, "held", [])
    filt = notices._Decided()
    message = KERNEL_NOTICE + " from kernels-community: No module named 'kernels'."
    with notices.notes_to("off"):                                   # the server's imports
        for _ in range(2):
            assert filt.filter(record("bitsandbytes.backends.cpu.ops", message)) is False
        assert capsys.readouterr() == ("", "")
        notices.take_over("stderr", ())                             # rank 0 of a command line's run
        said = capsys.readouterr()
        assert said.out == "" and said.err.count(notices.CPU_KERNEL_NOTE) == 1
        filt.filter(record("bitsandbytes.backends.cpu.ops", message))
        assert capsys.readouterr() == ("", "")                      # once
    monkeypatch.setattr(notices._Decided, "said", set())
    with notices.notes_to("off"):
        filt.filter(record("bitsandbytes.backends.cpu.ops", message))
        notices.take_over("stdout", (notices.CPU_KERNEL_NOTE,))     # the parent said it already
        assert capsys.readouterr() == ("", "")


def test_a_rank_speaks_where_its_parent_does_and_only_what_the_parent_has_not_said(capsys, monkeypatch):
    """The ranks of a data-parallel run share the parent's stdout (the command line's JSON): the parent hands over
    its stream and what it already said (engine.data_parallel does, to every rank; all but rank 0 get "off")."""
    monkeypatch.setattr(notices._Decided, "said", set())
    monkeypatch.setattr(notices._Decided, "held", [])
    filt = notices._Decided()
    message = KERNEL_NOTICE + " from kernels-community: No module named 'kernels'."
    with notices.notes_to("stderr"):
        handed = notices.handover()
    assert handed == ("stderr", ())
    with notices.notes_to("stdout"):
        notices.take_over("off", ())
        assert filt.filter(record("bitsandbytes.backends.cpu.ops", message)) is False
        assert capsys.readouterr() == ("", "")                      # rank 1: nothing, anywhere
        monkeypatch.setattr(notices._Decided, "said", set())
        notices.take_over(*handed)
        filt.filter(record("bitsandbytes.backends.cpu.ops", message))
        said = capsys.readouterr()
        assert said.out == "" and said.err.count(notices.CPU_KERNEL_NOTE) == 1
        monkeypatch.setattr(notices._Decided, "said", set())
        notices.take_over("stdout", (notices.CPU_KERNEL_NOTE,))   # the parent said it already
        filt.filter(record("bitsandbytes.backends.cpu.ops", message))
        assert capsys.readouterr() == ("", "")
