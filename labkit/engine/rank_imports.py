"""What the server process that forks the CPU ranks of a data-parallel run imports, once (data_parallel.py): the
libraries every rank needs, so that each rank starts with them loaded instead of importing torch, transformers and
peft again. The server runs nothing else. Notes are off while it imports; a rank says what was decided here where
its parent's notes go (notices.take_over)."""
from labkit.engine import notices

notices.send_notes_to("off")

import torch.distributed  # noqa: E402,F401
import peft  # noqa: E402,F401  (imports bitsandbytes and accelerate too)
from transformers import AutoModelForCausalLM  # noqa: E402,F401
from transformers.models.llama import modeling_llama  # noqa: E402,F401  (the tiny model and the Llama presets)

from labkit.engine import data_parallel, rank_context, runner  # noqa: E402,F401
