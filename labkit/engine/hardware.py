"""What machine am I on? The preflight ("doctor") facts a lesson needs before it trains anything.

Two rules the course teaches live here:
- bf16 is decided from the compute capability (native from 8.0, Ampere), never from
  `torch.cuda.is_bf16_supported()`: on a T4 (7.5) that call can answer True because bf16 runs through emulation,
  slowly. We report both, side by side, so the trap is visible.
- A bigger GPU can stand in for a T4's memory: `t4_profile()` caps this process at the 15,835,660,288 bytes
  (14.75 GiB) that Colab reports for a T4, less the CUDA context a T4 pays out of them. Figures taken that way are
  "T4-profile", not T4.
"""
from __future__ import annotations

import os
import platform
import sys
import threading
from importlib import metadata

from labkit.config import native_bf16, resolve_precision
from labkit.units import GiB, fmt_bytes

T4_TOTAL_MEMORY = 15_835_660_288   # bytes Colab's T4 reports as total_memory = 14.75 GiB
HUB_URL = "https://huggingface.co"

T4_FACTS = {
    "architecture": "Turing, compute capability 7.5 (sm_75)",
    "memory": "16 GB GDDR6, 320 GB/s; Colab reports 15,835,660,288 B = 14.75 GiB",
    "fp16_tensor_tflops": 65.0,
    "fp32_tflops": 8.1,
    "bf16": "no bf16 (or TF32) tensor cores: train in fp16 with bnb_4bit_compute_dtype=float16",
    "attention": "no FlashAttention-2: use SDPA",
    "bitsandbytes": "NF4 weights and 8-bit optimizers are supported",
}


def _version(package: str) -> str | None:
    """Installed version without importing the package (importing bitsandbytes can take seconds)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _host_memory() -> tuple[int | None, int | None]:
    """(total, available) host RAM in bytes, via psutil if present, else os.sysconf (Linux)."""
    try:
        import psutil
        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return None, None


def hub_status(timeout: float = 3.0) -> tuple[bool, str]:
    """(reachable, reason). A HEAD request to the Hugging Face Hub, run in a daemon thread so that a slow DNS
    lookup (which the socket timeout does not cover) cannot hang the doctor longer than `timeout` + a moment."""
    for var in ("LABKIT_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False, f"offline mode ({var} is set)"
    result = [False, f"no answer within {timeout:g} s"]

    def probe():
        import urllib.request
        try:
            req = urllib.request.Request(HUB_URL, method="HEAD", headers={"User-Agent": "labkit-doctor"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                result[:] = [True, f"HTTP {resp.status}"]
        except Exception as e:  # noqa: BLE001 — any failure (DNS, TLS, proxy refusal, HTTP 4xx/5xx) = not reachable
            result[:] = [False, f"{type(e).__name__}: {e}"[:160]]

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result[0]), str(result[1])


def _alloc_conf() -> str:
    # torch ≥ 2.9 also reads PYTORCH_ALLOC_CONF; PYTORCH_CUDA_ALLOC_CONF is the name the course (and Colab) use
    return os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") or os.environ.get("PYTORCH_ALLOC_CONF", "")


def device_facts(device=None, check_hub: bool = True) -> dict:
    """Facts about `device` (None = the first GPU if there is one, else the CPU) and the software around it."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} asked for, but torch sees no CUDA GPU")
    facts: dict = {"type": dev.type}
    # the allocator reads PYTORCH_CUDA_ALLOC_CONF once, when CUDA initialises: was that before we got here?
    cuda_was_initialized = bool(torch.cuda.is_available() and torch.cuda.is_initialized())

    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        capability = [props.major, props.minor]
        free, _ = torch.cuda.mem_get_info(index)   # note: this creates the CUDA context if nothing has yet
        facts.update(name=props.name, index=index, capability=capability, total_memory=int(props.total_memory),
                     free_memory=int(free), memory_kind="GPU memory",
                     multiprocessors=props.multi_processor_count, gpu_count=torch.cuda.device_count())
        try:
            facts["torch_says_bf16_supported"] = bool(torch.cuda.is_bf16_supported())
        except Exception:  # noqa: BLE001
            facts["torch_says_bf16_supported"] = None
        facts["cuda_version"] = torch.version.cuda
    else:
        total, free = _host_memory()
        capability = None
        facts.update(name=platform.processor() or platform.machine() or "cpu", index=None, capability=None,
                     total_memory=total, free_memory=free, memory_kind="host RAM",
                     cpu_count=os.cpu_count(), torch_says_bf16_supported=None, cuda_version=None)

    cap = tuple(capability) if capability else None
    facts["native_bf16"] = native_bf16(cap)            # from the compute capability, the only honest source
    facts["t4_rehearsal"] = dev.type == "cpu" and t4_rehearsal_active()
    facts["recommended_precision"] = resolve_precision("auto", *precision_device(facts))
    facts["versions"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{p: _version(p) for p in ("transformers", "peft", "bitsandbytes", "accelerate")},
    }
    facts["in_colab"] = "google.colab" in sys.modules
    if check_hub:
        facts["hub_reachable"], facts["hub_reason"] = hub_status()
    else:
        facts["hub_reachable"], facts["hub_reason"] = False, "not checked"
    conf = _alloc_conf()
    facts["alloc_conf"] = conf or None
    facts["expandable_segments"] = "expandable_segments:true" in conf.replace(" ", "").lower()
    facts["cuda_initialized_before_doctor"] = cuda_was_initialized
    facts["t4"] = dict(T4_FACTS) if "T4" in (facts.get("name") or "") else None
    return facts


