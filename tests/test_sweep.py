"""The latent size sweep: its runs, its table, and the PCA curve it is measured against."""

import numpy as np
import pandas as pd
import pytest

from fmnist_core import analysis
from fmnist_core.data.fashion import load_data
from fmnist_core.runs.trained import load_run
from fmnist_core.store.cache import RunCache
from fmnist_core.studies import sweep
from fmnist_core.studies.reports import Scale, train_missing


def test_the_pca_curve_matches_a_pca_fit_per_k():
    data = load_data()
    train, test = data.train_images[:5000], data.test_images[:2000]
    curve = analysis.pca_mse_curve(train, test, [4, 16, 784])
    assert curve[16] == pytest.approx(analysis.pca_reconstruction_mse(train, test, 16), abs=1e-6)
    assert curve[4] > curve[16] > curve[784] and curve[784] < 1e-9  # every component: exact


def test_a_sweep_builds_each_classifier_on_the_encoder_of_its_size():
    points = sweep.latent_sweep(Scale(), (2, 512))
    configs = sweep.sweep_configs(points)
    assert [c.model for c in configs] == ["conv_autoencoder", "encoder_classifier", "encoder_classifier"] * 2
    for point in points:
        assert point.autoencoder.settings["n"] == point.n
        assert {point.frozen.settings["encoder_run"], point.fine_tuned.settings["encoder_run"]} == {
            point.autoencoder.run_id
        }
        assert point.frozen.settings["freeze_encoder"] and not point.fine_tuned.settings["freeze_encoder"]
    with pytest.raises(ValueError, match="sizes"):
        sweep.latent_sweep(Scale(), (0, 8))


def test_a_small_sweep_trained_gives_a_full_table(tmp_path):
    cache = RunCache(tmp_path / "cache")
    points = sweep.latent_sweep(Scale(epochs=0.1, train_subset=1500, test_subset=500), (2, 16))
    table = sweep.sweep_table(points, cache)
    assert table["test_mse"].isna().all() and table["pca_mse"].notna().all()  # nothing trained yet
    train_missing(sweep.sweep_configs(points), cache)
    table = sweep.sweep_table(
        points, cache, probe=lambda run_id: sweep.probe_accuracy(load_run(run_id, cache), 2000)
    )
    assert table["n"].tolist() == [2, 16]
    assert table["pca_mse"].iloc[0] > table["pca_mse"].iloc[1]  # more components, less error
    assert ((table["test_mse"] > 0) & (table["test_mse"] < 0.25)).all()  # one short epoch: no more
    for column in ("probe_accuracy", "frozen_accuracy", "fine_tuned_accuracy"):
        assert ((table[column] >= 0.05) & (table[column] <= 1)).all(), column
    assert table["probe_accuracy"].iloc[1] > 0.3  # n=16: far above chance (0.1)
    # (At n=2 S0's ReLU on the code can leave both units dead after one short epoch: a constant
    # code, and the read-out at chance. The sweep shows such things as they are.)
    assert np.isfinite(table.drop(columns="autoencoder_run").to_numpy(dtype=float)).all()


def test_the_sweeps_findings_read_its_table():

    table = pd.DataFrame(
        {
            "n": [2, 64, 512],
            "pca_mse": [0.046, 0.010, 0.001],
            "test_mse": [0.040, 0.030, np.nan],
            "probe_accuracy": [0.10, 0.80, np.nan],
            "frozen_accuracy": [0.30, 0.75, np.nan],
            "fine_tuned_accuracy": [0.70, 0.90, np.nan],
        }
    )
    findings = sweep.sweep_findings(table)
    assert findings[0] == (
        "The autoencoder reconstructs better than PCA with as many components at n = 2; "
        "PCA is better at n = 64."
    )
    assert findings[1] == "Lowest test MSE: 0.0300 at n=64."
    assert findings[2].startswith("At n = 2 a linear read-out of the codes is at chance")
    assert "0.700 to 0.900, best at n=64" in findings[-1]
    text = sweep.sweep_markdown(table, Scale(epochs=0.2))
    assert (
        "| 512 | | 0.0010 |" in text.replace("  ", " ") and "1 of 3 autoencoders are not trained yet" in text
    )


def test_the_sweep_from_the_command_line_without_training(tmp_path, capsys):
    from fmnist_core.cli import main

    assert main(["sweep", "--no-train", "--no-probe", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "9 of 9 autoencoders are not trained yet" in printed
    table = pd.read_csv(tmp_path / "latent_sweep.csv")
    assert table["n"].tolist() == list(sweep.SIZES) and table["pca_mse"].is_monotonic_decreasing
    assert main(["sweep", "--epochs-scale", "0", "--no-train"]) == 2  # one line, naming the setting
    assert capsys.readouterr().err.strip() == "error: epochs-scale: 0.0 is outside (0, 10]"
