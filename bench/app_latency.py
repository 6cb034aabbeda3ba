"""How quickly the app answers: first render, a cached model shown, a drawing classified, codes projected.

Run: .venv/bin/python bench/app_latency.py (trains two small models into a temporary cache first).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    os.environ["FMNIST_CACHE"] = tempfile.mkdtemp(prefix="fmnist_bench_")
    from streamlit.testing.v1 import AppTest

    from fmnist_core import analysis
    from fmnist_core.cache import RunCache
    from fmnist_core.config import RunConfig
    from fmnist_core.data import load_data
    from fmnist_core.preprocess import prepare_drawing
    from fmnist_core.runs import get_or_train, load_run

    start = time.perf_counter()
    AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    first_render = time.perf_counter() - start

    cache = RunCache()
    classifier = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=5000), cache=cache)
    autoencoder = get_or_train(
        RunConfig.for_model("conv_autoencoder", epochs=1, train_subset=5000), cache=cache
    )
    load = timed(lambda: load_run(autoencoder.run_id, cache))

    drawing = np.zeros((280, 280, 4), dtype=np.uint8)
    drawing[60:220, 100:180] = 255

    def classify() -> None:
        image = prepare_drawing(drawing)
        analysis.predict_proba(classifier.model, torch.from_numpy(image)[None, None])

    classify_seconds = timed(classify, repeat=20)
    codes = analysis.latent_codes(autoencoder.model, load_data().test_images)
    pca = timed(lambda: analysis.latent_projection(codes, "pca"))
    tsne = timed(lambda: analysis.latent_projection(codes[:3000], "tsne"), repeat=1)

    print(f"{'what':44s} {'seconds':>8s}")
    print(f"{'import + first render of the app (AppTest)':44s} {first_render:8.3f}")
    print(f"{'load a cached model from disk':44s} {load:8.3f}")
    print(f"{'classify one drawn image (preprocess + model)':44s} {classify_seconds:8.4f}")
    print(f"{'PCA of 10,000 codes':44s} {pca:8.3f}")
    print(f"{'t-SNE of 3,000 codes (computed once, then kept)':44s} {tsne:8.1f}")
    print(f"first_render_seconds: {first_render:.2f}")


if __name__ == "__main__":
    main()