def _memory(n) -> str:
    """Bytes as the kit shows them everywhere (units.fmt_bytes: '14.7 GiB'); 'unknown' where it was not read."""
    return "unknown" if n is None else fmt_bytes(n)


def cpu_bf16_line(constants: dict | None) -> str:
    """bf16 against fp32 on this CPU, from what `labkit calibrate` measured (matmul FLOP/s), never from a rule of
    thumb: CPUs with bf16 instructions (AVX-512 BF16, AMX) run it faster, others emulate it slower."""
    flops = (constants or {}).get("flops_per_s") or {}
    if not ("fp32" in flops and "bf16" in flops):
        return ("  bf16 on the CPU: it runs; faster or slower than fp32 depends on the CPU's bf16 instructions "
                "(labkit calibrate measures both)")
    fast = "bf16" if flops["bf16"] > flops["fp32"] else "fp32"
    line = (f"  bf16 on the CPU: matmuls measured at {flops['bf16'] / 1e9:.0f} GFLOP/s against fp32's "
            f"{flops['fp32'] / 1e9:.0f} (labkit calibrate, {constants.get('date') or 'undated'}): {fast} is faster "
            "here")
    return line + ("; 'auto' still runs fp32 on a CPU, precision='bf16' asks for it" if fast == "bf16" else "")


