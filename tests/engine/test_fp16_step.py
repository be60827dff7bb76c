"""fp16's optimizer step, as a T4 takes it, run for real on the CPU: torch's GradScaler('cpu') scales, unscales,
skips a step whose gradients overflowed and lowers its scale, exactly as its CUDA twin does.

`labkit.calibrate()` on a T4 resolves to fp16, and its optimizer probe used to unscale before anything was scaled
(torch: "Attempted unscale_ but _scale is None"), so lessons 02-04 stopped at their calibration cell."""
import warnings

import torch

from labkit.config import RunConfig
from labkit.engine.overhead_probe import optimizer_probe
from labkit.engine.runner import make_optimizer, make_scheduler, optimizer_step


def test_the_calibration_optimizer_probe_runs_in_fp16():
    probe = optimizer_probe("cpu", "fp16", repeats=1)
    assert probe["seconds"] > 0 and probe["ops"] > 0 and probe["tensors"] == 32


def test_a_step_the_scaler_skips_leaves_the_schedule_where_it_was():
    params = [torch.nn.Parameter(torch.ones(8, 8))]
    optimizer = make_optimizer(torch.nn.ParameterList(params), RunConfig(model="tiny", optim="adamw"))
    scheduler = make_scheduler(optimizer, steps=10)
    scaler = torch.amp.GradScaler("cpu")
    scale = scaler.get_scale()

    scaler.scale(params[0].sum() * float("inf")).backward()            # an fp16 overflow: inf gradients
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                  # torch warns if the schedule runs ahead
        optimizer_step(optimizer, params, scaler, scheduler)
    assert scaler.get_scale() < scale and scheduler.last_epoch == 0
    assert not optimizer.state and params[0].grad is None                # AdamW never stepped

    scaler.scale(params[0].sum()).backward()                            # finite: the step is taken
    seen = optimizer_step(optimizer, params, scaler, scheduler, before_clip=lambda: params[0].grad.clone())
    assert torch.equal(seen, torch.ones(8, 8))                          # unscaled before clipping
    assert scheduler.last_epoch == 1 and int(optimizer.state[params[0]]["step"]) == 1
