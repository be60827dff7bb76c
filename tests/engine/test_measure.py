"""Measurement against hand-computable toys (micrograd style: compare with numbers you can do on paper)."""
import torch

from labkit.engine.measure import SavedTensorMeter, resident_bytes, storage_bytes


def test_saved_bytes_of_hand_computable_ops():
    x = torch.randn(3, 4, requires_grad=True)            # 12 fp32 = 48 B
    w = torch.nn.Parameter(torch.randn(4))
    module = torch.nn.Module()
    module.w = w
    with SavedTensorMeter(module, record_tensors=True) as meter:
        y = x * w                   # saves x (48 B) and w (a parameter: excluded)
        z = torch.exp(y)            # saves its result (48 B)
        v = z[:, :2].sin()          # saves its input, a view of z: same storage, counted once
        loss = v.sum()              # saves nothing that holds data
    assert meter.bytes == 48 + 48
    loss.backward()                 # the hooks did not alter training
    assert x.grad.shape == (3, 4)


def test_saved_bytes_scale_with_dtype_and_batch():
    def saved(batch, dtype):
        x = torch.randn(batch, 8, dtype=dtype, requires_grad=True)
        with SavedTensorMeter() as meter:
            torch.tanh(x).sum()     # tanh keeps its output: batch·8 elements
        return meter.bytes
    assert saved(1, torch.float32) == 32
    assert saved(4, torch.float32) == 128
    assert saved(4, torch.bfloat16) == 64


def test_storage_bytes_counts_shared_storage_once():
    a = torch.zeros(10)
    assert storage_bytes([a, a[2:5], a.view(2, 5)]) == 40
    assert storage_bytes([a, torch.zeros(3)]) == 52


def test_resident_bytes_of_a_small_model_with_adamw():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)                 # frozen: 12 params
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    got = resident_bytes(model, opt)
    trainable = 3 + 6 + 2                                  # bias0, weight1, bias1
    assert got["unquantized_weights"] == 12 * 4
    assert got["lora"] == trainable * 4
    assert got["gradients"] == trainable * 4
    assert got["optimizer"] == trainable * 8 + 3 * 4      # two fp32 moments + a 4-byte step per tensor
    assert got["quantized_weights"] == 0
