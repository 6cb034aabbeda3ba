"""Where a training step's time goes, per operation: the textbook model against the engine's view.

The same model (the S1 best CNN by default), the same batch of real images, Adam, fp32 unless
`--precision` says otherwise. torch's profiler records a number of steps after a warm-up; the
tables list each operation's own time per step (forward and backward ops apart), largest first,
and the convolutions' arithmetic rate beside the CPU's vector bound. Run, e.g. on the AVX2 path:

    FMNIST_BF16=0 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 NUMBA_CPU_NAME=haswell \
        .venv/bin/python bench/layer_profile.py
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from fmnist_core import engine
from fmnist_core.data.fashion import load_data
from fmnist_core.runs.trained import untrained_model
from fmnist_core.training.config import RunConfig
from fmnist_core.training.splits import RunGenerators

WARMUP, STEPS = 5, 20


def conv_flops(model: torch.nn.Module, batch: int) -> dict[str, float]:
    """Forward multiply-adds x 2 x 3 (forward, input gradient, weight gradient) per step, per conv."""
    flops, shape = {}, [batch, 1, 28, 28]
    x = torch.zeros(shape)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            hook_out = {}

            def grab(_m, _i, out, store=hook_out):
                store["shape"] = out.shape

            handle = module.register_forward_hook(grab)
            with torch.no_grad():
                model.eval()(x)
            handle.remove()
            b, c_out, h, w = hook_out["shape"]
            c_in, k = module.in_channels, module.kernel_size[0] * module.kernel_size[1]
            first = c_in == 1  # no input gradient for the first layer
            flops[name] = b * c_out * h * w * c_in * k * 2 * (2 if first else 3)
    return flops


def profile_steps(model: torch.nn.Module, x, y, autocast: bool) -> tuple[float, list]:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    for _ in range(WARMUP):
        step()
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    seconds = (time.perf_counter() - start) / STEPS
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(STEPS):
            step()
    return seconds, prof.key_averages()


def print_table(title: str, seconds: float, events, top: int) -> None:
    print(f"\n{title}: {seconds * 1000:.1f} ms per step (unprofiled)")
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    print(f"  {'operation':44s} {'ms/step':>8s} {'calls/step':>10s}")
    for e in rows:
        print(f"  {e.key[:44]:44s} {e.self_cpu_time_total / 1000 / STEPS:8.2f} {e.count / STEPS:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    config = RunConfig.for_model(args.model, epochs=1)
    data = load_data()
    x, y = data.train_images[: config.batch_size], data.train_labels[: config.batch_size]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {config.batch_size}, "
        f"{args.precision}, ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '(default)')}, "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    autocast = args.precision == "bf16"

    book = untrained_model(config)
    seconds, events = profile_steps(book, x, y, autocast)
    print_table("textbook (the model as written, contiguous)", seconds, events, args.top)

    engine.keep_freed_memory()
    model = untrained_model(config).to(memory_format=torch.channels_last)
    view = engine.accelerate(model, torch.device("cpu"), RunGenerators.from_seed(0, "cpu").dropout)
    xc = x.contiguous(memory_format=torch.channels_last)
    seconds, events = profile_steps(view, xc, y, autocast)
    print_table("engine view (channels_last, fused layers)", seconds, events, args.top)

    conv_time = sum(
        e.self_cpu_time_total
        for e in events
        if "convolution" in e.key and "backward" not in e.key.lower() or "convolution_backward" in e.key
    )
    total = sum(conv_flops(book, config.batch_size).values())
    print(
        f"\nconvolutions: {total / 1e9:.2f} GFLOP per step (forward + both gradients), "
        f"{conv_time / 1000 / STEPS:.1f} ms per step in the engine's profile -> "
        f"{total / (conv_time / 1e6 / STEPS) / 1e9:.0f} GFLOP/s"
    )


if __name__ == "__main__":
    main()
