"""The cause of QLoRA + ZeRO-3 diverging on AVX-512-bf16 CPUs, shown on real bitsandbytes layers on any CPU.

bitsandbytes repacks a 4-bit weight in place during an eval-mode forward when it believes the CPU has AVX-512-bf16
(`support_avx512bf16_for_cpu`). Under ZeRO-3 the weight's data is a gathered copy that DeepSpeed replaces on
every gather, so the repacked flag and the data drift apart. The flag is forced on here so the mechanism shows on
any machine; `disable_cpu_weight_packing` (what training applies under ZeRO-3) must keep the weight untouched.
"""

from __future__ import annotations

import pytest


def _layer():
    import bitsandbytes as bnb
    import torch

    torch.manual_seed(0)
    dense = torch.nn.Linear(128, 64, bias=False)
    q = bnb.nn.Linear4bit(
        128, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4", quant_storage=torch.float32
    )
    q.weight = bnb.nn.Params4bit(
        dense.weight.data.clone(), requires_grad=False, quant_type="nf4", quant_storage=torch.float32
    )
    return q.to("cpu")


@pytest.mark.parametrize("disabled", [False, True])
def test_eval_forward_repacks_weights_unless_disabled(disabled: bool) -> None:
    import torch

    from training.model import disable_cpu_weight_packing

    model = torch.nn.Sequential(_layer())
    layer = model[0]
    x = torch.randn(2, 128)
    with torch.no_grad():
        reference = layer(x)  # train mode: never repacks
    shape, dtype = layer.weight.shape, layer.weight.dtype
    layer.support_avx512bf16_for_cpu = True  # what an AVX-512-bf16 CPU reports
    if disabled:
        assert disable_cpu_weight_packing(model) == 1
    model.eval()
    with torch.no_grad():
        out = layer(x)
    packed = bool(getattr(layer.weight.quant_state, "packing_format_for_cpu", False))
    if disabled:
        assert not packed and layer.weight.shape == shape and layer.weight.dtype == dtype
        assert torch.allclose(out, reference)
    else:  # the in-place rewrite that ZeRO-3's re-gathered partitions then contradict
        assert packed and layer.weight.dtype == torch.uint8 and layer.weight.shape != shape