def format_doctor(facts: dict) -> str:
    """The doctor's report, one fact per line, with the advice that follows from it."""
    ok, warn = "✓", "!"
    lines = []
    if facts["type"] == "cuda":
        cc = ".".join(map(str, facts["capability"]))
        lines.append(f"{ok} GPU: {facts['name']} (compute capability {cc})")
        lines.append(f"  memory: {_memory(facts['total_memory'])} total, {_memory(facts['free_memory'])} free "
                     "(GPU memory)")
    else:
        lines.append(f"{warn} no GPU: running on the CPU ({facts.get('cpu_count') or '?'} cores) — lessons still run, "
                     "on the tiny model; memory figures are measured on the CPU and labelled 'cpu'")
        lines.append(f"  memory: {_memory(facts['total_memory'])} total, {_memory(facts['free_memory'])} available "
                     "(host RAM)")

    says = facts.get("torch_says_bf16_supported")
    if facts["type"] == "cuda":
        mark = ok if facts["native_bf16"] else warn
        line = f"{mark} native bf16: {'yes' if facts['native_bf16'] else 'no'} (from the compute capability, ≥ 8.0)"
        if says is not None:
            line += f"; torch.cuda.is_bf16_supported() says {says}"
            if says and not facts["native_bf16"]:
                line += " — that is emulation, slow: decide from the capability"
        lines.append(line)
    else:
        lines.append(cpu_bf16_line(facts.get("time_constants")))
    lines.append(f"  recommended precision: {facts['recommended_precision']}")

    v = facts["versions"]
    lines.append("  versions: " + ", ".join(f"{k} {v[k] or 'missing'}" for k in
                                             ("python", "torch", "transformers", "peft", "bitsandbytes", "accelerate")))
    lines.append(f"  Colab: {'yes' if facts['in_colab'] else 'no'}")
    mark = ok if facts["hub_reachable"] else warn
    if facts["hub_reachable"]:
        lines.append(f"{mark} Hugging Face Hub reachable: yes ({facts['hub_reason']})")
    else:
        lines.append(f"{mark} Hugging Face Hub reachable: no — {facts['hub_reason']}; presets fall back to "
                     "shape-only random weights")
    if facts["expandable_segments"]:
        lines.append(f"{ok} PYTORCH_CUDA_ALLOC_CONF has expandable_segments:True (less fragmentation)")
    elif facts["type"] == "cuda":
        lines.append(f"  PYTORCH_CUDA_ALLOC_CONF: {facts['alloc_conf'] or 'unset'} — expandable_segments:True reduces "
                     "fragmentation; set it before CUDA initialises")
    if facts.get("t4"):
        lines.append("  Tesla T4 facts:")
        lines += [f"    {k}: {val}" for k, val in facts["t4"].items()]
    return "\n".join(lines)


REQUIRED = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def preflight(facts: dict) -> tuple[bool, list[str]]:
    """An instructor's go/no-go for one runtime: (ready, one line per check, the verdict last).

    Not ready only when a library the lessons need is missing. Without a GPU the runtime is still ready: the
    lessons run on the CPU with the tiny stand-in, and say so. Without the hub, GPU lessons use shape-only weights.
    """
    lines, ready = [], True
    missing = [p for p in REQUIRED if not facts["versions"].get(p)]
    if missing:
        ready = False
        lines.append(f"✗ missing: {', '.join(missing)} — run the notebook's setup cell (Colab) or `make install`")
    else:
        lines.append("✓ libraries: " + ", ".join(f"{p} {facts['versions'][p]}" for p in REQUIRED))
    if facts["type"] == "cuda":
        free = facts.get("free_memory") or 0
        lines.append(f"✓ GPU: {facts['name']}, {_memory(free)} free, precision {facts['recommended_precision']}")
        if free < 10 * GiB:
            lines.append(f"! only {_memory(free)} free on the GPU: restart the runtime to get a T4's ~14.7 GiB back")
        mode = "GPU lessons with the real model" if facts["hub_reachable"] else \
            "GPU lessons with shape-only weights (hub not reachable: memory and time real, loss not meaningful)"
    else:
        lines.append("! no GPU: lessons run on the CPU with the tiny stand-in (Colab: Runtime → Change runtime type "
                     "→ T4 GPU)")
        mode = "CPU lessons with the tiny stand-in"
    lines.append(f"READY: {mode}" if ready else "NOT READY: fix the ✗ line above, then run this again")
    return ready, lines


CONTEXT_AT_MOST = 3 * 2 ** 29   # 1.5 GiB: more than any CUDA context measured (H100: 0.65 GB); the rest is others'


