"""Measurement: bytes and seconds read off the live tensors, the autograd graph and the CUDA allocator.

Nothing here knows the theory (a test checks that this module never imports it): every figure comes from
tensors that exist. Storages are counted once each, so views and shared buffers are not double counted.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager

import torch

from labkit.engine.op_count import uncounted


def free_memory() -> None:
    """What to do after an OOM (and before a child process needs the GPU): drop the references (done by the
    caller), collect, return the allocator's cached blocks to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return (t.device.type, t.device.index, s.data_ptr(), s.nbytes())


def storage_bytes(tensors, exclude: set | None = None) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one storage count once)."""
    seen, total = set(exclude or ()), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        k = _storage_key(t)
        if k not in seen:
            seen.add(k)
            total += k[3]
    return total


class SavedTensorMeter:
    """Counts the bytes autograd saves for backward while the context is open.

    Uses `torch.autograd.graph.saved_tensors_hooks`: every tensor an op keeps for its backward passes through the
    pack hook. Each storage is counted once; parameter and buffer storages are excluded (they are resident anyway,
    not activations). The hooks return the tensor unchanged, so training is not altered.

        with SavedTensorMeter(model) as meter:
            loss = model(**batch).loss
        meter.bytes          # saved activations of that forward
    """

    def __init__(self, module: torch.nn.Module | None = None, record_tensors: bool = False):
        self.exclude = set()
        if module is not None:
            self.exclude = {_storage_key(p) for p in module.parameters()} | {_storage_key(b) for b in module.buffers()}
        self.seen: set = set()
        self.bytes = 0
        self.tensors: list[tuple[tuple, torch.dtype, int]] = [] if record_tensors else None
        self._ctx = None

    def _pack(self, t: torch.Tensor):
        if t.device.type != "meta":
            k = _storage_key(t)
            if k not in self.exclude and k not in self.seen:
                self.seen.add(k)
                self.bytes += k[3]
                if self.tensors is not None:
                    self.tensors.append((tuple(t.shape), t.dtype, k[3]))
        with uncounted():   # the meter's own op: an OpCounter running beside it leaves it out
            return t.detach()   # the same storage without a grad_fn: returning t itself would form a reference
                                # cycle through the autograd graph that only backward breaks (a failed forward never
                                # does)

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        return False


def saved_activation_bytes(fn, module: torch.nn.Module | None = None):
    """Run `fn()` (a forward) under a SavedTensorMeter; return (fn's result, bytes saved for backward)."""
    with SavedTensorMeter(module) as meter:
        out = fn()
    return out, meter.bytes


# ---- resident state ----------------------------------------------------------------------------------------------
def _quant_state_tensors(param):
    """Tensors of a bitsandbytes Params4bit quant state (absmax, code, offset, nested state), if any."""
    qs = getattr(param, "quant_state", None)
    if qs is None:
        return []
    out = [v for v in vars(qs).values() if isinstance(v, torch.Tensor)]
    nested = getattr(qs, "state2", None)
    if nested is not None:
        out += [v for v in vars(nested).values() if isinstance(v, torch.Tensor)]
    return out


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Sizes of what stays in memory, read from the tensors themselves:
    quantized_weights (4-bit data + quantisation constants), unquantized_weights (every other frozen parameter),
    lora (trainable parameters), gradients (their .grad), optimizer (every tensor in optimizer.state)."""
    quant, other, train = [], [], []
    for p in model.parameters():
        if p.requires_grad:
            train.append(p)
        elif getattr(p, "quant_state", None) is not None:
            quant += [p] + _quant_state_tensors(p)
        else:
            other.append(p)
    opt_tensors = []
    if optimizer is not None:
        for state in optimizer.state.values():
            opt_tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return {
        "quantized_weights": storage_bytes(quant),
        "unquantized_weights": storage_bytes(other),
        "lora": storage_bytes(train),
        "gradients": storage_bytes(p.grad for p in train if p.grad is not None),
        "optimizer": storage_bytes(opt_tensors),
    }


# ---- CUDA allocator and time --------------------------------------------------------------------------------------
def cuda_available(device) -> bool:
    return torch.device(device).type == "cuda" and torch.cuda.is_available()


def reset_cuda_peak(device) -> None:
    if cuda_available(device):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peaks(device) -> dict[str, int | None]:
    """Peak bytes held by live tensors (allocated) and by the caching allocator (reserved) since the last reset.
    None on CPU: the CPU allocator keeps no such counter."""
    if not cuda_available(device):
        return {"peak_allocated_bytes": None, "peak_reserved_bytes": None}
    torch.cuda.synchronize(device)
    return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(device)}


def cuda_context_bytes(device) -> int | None:
    """Device memory in use that the caching allocator did not reserve: the CUDA context and libraries (and any
    other process on the GPU). `nvidia-smi` shows this plus reserved."""
    if not cuda_available(device):
        return None
    free, total = torch.cuda.mem_get_info(device)
    return max(0, total - free - torch.cuda.memory_reserved(device))


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage alive in this process that Python can see (walks `gc.get_objects()`; views and
    shared storages count once, meta tensors not at all). The CPU stand-in for `torch.cuda.memory_allocated`: it
    finds tensors held by any variable, module or graph node that Python tracks. It costs about half a second in
    a process that has transformers and peft loaded (~450,000 objects to walk), once per run, before it starts."""
    import gc
    import warnings

    gc.collect()
    tensors = []
    with warnings.catch_warnings():            # isinstance() on some deprecated torch objects warns; not ours to say
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor):
                    tensors.append(obj)
            except ReferenceError:             # a dead weak proxy
                continue
    return storage_bytes(t for t in tensors if t.device.type == "cpu")


