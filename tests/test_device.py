from pathlib import Path

import pytest

from fmnist_core import device
from fmnist_core.config import RunConfig
from fmnist_core.recipes import RECIPES


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse2 avx512f avx512bw", "fp32"),  # AVX-512 alone: oneDNN would emulate bf16
        ("fpu sse2 avx512f avx512_bf16", "bf16"),
        ("fpu sse2 amx_bf16 amx_tile", "bf16"),
    ],
)
def test_bf16_is_chosen_only_where_the_cpu_does_it_natively(monkeypatch, flags, expected):
    monkeypatch.setattr(Path, "read_text", lambda self: f"processor : 0\nflags : {flags}\n")
    assert device.fast_precision.__wrapped__("cpu") == expected


def test_no_cpuinfo_means_fp32(monkeypatch):
    def missing(self):
        raise FileNotFoundError(self)

    monkeypatch.setattr(Path, "read_text", missing)
    assert device.fast_precision.__wrapped__("cpu") == "fp32"


def test_the_cnn_recipes_train_in_the_fast_precision_of_this_machine():
    for name in ("fast_cnn", "long_cnn"):
        assert RECIPES[name].config().precision == device.fast_precision()
    assert RunConfig.for_model("cnn").precision == device.fast_precision()  # S1's row 9 by default
    assert RunConfig.for_model("cnn", precision="fp32").precision == "fp32"
