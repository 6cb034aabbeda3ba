"""S0's question taken to its end: one autoencoder per latent size n (2 to 512), each with a
classifier on its encoder, frozen and fine-tuned, measured side by side against PCA at k=n and a
linear read-out of the codes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist_core import analysis
from fmnist_core.data.fashion import load_data
from fmnist_core.store.cache import RunCache
from fmnist_core.studies.reports.grid import Scale
from fmnist_core.training.config import RunConfig

SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512)
PROBE_IMAGES = 10_000  # training images the linear read-out is fitted on
CHANCE = 0.1  # accuracy of a guess among 10 balanced classes


@dataclass(frozen=True)
class SweepPoint:
    n: int
    autoencoder: RunConfig
    frozen: RunConfig
    fine_tuned: RunConfig


def latent_sweep(scale: Scale, sizes=SIZES) -> list[SweepPoint]:
    """S0's autoencoder (p=0.2, Adam) at each latent size, and S0's classifier on each encoder."""
    if not sizes or any(not 1 <= n <= 4096 for n in sizes):
        raise ValueError(f"sizes: {sizes} must be latent sizes from 1 to 4096")
    points = []
    for n in sizes:
        autoencoder = scale.config("conv_autoencoder", {"n": n})
        classifiers = [
            scale.config(
                "encoder_classifier",
                {"encoder_run": autoencoder.run_id, "freeze_encoder": frozen, "head": "s0"},  # S0's head
            )
            for frozen in (True, False)
        ]
        points.append(SweepPoint(n, autoencoder, *classifiers))
    return points


def sweep_configs(points: list[SweepPoint]) -> list[RunConfig]:
    """Every run of the sweep, each autoencoder before its classifiers (the order to queue them)."""
    return [config for p in points for config in (p.autoencoder, p.frozen, p.fine_tuned)]


def sweep_table(points: list[SweepPoint], cache: RunCache, probe=None) -> pd.DataFrame:
    """One row per n: test MSE, PCA's at k=n, the linear read-out's accuracy on the codes (`probe`,
    a function of an autoencoder run id, where given: it is the slow column), and the frozen and
    fine-tuned classifiers' test accuracy; NaN where a run is not cached."""
    data = load_data()
    pca = analysis.pca_mse_curve(data.train_images, data.test_images, [min(p.n, 784) for p in points])
    rows = []
    for point in points:
        row = {"n": point.n, "pca_mse": pca[min(point.n, 784)], "autoencoder_run": point.autoencoder.run_id}
        for column, config, metric in (
            ("test_mse", point.autoencoder, "test_mse"),
            ("frozen_accuracy", point.frozen, "test_accuracy"),
            ("fine_tuned_accuracy", point.fine_tuned, "test_accuracy"),
        ):
            row[column] = (
                cache.load_record(config.run_id)[1][metric] if cache.exists(config.run_id) else np.nan
            )
        cached = cache.exists(point.autoencoder.run_id)
        row["probe_accuracy"] = probe(point.autoencoder.run_id) if probe is not None and cached else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def probe_accuracy(autoencoder, images: int = PROBE_IMAGES) -> float:
    """The linear read-out of a trained autoencoder's codes: fitted on the first `images` training
    images' codes, scored on the whole test set."""
    data = load_data()
    train = analysis.latent_codes(autoencoder.model, data.train_images[:images])
    test = analysis.latent_codes(autoencoder.model, data.test_images)
    return analysis.linear_probe(train, data.train_labels[:images].numpy(), test, data.test_labels.numpy())


def sweep_findings(table: pd.DataFrame) -> list[str]:
    """What the sweep's table says, in sentences, from the rows that have figures."""
    findings = []
    trained = table.dropna(subset=["test_mse"])
    if len(trained):
        beats = trained[trained["test_mse"] < trained["pca_mse"]]["n"].tolist()
        loses = trained[trained["test_mse"] >= trained["pca_mse"]]["n"].tolist()
        findings.append(
            f"The autoencoder reconstructs better than PCA with as many components at n = "
            f"{', '.join(map(str, beats)) or 'none'}; PCA is better at n = {', '.join(map(str, loses)) or 'none'}."
        )
        best = trained.loc[trained["test_mse"].idxmin()]
        findings.append(f"Lowest test MSE: {best['test_mse']:.4f} at n={int(best['n'])}.")
    probed = table.dropna(subset=["probe_accuracy"])
    silent = probed[probed["probe_accuracy"] <= CHANCE + 0.01]["n"].tolist()
    if silent:
        findings.append(
            f"At n = {', '.join(map(str, silent))} a linear read-out of the codes is at chance: the code "
            "carries nothing (S0's ReLU on the code can leave every unit at 0 for every image, and a "
            "unit at 0 gets no gradient to leave it)."
        )
    for column, name in (
        ("probe_accuracy", "A linear read-out of the codes"),
        ("frozen_accuracy", "The classifier on the frozen encoder"),
        ("fine_tuned_accuracy", "The classifier with its encoder fine-tuned"),
    ):
        rows = table.dropna(subset=[column])
        if len(rows):
            best = rows.loc[rows[column].idxmax()]
            findings.append(
                f"{name}: {rows[column].min():.3f} to {rows[column].max():.3f}, best at n={int(best['n'])}."
            )
    return findings


def sweep_markdown(table: pd.DataFrame, scale: Scale) -> str:
    """The sweep as a page of text: the table and its findings."""
    from fmnist_core.studies.reports import _cell
    from fmnist_core.training.config import ENGINE_VERSION

    columns = ["n", "test_mse", "pca_mse", "probe_accuracy", "frozen_accuracy", "fine_tuned_accuracy"]
    lines = [
        "# Latent size sweep: S0's autoencoder from n=2 to n=512",
        "",
        f"S0's autoencoder (p=0.2, Adam) at each latent size n, epochs x {scale.epochs:g} of the report's "
        "10, and S0's classifier on each encoder, frozen and fine-tuned; PCA with k=n components fitted "
        "on the training images; a linear read-out (logistic regression) of the codes of "
        f"{PROBE_IMAGES:,} training images. Test figures on all 10,000 test images. Trained by engine "
        f"{ENGINE_VERSION}.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for record in table[columns].to_dict("records"):
        cells = [str(int(record["n"]))] + [_cell(record[c]) for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## What it shows", ""] + [f"- {finding}" for finding in sweep_findings(table)]
    missing = int(table["test_mse"].isna().sum())
    if missing:
        lines += ["", f"{missing} of {len(table)} autoencoders are not trained yet."]
    return "\n".join(lines) + "\n"


def write_sweep(table: pd.DataFrame, scale: Scale, out_dir) -> Path:
    """latent_sweep.md and latent_sweep.csv in `out_dir`; returns the .md's path."""
    from fmnist_core.base.files import write_text_atomic

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "latent_sweep.csv", table.to_csv(index=False))
    path = folder / "latent_sweep.md"
    write_text_atomic(path, sweep_markdown(table, scale))
    return path
