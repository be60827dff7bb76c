"""The kit's own parts that the lessons open up, to show how a run is made: each is the function the kit itself runs,
named here so that a lesson imports one documented place rather than the engine's modules (whose layout may change).

    device_facts, format_doctor        lessons 00, 06   what `labkit doctor` reads and prints
    t4_profile, T4_TOTAL_MEMORY        lessons 02, 06, 07   a bigger GPU capped at a Colab T4's 14.75 GiB
    load_model                         lessons 03, 05   the 4-bit base with LoRA adapters, as every run loads it
    lora_config, quantization_config   lesson 05        the two configs behind it
    label_tokens                       lesson 03        the tokens a micro-batch's loss is averaged over
    data                               lesson 03        the course texts, tokenized into micro-batches
    trainer                            lesson 05        the same steps through Hugging Face's Trainer
    measure, free_memory               exercise 06      bytes of live tensors; what a run does after an OOM

For everything else a lesson uses the public API (`labkit.run`, `labkit.estimate`, `labkit.lab`, …, README's
"Python API") and `labkit.course.lessons`.
"""
from labkit.engine import data, measure, trainer  # noqa: F401
from labkit.engine.hardware import T4_TOTAL_MEMORY, device_facts, format_doctor, t4_profile  # noqa: F401
from labkit.engine.measure import free_memory  # noqa: F401
from labkit.engine.models import load_model, lora_config, quantization_config  # noqa: F401
from labkit.engine.runner import label_tokens  # noqa: F401
