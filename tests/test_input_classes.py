"""Classes of bad input at the public API, each refused with one ValueError before any work starts (nothing
loaded, nothing written), by the same rule wherever the same value is taken: labkit.run, estimate, sweep,
largest_micro_batch and the lab."""
import numpy as np
import pytest

import labkit
from labkit.config import RunConfig

CFG = RunConfig(model="tiny", seq_len=32)


def _refused(call, said):
    with pytest.raises(ValueError, match=said) as e:
        call()
    assert "\n" not in str(e.value) and len(str(e.value)) < 200, str(e.value)


@pytest.mark.parametrize("configs, said", [
    (CFG, "got a single RunConfig: write \\[cfg\\]"), ([{"model": "tiny"}], "item 0 is dict .*RunConfig.from_dict"),
    ("tiny", "takes a list of RunConfigs, got str"), (5, "takes a list of RunConfigs, got int")])
def test_a_sweep_of_the_wrong_container_is_refused_and_writes_nothing(tmp_path, configs, said):
    out = tmp_path / "s.jsonl"
    _refused(lambda: labkit.sweep(configs, out), said)
    assert not out.exists()


@pytest.mark.parametrize("steps, warmup, said", [(0, 0, "steps must be an integer ≥ 1"), (3, 5, "warmup must be"),
                                                 (2.0, 1, "steps must be an integer"), (3, -1, "warmup must be"),
                                                 (10 ** 400, 1, "steps must be at most")])
def test_steps_are_checked_before_a_sweep_writes_and_before_the_lab_is_built(tmp_path, steps, warmup, said):
    out = tmp_path / "s.jsonl"
    _refused(lambda: labkit.sweep([CFG], out, steps=steps, warmup=warmup), said)
    assert not out.exists()                          # no error record appended to the learner's results
    _refused(lambda: labkit.run(CFG, steps=steps, warmup=warmup), said)
    _refused(lambda: labkit.lab(steps=steps, warmup=warmup), said)


def test_devices_torch_names_are_taken_as_before():
    import torch

    from labkit.config import check_device
    for device in (None, "cpu", "cpu:0", "cuda", "cuda:1", torch.device("cpu"), torch.device("cuda", 1)):
        check_device(device)


@pytest.mark.parametrize("device", ["banana", "gpu", 0, "cuda:x", ""])
def test_a_device_that_is_no_device_gets_the_same_line_everywhere(device):
    said = "device must be 'cpu', 'cuda' or 'cuda:N'"
    for call in (lambda: labkit.run(CFG, device=device), lambda: labkit.estimate(CFG, device=device),
                 lambda: labkit.largest_micro_batch(CFG, device=device), lambda: labkit.lab(device=device)):
        _refused(call, said)


def test_a_callback_that_is_not_a_function_is_refused_before_the_run():
    _refused(lambda: labkit.run(CFG, on_step=5), "on_step must be a function")


@pytest.mark.parametrize("cfg", [{"model": "tiny"}, "tiny", None])
def test_the_search_and_the_run_take_a_run_config_only(cfg):
    _refused(lambda: labkit.largest_micro_batch(cfg), "expects a labkit.RunConfig, got")
    _refused(lambda: labkit.run(cfg), "a labkit.RunConfig, got")


@pytest.mark.parametrize("records", [5, "runs/demo.jsonl", 2.5])
def test_the_lab_replays_records_only(records):
    panel = labkit.lab()
    _refused(lambda: panel.replay(records=records), "replay takes a record or a list of records")


def test_numpy_values_get_one_rule_in_the_api_and_the_lab():
    cfg = RunConfig(micro_batch=np.int64(2), gradient_checkpointing=np.bool_(False))
    assert (cfg.micro_batch, cfg.gradient_checkpointing) == (2, False)
    panel = labkit.lab()
    panel.set(micro_batch=np.int64(2), gradient_checkpointing=np.bool_(False))
    assert panel.config().micro_batch == 2 and panel.config().gradient_checkpointing is False
