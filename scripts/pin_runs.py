"""Run ids and weight digests of a few small runs, to compare the lab before and after a change
that must not alter what it computes (the same machine: weights differ between CPU kinds).

Run: .venv/bin/python scripts/pin_runs.py   (trains each run in a temporary cache, ~1 min)
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import torch


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    os.environ["FMNIST_CACHE"] = tempfile.mkdtemp(prefix="fmnist_pin_")
    from fmnist_core import RunConfig, get_or_train

    quick = dict(epochs=1, train_subset=600, seed=0)
    configs = [
        RunConfig.for_model("mlp", **quick),
        RunConfig.for_model("cnn", **quick),
        RunConfig.for_model("conv_autoencoder", {"n": 8}, **quick),
        RunConfig.for_model("conv_autoencoder", {"n": 16, "pca_path": True, "dropout": 0.0}, **quick),
        RunConfig.for_model("resnet", {"channels": (8,), "blocks": 1}, **quick),
    ]
    configs.append(RunConfig.for_model("encoder_classifier", {"encoder_run": configs[2].run_id}, **quick))
    trained = {config.run_id: get_or_train(config) for config in configs}
    for config in configs:
        run = trained[config.run_id]
        loss = run.metrics.get("test_accuracy", run.metrics.get("test_mse"))
        print(f"{config.model:20s} {config.run_id}  weights {digest(run.model.state_dict())}  {loss:.6f}")


if __name__ == "__main__":
    main()
