"""What the measured loop (`runner._steps`) asks of its process group: one process, or one rank of N under DDP.

    ranks = DataParallelRank(rank=1, world_size=2, device="cpu")   # in a process that ran init_process_group
    stream = ranks.my_rows(big_stream)    # batches of mb × N rows; rank 1 of 2 keeps rows [mb, 2·mb)
    ddp = ranks.wrap(model)               # DistributedDataParallel, its gradient all-reduce timed by a comm hook
    n_items = ranks.total(local_tokens)   # label tokens of the whole effective batch, summed over the ranks
    with ranks.no_sync(ddp, last=False):  # every micro-batch but the cycle's last accumulates locally
        ...

`SINGLE` speaks the same words for one process: nothing is sliced, wrapped, summed or synchronised, so a
1-process run is exactly what it was before data parallelism existed.

The arithmetic that makes N ranks equal one process with micro-batch × N: every rank divides its token-summed loss
by n_items, the label tokens of the whole effective batch (all ranks, all micro-batches), then multiplies it by N
(`loss_scale`), because DDP averages the gradients over the ranks (÷ N). Rank r's gradient is
N · Σ_r / n_items; their mean is Σ / n_items: the big batch's gradient, whatever each rank's own token count.
"""
from __future__ import annotations

import contextlib
import inspect
import time

import torch


class SingleProcess:
    """One process: the identity for every step of the data-parallel protocol."""
    rank = 0
    world_size = 1
    loss_scale = 1

    def my_rows(self, stream):
        return stream

    def wrap(self, model):
        return model

    def total(self, value):
        return value

    def no_sync(self, model, last: bool):
        return contextlib.nullcontext()

    def take_sync_seconds(self):
        return None


SINGLE = SingleProcess()


class AllReduceClock:
    """The comm hook's state: the seconds each gradient bucket's all-reduce took (see `timed_allreduce_hook`).
    On CUDA it keeps pairs of CUDA events and turns them into seconds when read (`take`)."""

    def __init__(self, cuda: bool = False):
        self.cuda = cuda
        self.seconds: list[float] = []
        self.events: list[tuple] = []      # CUDA: (start, end) events around each bucket's all-reduce
        self.process_group = None          # None: the default group (torch's allreduce_hook reads it so)

    def take(self) -> float:
        """Seconds in all-reduce since the last call (summed over buckets), then start again."""
        if self.events:
            torch.cuda.synchronize()
            self.seconds += [start.elapsed_time(end) / 1e3 for start, end in self.events]   # ms → s
            self.events.clear()
        out = sum(self.seconds)
        self.seconds.clear()
        return out


def timed_allreduce_hook(clock: AllReduceClock, bucket):
    """torch's own `allreduce_hook` (DDP's default behaviour: sum, then ÷ N), timed from the moment DDP hands a
    gradient bucket to the hook until its all-reduce is done.

    What that time holds: the all-reduce itself (gloo on CPU, NCCL on CUDA) *and* the wait for the slowest rank to
    reach the same bucket — a straggler shows up here. Buckets of one backward are summed by the caller; with
    LoRA's small gradients there is usually one bucket. On a CPU (gloo) the future completes when the data has
    arrived: wall time from the call to the callback. On CUDA the future may complete once NCCL's kernel is only
    queued, so wall time would hold the launch alone: there CUDA events are recorded on the current stream when
    the hook starts and in the callback (whose stream waits for NCCL's work), and their elapsed time is read at
    the end of the step."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    if clock.cuda:
        start = torch.cuda.Event(enable_timing=True)
        start.record()

        def done_cuda(fut):
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            clock.events.append((start, end))
            return fut.value()
        return allreduce_hook(clock.process_group, bucket).then(done_cuda)

    begun = time.perf_counter()

    def done(fut):
        clock.seconds.append(time.perf_counter() - begun)
        return fut.value()
    return allreduce_hook(clock.process_group, bucket).then(done)


class DataParallelRank:
    """Rank `rank` of `world_size`, in a process whose default process group is already initialised."""

    def __init__(self, rank: int, world_size: int, device: str):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.loss_scale = world_size       # DDP averages gradients (÷ N): × N keeps Σ over ranks / n_items
        self._clock = AllReduceClock(cuda=torch.device(device).type == "cuda")

    def my_rows(self, stream):
        """This rank's share of each big batch: rows [r·mb, (r+1)·mb) of mb × N rows drawn with the run's seed,
        so N ranks together see exactly the sequences one process with micro-batch mb × N would see."""
        for batch in stream:
            rows = batch["input_ids"].shape[0] // self.world_size      # e.g. 4 rows ÷ 2 ranks = mb 2
            lo = self.rank * rows
            yield {k: v[lo:lo + rows] for k, v in batch.items()}

    def wrap(self, model):
        """DistributedDataParallel around the peft model (DDP's defaults: 25 MB buckets, parameters broadcast
        from rank 0 once), with the timed all-reduce as its comm hook. Buffers are not broadcast before every
        forward (the model's buffers never change here: that would be a hidden sync point in every micro-batch)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(self.device).index] if torch.device(self.device).type == "cuda" else None
        # the same setting under its new name where torch has it (newer torch warns at the old one, once per rank)
        no_sync = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})
        ddp = DistributedDataParallel(model, device_ids=ids, **no_sync)
        ddp.register_comm_hook(self._clock, timed_allreduce_hook)
        return ddp

    def total(self, value):
        """Sum of `value` over the ranks (torch.distributed.all_reduce); ints stay ints."""
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        out = t.item()
        return int(round(out)) if isinstance(value, int) else out

    def no_sync(self, ddp, last: bool):
        """DDP's `no_sync` for every micro-batch but the last of an accumulation cycle: gradients add up locally
        and one all-reduce per optimizer step carries them all."""
        return contextlib.nullcontext() if last else ddp.no_sync()

    def take_sync_seconds(self) -> float:
        """Seconds in gradient all-reduce since the last call (summed over buckets), then start again."""
        return self._clock.take()
