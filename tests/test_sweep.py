"""The latent size sweep: its runs, its table, and the PCA curve it is measured against."""

import numpy as np
import pytest

from fmnist_core import analysis, sweep
from fmnist_core.cache import RunCache
from fmnist_core.data import load_data
from fmnist_core.reports import Scale, train_missing
from fmnist_core.runs import load_run


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
