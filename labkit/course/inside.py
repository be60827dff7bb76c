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
"Python API") and `labkit.course.lessons`. Each part is imported when a lesson first asks for it: a lesson that
takes `t4_profile` does not wait for the Trainer's imports (8 s here).
"""
import importlib

# name → (module, attribute); attribute None: the module itself
PARTS = {
    "device_facts": ("labkit.engine.hardware", "device_facts"),
    "format_doctor": ("labkit.engine.hardware", "format_doctor"),
    "t4_profile": ("labkit.engine.hardware", "t4_profile"),
    "T4_TOTAL_MEMORY": ("labkit.engine.hardware", "T4_TOTAL_MEMORY"),
    "load_model": ("labkit.engine.models", "load_model"),
    "lora_config": ("labkit.engine.models", "lora_config"),
    "quantization_config": ("labkit.engine.models", "quantization_config"),
    "label_tokens": ("labkit.engine.runner", "label_tokens"),
    "data": ("labkit.engine.data", None),
    "trainer": ("labkit.engine.trainer", None),
    "measure": ("labkit.engine.measure", None),
    "free_memory": ("labkit.engine.measure", "free_memory"),
}
__all__ = list(PARTS)


def __getattr__(name):
    if name not in PARTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = PARTS[name]
    found = importlib.import_module(module)
    return found if attribute is None else getattr(found, attribute)
