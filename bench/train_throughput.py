"""Images per second of our engine vs the textbook PyTorch loop, same model, batch and optimizer.

The textbook loop: torchvision's FashionMNIST with ToTensor, a shuffling DataLoader, batch by batch,
and the model as the lab's registry builds it (torch's own layers in the report's order), with the
run's initial weights; the engine trains its own view of that model. Each measurement runs in a fresh process (the engine tunes the process's memory
allocator, which must not help the textbook loop); contenders alternate, three rounds each, and
medians are quoted. Run: .venv/bin/python bench/train_throughput.py
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fmnist_core.base.device import resolve_precision
from fmnist_core.data.fashion import FILES, find_data_folder
from fmnist_core.runs.trained import train, untrained_model
from fmnist_core.training.config import RunConfig

STEPS = 150  # optimizer steps per measurement
ROUNDS = 3


def torchvision_root() -> Path:
    """torchvision wants root/FashionMNIST/raw/<uncompressed files>: made once in a temp folder."""
    root = Path(tempfile.gettempdir()) / "fmnist_bench_torchvision"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    source = find_data_folder()
    for stem in FILES.values():
        target = raw / stem
        if not target.exists():
            gz = source / f"{stem}.gz"
            with (
                gzip.open(gz) if gz.exists() else open(source / stem, "rb") as src,
                open(target, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst)
    return root


def textbook(config: RunConfig, steps: int) -> float:
    from torchvision import datasets, transforms

    dataset = datasets.FashionMNIST(
        str(torchvision_root()), train=True, download=False, transform=transforms.ToTensor()
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True)
    model = untrained_model(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    autoencoder = config.kind == "autoencoder"
    start, seen = None, 0
    for step, (x, y) in enumerate(loader):
        if step == 5:  # warm-up steps are not timed
            start, seen = time.perf_counter(), 0
        output = model(x)
        loss = F.mse_loss(output, x) if autoencoder else F.cross_entropy(output, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(x)
        if step == steps + 5:
            break
    return seen / (time.perf_counter() - start)


def engine(config: RunConfig, steps: int) -> float:
    reports = []
    subset = (steps + 5) * config.batch_size
    train(config.replace(train_subset=subset, test_subset=100), on_progress=reports.append)
    inside = [r for r in reports if not r.epoch_done and r.step > 5]
    first, last = inside[0], inside[-1]
    return (last.step - first.step) * config.batch_size / (last.seconds - first.seconds)


CASES = {
    "S0 autoencoder p=0.2": RunConfig.for_model("conv_autoencoder", epochs=1),
    "S0 autoencoder p=0": RunConfig.for_model("conv_autoencoder", {"dropout": 0.0}, epochs=1),
    # S1's fp32, and the engine in precision auto (bf16 where the CPU does it natively, see the
    # precision column's resolved value). The textbook loop trains in fp32 either way.
    "S1 best CNN": RunConfig.for_model("cnn", epochs=1),
    "S1 best CNN, engine auto": RunConfig.for_model("cnn", epochs=1, precision="auto"),
}
CONTENDERS = {"textbook": textbook, "engine": engine}


def measure_in_new_process(contender: str, case: str, steps: int) -> float:
    command = [sys.executable, __file__, "--measure", contender, "--case", case, "--steps", str(steps)]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--only", help="run only the cases whose name contains this text")
    parser.add_argument("--measure", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # one measurement, in this fresh process
        print(CONTENDERS[args.measure](CASES[args.case], args.steps))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps x {args.rounds} rounds"
    )
    print(
        f"{'case':26s} {'batch':>5s} {'precision':>9s} {'textbook img/s':>15s} {'engine img/s':>13s} {'ratio':>6s}"
    )
    ratios = {}
    cases = {name: config for name, config in CASES.items() if args.only is None or args.only in name}
    for name, config in cases.items():
        book, ours = [], []
        for _ in range(args.rounds):
            book.append(measure_in_new_process("textbook", name, args.steps))
            ours.append(measure_in_new_process("engine", name, args.steps))
        b, o = statistics.median(book), statistics.median(ours)
        ratios[name] = o / b
        precision = resolve_precision(config.precision, "cpu")
        print(f"{name:26s} {config.batch_size:5d} {precision:>9s} {b:15.0f} {o:13.0f} {o / b:6.2f}")
    if "S0 autoencoder p=0.2" in ratios:
        print(f"engine_vs_textbook_s0_p0.2: {ratios['S0 autoencoder p=0.2']:.2f}")


if __name__ == "__main__":
    main()
