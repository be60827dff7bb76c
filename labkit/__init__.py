"""labkit: the engine behind QLoRA Memory Lab — real QLoRA steps, measured memory and time, and a theory beside them."""
__version__ = "0.1.0"

from labkit.config import RunConfig  # noqa: E402,F401