def t4_profile(fraction_of: int | None = None, device=None) -> float:
    """Cap this process's CUDA allocations so that a bigger GPU OOMs where a T4 would. Returns the fraction of this
    GPU's memory that was set (1.0 if the GPU is already no bigger). Pair it with precision='fp16' and SDPA, and
    label the results 'T4-profile', not T4.

    The cap binds the caching allocator only, while on a real T4 the CUDA context comes out of the same 14.75 GiB.
    So by default the cap is a T4's total less the context this process already holds here (what the GPU reports
    in use that the allocator did not reserve; measured 0.65 GB on an H100, likely more than a T4's, so the
    profile errs towards an OOM a T4 might not have, never towards a fit it would not). `fraction_of`: the cap in
    bytes, as given.

    fraction = cap / total_memory, e.g. on an 80 GiB H100: (15,835,660,288 − 650,000,000) / 85,520,809,984 ≈ 0.178.
    """
    import torch

    if not torch.cuda.is_available():
        raise ValueError("t4_profile needs a CUDA GPU: on the CPU there is no per-process memory fraction to set")
    if fraction_of is not None and (not isinstance(fraction_of, int) or isinstance(fraction_of, bool)
                                    or fraction_of <= 0):
        raise ValueError(f"fraction_of must be a positive number of bytes, got {fraction_of!r}")
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        raise ValueError(f"t4_profile needs a CUDA device, got {str(dev)!r}")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    total = torch.cuda.get_device_properties(index).total_memory
    if fraction_of is None and total <= T4_TOTAL_MEMORY:
        fraction_of = total                    # a T4 (or smaller): its own context is already paid, no cap
    elif fraction_of is None:
        free, _ = torch.cuda.mem_get_info(index)
        in_use = max(0, total - free - torch.cuda.memory_reserved(index))    # this process's context, + others'
        fraction_of = T4_TOTAL_MEMORY - min(in_use, CONTEXT_AT_MOST)     # another job's gigabytes are not ours
    fraction = min(1.0, fraction_of / total)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    global _T4_PROFILE
    _T4_PROFILE = fraction < 1.0 and "T4" not in torch.cuda.get_device_properties(index).name
    return fraction


def t4_profile_off(device=None) -> None:
    """Lift the cap set by `t4_profile`."""
    import torch

    global _T4_PROFILE
    torch.cuda.set_per_process_memory_fraction(1.0, device)
    _T4_PROFILE = False


def t4_profile_active() -> bool:
    """True while `t4_profile` caps a bigger GPU to a T4's memory: runs then say "t4-profile" and train in fp16."""
    return _T4_PROFILE


_T4_PROFILE = False


def hand_back_cached_gpu_memory() -> int:
    """Before a child process runs on this machine's GPUs (a fresh run, a search, the ranks of a data-parallel
    run): give the blocks this process's caching allocator holds unused back to the driver, so the child finds them
    free. Returns the bytes given back; 0 where CUDA never started in this process (then nothing is held, and
    nothing is started by asking). What stays: this process's CUDA context (0.65 GB on an H100) and the tensors it
    still references, so a child on the same GPU has that much less than a fresh machine, and its
    `cuda_context_bytes` counts them too."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return 0
    from labkit.engine.measure import free_memory    # what a run does after an OOM: collect, return cached blocks

    devices = range(torch.cuda.device_count())
    before = sum(torch.cuda.memory_reserved(i) for i in devices)
    free_memory()
    return before - sum(torch.cuda.memory_reserved(i) for i in devices)


REHEARSAL_ENV = "LABKIT_T4_REHEARSAL"


def t4_rehearsal_active() -> bool:
    """True in the test suite's T4 rehearsal (LABKIT_T4_REHEARSAL=1, which the tests set and the notebook kernels
    and processes they start inherit). On a CPU, runs then take the path a T4 takes: precision decided as for
    compute capability 7.5 ('auto' is fp16, bf16 refused), fp16 autocast, GradScaler('cpu'), 4-bit compute in
    float16, and every record is labelled 't4-rehearsal': nothing it measures is a T4 figure. It exists so that CI,
    which has no GPU, executes the T4's branches; the lessons and the lab never offer it to learners."""
    return os.environ.get(REHEARSAL_ENV) == "1"


def precision_device(facts: dict) -> tuple[str, tuple | None]:
    """(device type, compute capability) that precision decisions take: the device's own, or a T4's (cuda, 7.5)
    for a bigger GPU under the T4 profile and for a CPU in the T4 rehearsal."""
    if (facts["type"] == "cuda" and t4_profile_active()) or (facts["type"] == "cpu" and t4_rehearsal_active()):
        return "cuda", (7, 5)
    cap = facts.get("capability")
    return facts["type"], (tuple(cap) if cap else None)
