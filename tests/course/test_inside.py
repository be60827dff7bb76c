"""labkit.course.inside: the engine's parts a lesson opens up, each the engine's own, imported when first asked for."""
import importlib
import pathlib
import subprocess
import sys

import pytest

import labkit.course.inside as inside

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_each_part_is_the_engines_own_and_documented():
    assert inside.__all__ and all(n in inside.__doc__ for n in inside.__all__), inside.__all__
    for name in inside.__all__:
        module, attribute = inside.PARTS[name]
        real = importlib.import_module(module)
        assert getattr(inside, name) is (real if attribute is None else getattr(real, attribute)), name
    with pytest.raises(AttributeError):
        inside.not_a_part


def test_taking_one_part_does_not_import_the_others():
    """Lessons 00, 02, 06 and 07 take only `t4_profile` or the doctor's facts: they must not wait for the Trainer's
    imports (8 s here, in every kernel)."""
    code = ("import sys; from labkit.course.inside import t4_profile, T4_TOTAL_MEMORY, device_facts; "
            "print('labkit.engine.trainer' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
