"""Test session setup: offline, headless, quiet; tests marked `gpu` are skipped where CUDA is absent."""
import gc
import os
import warnings

# Before anything imports huggingface_hub, transformers or matplotlib: these read the environment at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Under pytest-xdist (make test runs one worker per core), each worker and what it starts (notebook kernels, ranks,
# fresh processes) computes on one thread: two workers with two threads each would fight over two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

# Known noise that says nothing about the kit: bitsandbytes without a GPU, and jupyter's platformdirs notice.
warnings.filterwarnings("ignore", message=r".*bitsandbytes was compiled without GPU support.*")
warnings.filterwarnings("ignore", message=r".*Jupyter is migrating its paths.*")


def pytest_collection_finish(session):
    """What is alive once the tests are collected (torch, transformers, peft, the test modules: ~10^6 objects) stays
    for the whole session, so it is moved out of the collector's sight (gc.freeze). Each of the thousands of
    gc.collect() calls the runs make (free_memory, live_tensor_bytes) then walks only what the tests made since:
    tests/engine/test_failed_runs.py takes 42 s instead of 92. Tensors made before this point are invisible to
    live_tensor_bytes; every test measures what its own runs leave, which they make later."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    # Longest first: the lessons (nbval's notebooks, the whole-lesson executions), then the files marked `long`,
    # then the rest. pytest-xdist hands files out in this order (make test passes --no-loadscope-reorder: by default
    # it orders files by their number of tests, which put a 90-second file of 3 tests last), so the end of the run
    # is short files that fill both workers, not one long file running alone.
    def order(item):
        if item.path.suffix == ".ipynb" or item.get_closest_marker("lessons") is not None:
            return 0
        return 1 if item.get_closest_marker("long") is not None else 2
    items.sort(key=order)
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
