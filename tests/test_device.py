import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist_core.base import device
from fmnist_core.runs.recipes import RECIPES
from fmnist_core.training.config import RunConfig
from fmnist_core.training.loop import execution

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu sse2 avx512f avx512bw", False),  # AVX-512 alone: oneDNN would emulate bf16
        ("fpu sse2 avx512f avx512_bf16", True),
        ("fpu sse2 amx_bf16 amx_tile", True),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.delenv("FMNIST_BF16", raising=False)
    monkeypatch.setattr(Path, "read_text", lambda self: f"processor : 0\nflags : {flags}\n")
    assert device._cpu_has_bf16.__wrapped__() is expected


def test_no_cpuinfo_means_no_native_bf16(monkeypatch):
    def unreadable(self):
        raise OSError("no /proc here")

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert device._cpu_has_bf16.__wrapped__() is False


@pytest.mark.parametrize("override, resolved", [("0", "fp32"), ("1", "bf16")])
def test_auto_precision_follows_the_machine_fp32_and_bf16_do_not(monkeypatch, override, resolved):
    monkeypatch.setenv("FMNIST_BF16", override)
    assert device.resolve_precision("auto", "cpu") == resolved
    assert device.resolve_precision("fp32", "cpu") == "fp32"
    assert device.resolve_precision("bf16", "cpu") == "bf16"
    config = RECIPES["fast_cnn"].config()
    assert config.precision == "auto"  # the config itself never depends on the machine
    assert execution(config, device.pick_device("cpu"))["precision"] == resolved


def test_a_bad_override_names_the_variable(monkeypatch):
    monkeypatch.setenv("FMNIST_BF16", "maybe")
    with pytest.raises(ValueError, match="FMNIST_BF16"):
        device.resolve_precision("auto", "cpu")


def test_the_seed_models_train_in_fp32_as_published():
    for model in ("conv_autoencoder", "encoder_classifier", "mlp", "cnn", "resnet"):
        assert RunConfig.for_model(model).precision == "fp32"
    for name in ("fast_cnn", "long_cnn"):
        assert RECIPES[name].config().precision == "auto"


def test_run_ids_are_the_same_whatever_the_cpu_says():
    code = (
        "import fmnist_core as f; from fmnist_core.runs.recipes import RECIPES;"
        "print(f.RunConfig.for_model('cnn').run_id, RECIPES['fast_cnn'].config().run_id)"
    )
    ids = set()
    for override in ("0", "1"):
        env = {**os.environ, "FMNIST_BF16": override, "PYTHONPATH": str(ROOT)}
        ids.add(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
    assert len(ids) == 1 and len(ids.pop().split()) == 2


def test_a_process_kept_to_one_thread_stays_at_one_after_the_engines_kernels_start():
    # numba's first kernel starts its OpenMP pool, which set torch's count to every core: a test
    # worker or a job given one thread then trained on two, against its neighbour. In a fresh
    # process (the first kernel of a process is the one that starts the pool).
    code = (
        "import torch; from fmnist_core.base.device import use_threads; use_threads(1);"
        "from fmnist_core.engine import kernels;"
        "x = torch.rand(4, 8, 6, 6).contiguous(memory_format=torch.channels_last);"
        "out, code = kernels.pool_relu_forward(x, None, 0, 1.0);"
        "import numba; print(torch.get_num_threads(), numba.get_num_threads(), tuple(out.shape))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)  # as a user's process starts: OpenMP's count is every core
    env.pop("NUMBA_NUM_THREADS", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "1", "(4,", "8,", "3,", "3)"], done.stdout
