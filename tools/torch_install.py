"""Which torch `make install` puts into a venv, decided for the machine it runs on. Prints pip's arguments.

    python tools/torch_install.py VENV_PYTHON 'torch==2.13.0' [INDEX]

- The venv already has a CUDA build of torch: print nothing and exit 3, so the Makefile keeps it (replacing it
  with a CPU build, or another CUDA one, would throw away what the machine's owner chose).
- INDEX given (make install TORCH_INDEX=…): that index, as asked.
- Linux with no NVIDIA GPU: PyPI's default torch there is a CUDA build of several GB; take PyTorch's CPU index
  first and PyPI second (`--extra-index-url`, so the rest still resolves), when that index answers within a few
  seconds. When it does not (a machine that reaches PyPI only), PyPI's build is what there is, and a line says so.
- Anywhere else (macOS, Windows, Linux with a GPU): PyPI's default build is the right one.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
KEEP = 3


def venv_has_cuda_torch(python: str) -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def has_nvidia_gpu() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def answers(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/torch/", timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 — any failure means "not reachable from here"
        return False


def choose(python: str, spec: str, index: str | None) -> tuple[list[str], str | None]:
    """(pip arguments, a line for the reader or None); no arguments at all means keep the torch there is."""
    if venv_has_cuda_torch(python):
        return [], "keeping the CUDA build of torch this venv already has"
    if index:
        return ["--index-url", index, spec], None
    if platform.system() == "Linux" and not has_nvidia_gpu():
        if answers(CPU_INDEX):
            return ["--extra-index-url", CPU_INDEX, spec], "no NVIDIA GPU here: torch's CPU build"
        return [spec], f"no NVIDIA GPU here, but {CPU_INDEX} does not answer: PyPI's torch build"
    return [spec], None


def main(argv: list[str]) -> int:
    python, spec, index = argv[0], argv[1], (argv[2] if len(argv) > 2 and argv[2] else None)
    args, line = choose(python, spec, index)
    if line:
        print(f"torch: {line}", file=sys.stderr)
    print(" ".join(args))
    return 0 if args else KEEP


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
