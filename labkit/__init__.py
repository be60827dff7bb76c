"""labkit: the engine behind QLoRA Memory Lab — real QLoRA steps, measured memory and time, and a theory beside them.

    import labkit
    labkit.lab()                                   # the widget lab (labkit.lab is also importable as a module)
    labkit.experiment.run(labkit.RunConfig())      # one measured run with the theory beside it
"""
import importlib

__version__ = "0.1.0"

from labkit.config import RunConfig  # noqa: E402,F401

_LAZY = {"lab", "lessons", "experiment", "theory", "measure", "runner", "charts", "sweep", "batch_search",
         "trainer", "hardware", "exercises", "shapes", "models", "data"}


def __getattr__(name):
    """Submodules load on first use, so `import labkit` stays light (no torch until a run needs it)."""
    if name in _LAZY:
        return importlib.import_module(f"labkit.{name}")
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")