def allocated_before(device) -> tuple[int, str]:
    """What was already in memory when a run starts, and where the figure comes from: on CUDA the allocator's
    `memory_allocated` (every live tensor on that GPU, the learner's own included); on a CPU the live tensor bytes
    that `live_tensor_bytes` finds. Unreachable garbage is collected first: only what is really held counts."""
    if cuda_available(device):
        import gc

        gc.collect()
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device), "cuda-allocator"
    return live_tensor_bytes(), "live-tensors"          # it collects first (a collection costs ~0.2 s here)


def cuda_memory_now(device) -> dict[str, int | None]:
    """Allocated and reserved bytes at this moment (not peaks); reserved − allocated is what the caching
    allocator holds in free blocks: fragmentation shows up as that gap growing. None on CPU."""
    if not cuda_available(device):
        return {"allocated_bytes": None, "reserved_bytes": None}
    torch.cuda.synchronize(device)
    return {"allocated_bytes": torch.cuda.memory_allocated(device),
            "reserved_bytes": torch.cuda.memory_reserved(device)}


@contextmanager
def timed(device, into: list):
    """Append the wall time of the block to `into`, synchronising CUDA on both ends so GPU work is included."""
    if cuda_available(device):
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    yield
    if cuda_available(device):
        torch.cuda.synchronize(device)
    into.append(time.perf_counter() - t0)


# ---- live tensor bytes during a step (a peak counter that also works on a CPU) ---------------------------------------
class LiveTensorMeter:
    """The peak of tensor bytes alive while the block runs, and what was running when it happened.

    A CPU keeps no peak counter (`cuda_peaks` is None there), so this counts from the tensors themselves: a
    `TorchDispatchMode` sees the outputs of every op (forward, backward, recomputation, optimizer); a storage is
    counted when an op first returns it and uncounted when it is freed (a weakref finalizer on the storage: torch keeps
    one Python object per live storage). Outputs that alias an input (views, in-place ops) add nothing.

    What it does not see: storages that existed before the block (weights, optimizer state, the batch: add
    `resident_bytes` for a total) and buffers a kernel allocates for itself without returning them (cuBLAS
    workspaces, attention scratch). Sizes are `nbytes` as stored, before any allocator rounding.

        with LiveTensorMeter() as live:
            live.phase = "forward";  out = model(**batch)
            live.phase = "backward"; out.loss.backward()
        live.peak, live.peak_at     # bytes above the start, {"phase", "op", "node"} at that moment
        live.peak_by_phase          # the highest count seen in each phase

    In backward, "node" names the autograd node whose op made the peak (e.g. "LogSoftmaxBackward0").
    """

    def __init__(self):
        self.phase = ""
        self.live = 0
        self.peak = 0
        self.peak_at: dict = {}
        self.peak_by_phase: dict[str, int] = {}
        self._sizes: dict[tuple, int] = {}
        self._mode = None

    # bookkeeping ----------------------------------------------------------------------------------------------------
    def _forget(self, key):
        self.live -= self._sizes.pop(key, 0)

    def _count(self, t: torch.Tensor, inputs: set, op_name: str):
        if t.device.type == "meta" or t.is_sparse:
            return
        storage = t.untyped_storage()
        key = (t.device.type, t.device.index, storage.data_ptr(), storage.nbytes())
        if key in inputs or key in self._sizes or key[3] == 0:
            return
        import weakref

        self._sizes[key] = key[3]
        self.live += key[3]
        weakref.finalize(storage, self._forget, key)
        if self.live > self.peak_by_phase.get(self.phase, -1):
            self.peak_by_phase[self.phase] = self.live
        if self.live > self.peak:
            node = torch._C._current_autograd_node()
            self.peak = self.live
            self.peak_at = {"phase": self.phase, "op": op_name, "node": type(node).__name__ if node else None}

    # the dispatch mode ----------------------------------------------------------------------------------------------
    def _mode_class(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        meter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inputs = {(a.device.type, a.device.index, a.untyped_storage().data_ptr(),
                           a.untyped_storage().nbytes())
                          for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)
                          and a.device.type != "meta" and not a.is_sparse}
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        meter._count(t, inputs, str(func))
                return out

        return _Mode

    def __enter__(self):
        self._mode = self._mode_class()()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        return False
