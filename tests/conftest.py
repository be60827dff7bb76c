"""Test session setup: offline, headless, quiet; tests marked `gpu` are skipped where CUDA is absent."""
import os
import warnings

# Before anything imports huggingface_hub, transformers or matplotlib: these read the environment at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

# Known noise that says nothing about the kit: bitsandbytes without a GPU, and jupyter's platformdirs notice.
warnings.filterwarnings("ignore", message=r".*bitsandbytes was compiled without GPU support.*")
warnings.filterwarnings("ignore", message=r".*Jupyter is migrating its paths.*")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has no GPU")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="module")
def shape_files(tmp_path_factory):
    """{"tiny", "qwen2", "mistral"} → a model name `RunConfig` accepts: the preset, or a config.json of
    `labkit.shapes.CHECK_CONFIGS` written for this module."""
    from labkit.shapes import write_check_configs

    paths = write_check_configs(tmp_path_factory.mktemp("shapes"))
    return {"tiny": "tiny", "qwen2": paths["qwen2-style"], "mistral": paths["mistral-style"]}
