"""Every page through Streamlit's AppTest, with short real trainings on a subset of the real data."""

import base64
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from fmnist_core.data.fashion import load_data
from fmnist_core.runs.recipes import get_recipe
from fmnist_core.runs.trained import get_or_train, load_run
from fmnist_core.store.cache import RunCache
from fmnist_core.studies import hpsearch
from fmnist_core.studies import suspects as suspect_study
from fmnist_core.training.config import RunConfig
from ui import canvas, keys, navigation, warmup

ROOT = Path(__file__).resolve().parents[1]
PAGES = [file for file, _title, _icon in navigation.PAGES[1:]]  # Home has tests of its own


def open_app() -> AppTest:
    warmup.wait()  # as on any visit after a server's first: torch and the data already loaded
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()


def page(at: AppTest, path: str) -> AppTest:
    at.switch_page(path)
    return at.run()


def set_quick(at: AppTest, prefix: str) -> AppTest:
    """One epoch on 2,000 images: the sidebar's own widgets, as a person would set them."""
    at.slider(key=f"widget:{prefix}:epochs").set_value(1).run()
    at.selectbox(key=f"widget:{prefix}:images").set_value("2,000").run()
    return at


def rerun_until(at: AppTest, done: Callable[[AppTest], bool], what: str, timeout: float = 900) -> AppTest:
    """Rerun the page until `done(at)`, ever less often (a rerun draws the whole page: rerunning
    every half second took the cores from the training it waited for); fails on a page's exception
    or after `timeout` seconds (sized for a busy machine: a hang, not slowness)."""
    deadline, pause = time.monotonic() + timeout, 0.25
    while not done(at):
        assert time.monotonic() < deadline, what
        assert not at.exception, at.exception[0].value
        time.sleep(pause)
        pause = min(2 * pause, 4.0)
        at.run()
    return at


def wait_for_jobs(timeout: float = 900) -> None:
    """Until every job of the app's queue has ended (waited on the queue, not by rerunning the page)."""
    from ui.jobs import job_queue

    queue = job_queue()
    for job in queue.jobs():
        queue.wait(job.run_id, timeout=timeout)


def train_and_wait(at: AppTest, timeout: float = 900) -> AppTest:
    [button for button in at.button if button.label == "Train"][0].click().run()
    wait_for_jobs(timeout)
    return rerun_until(
        at, lambda at: any("Trained run" in s.value for s in at.success), "training did not finish"
    )


def until_gone(at: AppTest, text: str, timeout: float = 900) -> AppTest:
    """Rerun the page until a caption of first-use work running in the background (`text`) is gone."""
    return rerun_until(at, lambda at: not any(text in c.value for c in at.caption), f"still: {text}", timeout)


def until_calibrated(at: AppTest) -> AppTest:
    """Rerun the page until the garment check's background calibration has landed."""
    return until_gone(at, "Calibrating the garment check")


def array(field) -> np.ndarray:
    """A trace's data: plotly sends numpy arrays as base64 ('bdata') plus a dtype."""
    if isinstance(field, dict) and "bdata" in field:
        return np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"])
    return np.asarray(field)


def png_url(grey: np.ndarray) -> str:
    """A (H, W) image in [0, 1] as the canvas sends it: a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(grey, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(element.proto.spec) for element in at.get("plotly_chart")]


def test_home_renders_the_data_set_and_links():
    at = open_app()
    assert not at.exception
    assert at.title[0].value == "Fashion-MNIST Lab"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cached runs"] == "0" and metrics["Images"] == "60k + 10k"
    bars = [spec for spec in plotly_specs(at) if spec["data"][0]["type"] == "bar"]
    assert array(bars[0]["data"][0]["y"]).tolist() == [6000] * 10


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_on_an_empty_cache(path):
    at = page(open_app(), path)
    assert not at.exception, at.exception[0].value if at.exception else ""


def test_a_claim_card_asks_for_a_guess_then_shows_the_verdict_over_seeds():
    at = page(open_app(), "app_pages/reports.py")
    at.radio(key="widget:reports:name").set_value("S3").run()
    guesses = [c for c in at.get("button_group") if "guess:S3" in str(c.proto.id)]
    assert len(guesses) == 2  # S3's two claims
    # The rows that look for a cause say what they test, under their table.
    [note] = [c.value for c in at.caption if c.value.startswith("**model 1 with cross-entropy")]
    assert "quickstart" in note
    assert not any("Over 3 seeds" in m.value for m in at.markdown)  # nothing shown before a guess
    at.session_state["guess:S3:1.0:0"] = "holds"
    at.run()
    [verdict] = [m.value for m in at.markdown if "Over 3 seeds it" in m.value]
    # An empty cache: the repository's own runs over three seeds answer, with their mean ± std.
    assert "reports/S3-seeds3.csv" in verdict and " ± " in verdict
    assert any(v in verdict for v in ("**holds**", "**fails**", "**within seed noise**"))
    shown = [d.value for d in at.dataframe if "run" in d.value.columns]
    assert shown and shown[0]["run"].tolist() == ["model 2: Adam, 30 epochs", "model 1: SGD, 30 epochs"]
    assert shown[0]["test_accuracy"].str.contains(" ± ").all()
    at.radio(key="widget:reports:name").set_value("S0").run()
    notes = [c.value for c in at.caption if "head without the ReLU on the logits**" in c.value]
    assert len(notes) == 1 and "never predicted again" in notes[0]  # two rows, one note


@pytest.mark.slow
def test_the_sweep_page_queues_its_runs_encoders_first_and_lists_them():
    from ui.jobs import job_queue

    at = page(open_app(), "app_pages/sweep.py")
    assert any("27 of 27 runs of this sweep are not in the cache (0 queued)" in i.value for i in at.info)
    table = at.dataframe[0].value
    assert table["n"].tolist() == [2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert table["pca_mse"].is_monotonic_decreasing and table["test_mse"].isna().all()
    [button for button in at.button if button.label == "Queue the 27 missing runs"][0].click().run()
    queue = job_queue()
    jobs = queue.jobs()
    try:
        assert len(jobs) == 27 and [j.config.model for j in jobs[:3]] == [
            "conv_autoencoder",
            "encoder_classifier",
            "encoder_classifier",
        ]
        assert jobs[1].config.settings["encoder_run"] == jobs[0].run_id
        assert any("(27 queued)" in i.value for i in at.info)
    finally:
        for job in jobs:
            queue.stop(job.run_id)
        for job in jobs:
            queue.wait(job.run_id, timeout=900)


def test_invalid_setting_is_a_message_not_a_traceback():
    at = page(open_app(), "app_pages/classifier.py")
    at.selectbox(key="widget:cls:model").set_value("cnn").run()
    at.text_area[0].set_value("conv:32:3:same:relu\nwobble:3").run()
    assert not at.exception
    assert any("layers" in e.value for e in at.error)


def test_a_page_that_fails_shows_one_line_not_a_traceback(monkeypatch):
    import ui.runs

    def broken():
        raise RuntimeError("the listing broke")

    monkeypatch.setattr(ui.runs, "runs_table", broken)
    at = page(open_app(), "app_pages/try_it.py")
    # Under FMNIST_DEBUG=1 (the tests' setting) the failure surfaces as itself.
    assert at.exception and "the listing broke" in at.exception[0].value
    monkeypatch.delenv("FMNIST_DEBUG")
    at = page(open_app(), "app_pages/try_it.py")
    assert not at.exception
    assert any("the listing broke" in e.value and "untouched" in e.value for e in at.error)


@pytest.mark.slow
def test_autoencoder_then_classifier_then_every_page_with_results(monkeypatch):
    at = page(open_app(), "app_pages/autoencoder.py")
    at.slider(key="widget:conv_autoencoder:n").set_value(16).run()
    at.slider(key="widget:conv_autoencoder:dropout").set_value(0.0).run()
    at.select_slider(key="widget:ae:conv_autoencoder:batch").set_value(16).run()
    set_quick(at, "ae:conv_autoencoder")
    assert any("Not trained yet" in i.value for i in at.info)
    train_and_wait(at)
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert 0 < float(metrics["Test MSE (eval mode)"]) < 0.07  # predicting the mean image scores about 0.09
    specs = plotly_specs(at)
    curve = [s for s in specs if any(trace.get("name") == "validation loss" for trace in s["data"])]
    assert curve and len(array(curve[0]["data"][0]["x"])) == 1
    assert any(s["data"][0]["type"] == "image" for s in specs)  # reconstructions
    assert any("Reconstructions after epoch 1" in m.value for m in at.markdown)  # the epoch's snapshot

    at = page(at, "app_pages/classifier.py")
    at.radio(key="widget:encoder_classifier:head").set_value("fc").run()
    at.select_slider(key="widget:cls:encoder_classifier:batch").set_value(16).run()
    set_quick(at, "cls:encoder_classifier")
    train_and_wait(at)
    assert not at.exception
    accuracy = float({m.label: m.value for m in at.metric}["Test accuracy"])
    assert 0.25 < accuracy <= 1.0  # chance is 0.1; 125 steps on a 16-d code
    heatmaps = [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]
    cells = [p for spec in heatmaps for p in spec.get("params", []) if p["name"] == "cell"]
    assert cells and cells[0]["select"]["fields"] == ["true_index", "predicted_index"]
    [per_class] = [d.value for d in at.dataframe if "class" in d.value.columns]
    assert per_class["class"].tolist()[6] == "Shirt"
    assert any("Validation confusion after epoch 1" in m.value for m in at.markdown)
    error = float({m.label: m.value for m in at.metric}["Expected calibration error"])
    assert 0 <= error < 0.5
    assert len(heatmaps) == 2  # the test matrix, clickable, and epoch 1's in the expander

    at = page(at, "app_pages/latent.py")
    assert not at.exception
    latent_map, timelapse_map, _ = at.get("echarts_chart")  # ECharts, each garment's image on hover
    [moment] = [s for s in at.select_slider if s.label == "Moment of training"]
    assert moment.options == ["before training", "epoch 0.5", "epoch 1"]
    assert json.loads(timelapse_map.proto.spec)["xAxis"]["min"] < 0  # fixed axes around the centred map
    assert any("Reconstructions at epoch 1" in m.value for m in at.markdown)
    moment.set_value(1).run()  # the options are frame numbers, shown as moments
    assert any("Reconstructions at epoch 0.5" in m.value for m in at.markdown)
    spec = json.loads(latent_map.proto.spec)
    assert "{@image}" in spec["tooltip"]["formatter"] and spec["series"][0]["selectedMode"] == "multiple"
    assert spec["visualMap"]["categories"][1] == "Trouser"
    assert any(h.value == "Walk across a class boundary" for h in at.subheader)
    assert any(h.value == "Latent atlas" for h in at.subheader) and len(at.get("echarts_chart")) == 3
    [flips] = [d.value for d in at.dataframe if "code path" in d.value.columns]
    # The default walk joins an image the classifier gets right to one of the class it mistook it
    # for: the pixel blend's two ends are those very images, so its answer must change on the way.
    assert len(flips) == 1 and flips["pixel blend"].iloc[0].startswith("at ")
    [start] = [box for box in at.selectbox if box.label == "Start from"]
    assert " taken for " in start.value  # by default, the best classifier's commonest mistake

    at = page(at, "app_pages/compare.py")
    assert not at.exception
    assert len(at.dataframe[0].value) == 2

    at = page(at, "app_pages/reports.py")
    assert not at.exception
    assert any("not in this machine's cache" in w.value and "reports/S0.csv" in w.value for w in at.warning)
    sources = set(at.dataframe[0].value["source"])  # a fresh cache: the committed reproduction's figures
    assert len(sources) == 1 and sources.pop().startswith("repository, engine")

    # Try it: the canvas is a browser component (tests/test_browser.py draws on it with the mouse);
    # here its answer is patched in: a real test image, drawn big.
    data = load_data()
    index = int(np.flatnonzero(data.test_labels.numpy() == 1)[0])  # a trouser
    big = np.kron(data.test_images[index, 0].numpy(), np.ones((10, 10)))
    monkeypatch.setattr(canvas, "draw", lambda key: png_url(big))
    at = page(at, "app_pages/try_it.py")
    assert not at.exception, at.exception[0].value if at.exception else ""
    answers = at.dataframe[0].value  # at once: the garment check calibrates in the background
    assert len(answers) == 1 and answers["answer"].iloc[0] in ("Trouser", "Dress")
    assert any("Calibrating the garment check" in c.value for c in at.caption)
    at = until_calibrated(at)
    assert any("Garment check passed" in c.value for c in at.caption)  # a real test image
    assert any("Red pixels push the model towards the class" in c.value for c in at.caption)  # why: occlusion
    [button for button in at.button if button.label.startswith("Sanity check")][0].click().run()
    assert any(
        "weights are random" in m.value or "random weights" in m.value for m in [*at.success, *at.warning]
    )
    assert not [w for w in at.warning if "does not look like" in w.value]
    y, x = np.indices((280, 280))
    board = ((x // 14 + y // 14) % 2).astype(np.float32)  # a checkerboard drawn instead: no garment
    monkeypatch.setattr(canvas, "draw", lambda key: png_url(board))
    at = page(at, "app_pages/try_it.py")  # calibrated once: no wait now
    assert any("does not look like a Fashion-MNIST garment" in w.value for w in at.warning)
    assert any("not to be trusted" in w.value for w in at.warning)


def test_cached_run_is_shown_at_once_without_training():
    # The form's run at FMNIST_SCALE=test: scored on 1,000 test images.
    config = RunConfig.for_model("mlp", epochs=1, train_subset=2000, batch_size=100, test_subset=1000)
    get_or_train(config)
    at = page(open_app(), "app_pages/classifier.py")
    at.selectbox(key="widget:cls:model").set_value("mlp").run()
    set_quick(at, "cls:mlp")
    assert any(config.run_id in s.value for s in at.success), [s.value for s in at.success]


def test_recipe_buttons_set_the_widgets_to_the_recipe():
    at = page(open_app(), "app_pages/autoencoder.py")  # it opens on the starter set's run: this recipe
    assert at.toggle(key="widget:conv_autoencoder:pca_path").value is True
    at.toggle(key="widget:conv_autoencoder:pca_path").set_value(False).run()
    at.toggle(key="widget:conv_autoencoder:batchnorm").set_value(False).run()
    at.slider(key="widget:conv_autoencoder:dropout").set_value(0.3).run()
    assert at.toggle(key="widget:conv_autoencoder:pca_path").value is False
    [button for button in at.button if button.label == "Use the fast_autoencoder recipe"][0].click().run()
    assert at.toggle(key="widget:conv_autoencoder:pca_path").value is True
    assert at.toggle(key="widget:conv_autoencoder:batchnorm").value is True
    assert at.slider(key="widget:conv_autoencoder:dropout").value == 0.0
    assert at.select_slider(key="widget:ae:conv_autoencoder:lr").value == 3e-3
    assert not at.exception
    at = page(at, "app_pages/classifier.py")
    at.selectbox(key="widget:cls:model").set_value("cnn").run()
    [button for button in at.button if button.label == "Use the fast_cnn recipe"][0].click().run()
    assert at.selectbox(key="widget:cnn:layers:preset").value == "fast_cnn (the lab's recipe)"
    assert at.radio(key="widget:cls:cnn:tta").value == "flip"
    assert at.select_slider(key="widget:cls:cnn:batch").value == 128
    [button for button in at.button if button.label == "Use the long_cnn recipe"][0].click().run()
    assert at.selectbox(key="widget:cnn:layers:preset").value == "long_cnn (the lab's recipe)"
    assert at.radio(key="widget:cls:cnn:augment").value == "flip_shift"
    assert at.slider(key="widget:cls:cnn:epochs").value == get_recipe("long_cnn").run["epochs"]
    layers = at.text_area(key="cnn:layers:long_cnn (the lab's recipe)").value
    assert layers.split("\n") == list(get_recipe("long_cnn").settings["layers"])
    assert at.radio(key="widget:cls:cnn:precision").value == "auto"  # resolved when it trains
    [button for button in at.button if button.label == "Use the speedrun recipe"][0].click().run()
    assert at.selectbox(key="widget:cnn:layers:preset").value == "speedrun (the lab's recipe)"
    assert (at.toggle(key="widget:cls:cnn:whiten").value, at.toggle(key="widget:cls:cnn:dirac").value) == (
        True,
        True,
    )
    assert at.select_slider(key="widget:cls:cnn:bnlr").value == 8.0
    assert at.select_slider(key="widget:cls:cnn:ema").value == 0.99
    assert (at.radio(key="widget:cls:cnn:augment").value, at.radio(key="widget:cls:cnn:tta").value) == (
        "alt_flip_shift",
        "flip_shift",
    )
    assert not at.exception


def test_pickers_tell_runs_apart_and_put_the_best_first():
    from ui.runs import run_label, runs_table

    configs = [
        RunConfig.for_model("conv_autoencoder", {"n": n}, epochs=1, train_subset=subset, test_subset=500)
        for n, subset in [(8, 300), (8, 1000), (64, 1000)]
    ]
    runs = [get_or_train(config) for config in configs]
    table = runs_table()
    assert table["test_mse"].is_monotonic_increasing  # the best autoencoder first
    assert table["test_mse"].iloc[0] == min(run.metrics["test_mse"] for run in runs)
    labels = [run_label(row) for _, row in table.iterrows()]
    assert len({label[:40] for label in labels}) == 3  # even cut short, the labels differ
    assert all(label.startswith("MSE 0.") for label in labels)
    assert any("300 imgs" in label for label in labels) and any("1k imgs" in label for label in labels)


@pytest.mark.slow
def test_a_training_stays_in_view_when_a_setting_moves_and_every_sidebar_lists_it():
    at = page(open_app(), "app_pages/autoencoder.py")
    at.slider(key="widget:ae:conv_autoencoder:epochs").set_value(30).run()  # minutes: stopped below
    [button for button in at.button if button.label == "Train"][0].click().run()
    assert any("Training queue" in m.value for m in at.sidebar.markdown)
    at.slider(key="widget:conv_autoencoder:dropout").set_value(0.35).run()  # another config now
    assert any("Not trained yet" in i.value for i in at.info)
    assert any("Training now, with other settings" in m.value for m in at.markdown)
    at = page(at, "app_pages/home.py")  # and from any other page
    assert any("Training queue" in m.value for m in at.sidebar.markdown)
    [button for button in at.sidebar.button if button.label.startswith(("Stop", "Cancel"))][0].click().run()
    wait_for_jobs()
    rerun_until(
        at, lambda at: not any("Training queue" in m.value for m in at.sidebar.markdown), "still listed"
    )


@pytest.mark.slow
def test_stop_keeps_the_finished_epochs_in_view_and_continue_ends_the_run():
    from ui.jobs import job_queue

    at = page(open_app(), "app_pages/autoencoder.py")
    at.slider(key="widget:ae:conv_autoencoder:epochs").set_value(4).run()
    at.selectbox(key="widget:ae:conv_autoencoder:images").set_value("2,000").run()
    [button for button in at.button if button.label == "Train"][0].click().run()
    [job] = job_queue().jobs()
    deadline = time.monotonic() + 900
    while len((job := job_queue().get(job.run_id)).epochs) < 1:  # as the queue has it now
        assert time.monotonic() < deadline and job.active, "no epoch finished"
        time.sleep(0.1)
    at.button(key=f"stop:{job.run_id}").click().run()
    while job_queue().get(job.run_id).active:
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.2)
    at.run()
    [warning] = [w.value for w in at.warning if "Stopped after" in w.value]
    done = int(warning.split("Stopped after ")[1].split()[0])
    assert 1 <= done < 4 and "of 4 epochs" in warning
    assert any(f"To continue: {4 - done} epochs" in i.value for i in at.info)
    assert plotly_specs(at)  # the stopped run's curves
    [button for button in at.button if button.label == "Continue"][0].click().run()
    wait_for_jobs()
    at = rerun_until(
        at, lambda at: any("Trained run" in s.value for s in at.success), "the run did not finish"
    )
    # It says it went on from its kept epochs (the job's note, once only in the queue's database).
    assert any(f"; continued from epoch {done}." in s.value for s in at.success), [
        s.value for s in at.success
    ]
    run = job_queue().get(job.run_id).result
    assert run.completed and run.note.startswith(f"continued from epoch {done}")
    assert run.history["epoch"] == [1, 2, 3, 4]


def test_a_train_button_states_the_time_measured_on_this_machine():
    from fmnist_core import views

    runs = pd.DataFrame(
        {
            "model": ["mlp", "mlp", "cnn"],
            "train_seconds": [10.0, 30.0, 500.0],
            "epochs_done": [1, 3, 1],
            "train_subset": [10_000, 0, 0],
            "batch_size": [100, 100, 128],
        }
    )
    # mlp: 1e-3 s per image and epoch in the first run, 1/6000 in the second; the median of the two
    estimate = views.estimate_seconds(RunConfig.for_model("mlp", epochs=2), runs)
    assert estimate.seconds == pytest.approx(2 * 60_000 * np.median([1e-3, 30 / 180_000]))
    assert "2 mlp runs" in estimate.basis
    assert views.estimate_seconds(RunConfig.for_model("resnet"), runs) is None  # never timed here
    assert (
        views.duration(42) == "42 s" and views.duration(600) == "10 min" and views.duration(7200) == "2.0 h"
    )


def test_the_first_page_shows_before_torch_and_the_data_have_loaded():
    """On a cold server Home draws without torch (a placeholder where the data will be)."""
    script = f"""
import subprocess
import sys
sys.path.insert(0, {str(ROOT)!r})
from ui import warmup
warmup.start = lambda: None  # never warms here: what a visitor sees in the first seconds
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(ROOT / "app.py")!r}, default_timeout=600).run()
assert not at.exception, at.exception
assert at.title[0].value == "Fashion-MNIST Lab"
assert any("Loading PyTorch" in i.value for i in at.info), [i.value for i in at.info]
print("torch loaded:", "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch loaded: False" in done.stdout


@pytest.mark.slow
def test_home_shows_the_starter_set_training_on_an_empty_cache(monkeypatch):
    monkeypatch.setenv("FMNIST_STARTER", "1")
    at = open_app()
    try:
        assert any("starter set is training" in h.value for h in at.subheader)
        table = at.dataframe[0].value
        assert table["run"].tolist()[0].startswith("MLP") and len(table) == 5
        assert set(table["state"]) <= {"queued", "running"}
        assert any("Training queue" in m.value for m in at.sidebar.markdown)
    finally:
        from ui.jobs import job_queue

        queue = job_queue()
        for job in queue.jobs():
            queue.stop(job.run_id)
        for job in queue.jobs():
            queue.wait(job.run_id, timeout=900)


@pytest.mark.parametrize(
    "url, base, wrong",
    [
        ("http://localhost:8501/", "", None),
        ("http://localhost:8501", "", None),
        ("http://localhost:8501/classifier", "", None),
        ("http://localhost:8501/classifer", "", "classifer"),  # a typo
        ("http://localhost:8501/lab/latent", "lab", None),  # served under a base path
        ("http://localhost:8501/lab/", "/lab/", None),
        ("http://localhost:8501/lab/nothing/here", "lab", "nothing/here"),
        ("http://localhost:8501/labs", "lab", "labs"),
    ],
)
def test_an_unknown_page_path_is_named_and_a_known_one_is_not(url, base, wrong):
    assert navigation.unknown_path(url, base, {"classifier", "latent"}) == wrong


@pytest.mark.parametrize(
    "text, default, limits, value",
    [
        ("S3", "S0", {"options": ["S0", "S3"]}, "S3"),
        ("S9", "S0", {"options": ["S0", "S3"]}, "S0"),  # not an option: the default
        ("0.35", 0.2, {"min_value": 0.0, "max_value": 0.7}, 0.35),
        ("9", 0.2, {"min_value": 0.0, "max_value": 0.7}, 0.2),  # out of range
        ("nan", 0.2, {}, 0.2),
        ("12", 10, {}, 12),
        ("twelve", 10, {}, 10),
        ("+12", 10, {}, 10),  # int() takes these; no widget writes them
        ("012", 10, {}, 10),
        ("1_2", 10, {}, 10),
        (" 12", 10, {}, 10),
        ("1e-05", 0.001, {}, 1e-05),  # as str() writes a small learning rate
        ("true", False, {}, True),
        (None, "S0", {}, "S0"),
    ],
)
def test_a_value_from_the_url_is_used_only_where_the_widget_could_hold_it(text, default, limits, value):
    from ui.widgets import from_url

    assert from_url(text, default, limits) == value


def open_link(path: str, **values: str) -> AppTest:
    """A page opened through a link carrying widget values (?key=value)."""
    warmup.wait()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    for key, value in values.items():
        at.query_params[key.replace("__", ":")] = value
    at.switch_page(path)
    return at.run()


def test_the_quiz_takes_30_images_or_the_quick_10_its_link_asks_for():
    """Three of each class by default, answered with the buttons (three wrong on purpose: 90%);
    the length is fixed once the first answer is in. A link's `quiz:size=10` gives one of each."""
    from fmnist_core import views

    get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=2000, test_subset=1000))
    labels = load_data().test_labels.numpy()

    def length(at: AppTest):
        return [r for r in at.radio if r.label == "Images in the quiz"][0]

    at = page(open_app(), "app_pages/quiz.py")
    assert length(at).value == 30 and not length(at).disabled
    quiz = views.quiz_images(labels, per_class=3, seed=0)
    for number, index in enumerate(quiz):
        assert any(f"Image {number + 1} of 30" in p.proto.text for p in at.get("progress"))
        answer = (labels[index] + 1) % 10 if number < 3 else labels[index]
        at.button(key=f"quiz:answer:{answer}").click().run()
        assert not at.exception
        if number == 0:
            assert length(at).disabled
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["You"] == "90.0%" and metrics["People (Zalando's README)"] == "83.5%"

    at = open_link("app_pages/quiz.py", quiz__size="10")
    assert length(at).value == 10
    assert any("one of each class" in c.value for c in at.caption)
    assert any("Image 1 of 10" in p.proto.text for p in at.get("progress"))
    # Two clicks that reach the page in one rerun (a person clicking on while it redraws) answer the
    # image shown, once: not the next one, unseen.
    at.button(key="quiz:answer:1").click()
    at.button(key="quiz:answer:2").click().run()
    assert any("Image 2 of 10" in p.proto.text for p in at.get("progress"))
    at = open_link("app_pages/quiz.py", quiz__size=["10", "30"])  # a link that says both: neither
    assert length(at).value == 30 and "10 and 30" in at.toast[0].value


@pytest.mark.slow
def test_the_speedrun_tricks_in_the_classifier_form_reach_the_run_it_trains():
    """Each trick is a run setting of the form (and of its link); one the model cannot take is a
    message before anything trains."""
    quick = {"cls__model": "cnn", "cls__cnn__epochs": "1", "cls__cnn__images": "2,000"}
    at = open_link("app_pages/classifier.py", **quick, cls__cnn__whiten="true")
    assert any("whiten: the first conv has" in e.value for e in at.error)  # S1's first conv: 35 filters
    assert not [b for b in at.button if b.key and b.key.startswith("train:")]
    tricks = {"cls__cnn__dirac": "true", "cls__cnn__bnlr": "8.0", "cls__cnn__ema": "0.99"}
    at = open_link("app_pages/classifier.py", **quick, **tricks)
    assert not at.error and at.toggle(key="widget:cls:cnn:dirac").value is True
    [train] = [b for b in at.button if b.key and b.key.startswith("train:")]
    train.click().run()
    wait_for_jobs()
    config = RunCache().load_config(train.key.removeprefix("train:"))
    assert (config.dirac, config.bn_bias_lr, config.ema, config.whiten) == (True, 8.0, 0.99, False)
    assert config.epochs == 1 and config.train_subset == 2000


def test_a_quiz_image_reaches_the_browser_after_the_buttons_that_answer_it(monkeypatch):
    """Drawn before its buttons, image 5 showed while the buttons still answered image 4: a click
    then was dropped, and the quiz stood still (CI's browser walk waited at "Image 6 of 10")."""
    from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

    sent: list[str] = []
    enqueue = ForwardMsgQueue.enqueue

    def recording(self, msg):
        if msg.HasField("delta") and msg.delta.HasField("new_element"):
            sent.append(msg.delta.new_element.WhichOneof("type"))
        return enqueue(self, msg)

    monkeypatch.setattr(ForwardMsgQueue, "enqueue", recording)
    at = open_link("app_pages/quiz.py", quiz__size="10")
    sent.clear()
    at.button(key="quiz:answer:3").click().run()
    assert any("Image 2 of 10" in p.proto.text for p in at.get("progress"))
    assert sent.count("button") >= 10 and {"imgs", "progress"} <= set(sent)
    last_button = max(i for i, kind in enumerate(sent) if kind == "button")
    assert sent.index("imgs") > last_button and sent.index("progress") > last_button, sent


def test_the_teachers_link_makes_an_admin_even_when_a_rerun_ends_the_run_that_read_it(monkeypatch):
    """A rerun asked for meanwhile (a component's value, a fragment's timer) ends a run at its next
    call to Streamlit. The run that took ?admin= out of the address ended there before it kept the
    verdict, and the teacher's link made no admin: seen beside two busy processes, where Bob's Stop
    never came. The run here ends right after the token leaves the address, as it did there."""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException
    from streamlit.runtime.state.query_params_proxy import QueryParamsProxy

    token = "a-teachers-token-of-some-length"
    monkeypatch.setenv("FMNIST_CLASS", "1")
    monkeypatch.setenv("FMNIST_ADMIN_TOKEN", token)
    delete = QueryParamsProxy.__delitem__

    def ended_there(self, key):
        delete(self, key)
        if key == "admin":
            raise StopException()

    monkeypatch.setattr(QueryParamsProxy, "__delitem__", ended_there)
    at = open_link("app_pages/home.py", admin=token)
    assert "admin" not in at.query_params
    monkeypatch.setattr(QueryParamsProxy, "__delitem__", delete)
    at.run()
    assert keys.ADMIN in at.session_state and at.session_state[keys.ADMIN] is True
    assert any("Admin: you may stop any job" in toast.value for toast in at.toast)
    # A reload or a second tab is the same person (the cookie's name): still the admin.
    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    again.session_state[keys.OWNER] = at.session_state[keys.OWNER]
    again.run()
    assert again.session_state[keys.ADMIN] is True
    wrong = open_link("app_pages/home.py", ADMIN="not-the-teachers-token-at-all")  # any case of the name
    assert not wrong.query_params and keys.ADMIN not in wrong.session_state
    assert any("token is not this lab's" in toast.value for toast in wrong.toast)


def test_the_teachers_token_leaves_the_address_before_the_lab_has_warmed_up(monkeypatch):
    """On a cold server the page waits seconds for torch and the data: the token showed in the
    address all that while (on a projected screen too). It leaves at once and is checked later."""
    token = "a-teachers-token-of-some-length"
    monkeypatch.setenv("FMNIST_CLASS", "1")
    monkeypatch.setenv("FMNIST_ADMIN_TOKEN", token)
    ready = warmup.ready
    warmup.wait()
    monkeypatch.setattr(warmup, "ready", lambda: False)
    at = open_link("app_pages/home.py", admin=token)
    assert "admin" not in at.query_params and at.session_state[keys.ADMIN_GIVEN] == token
    assert keys.ADMIN not in at.session_state
    monkeypatch.setattr(warmup, "ready", ready)
    at.run()
    assert at.session_state[keys.ADMIN] is True and keys.ADMIN_GIVEN not in at.session_state


def test_a_link_reopens_the_same_view_and_the_view_writes_its_link():
    at = open_link("app_pages/reports.py", reports__name="S3")
    assert at.title[0].value == "S3: feed-forward network"
    at.radio(key="widget:reports:name").set_value("S1").run()
    assert at.query_params["reports:name"] == "S1"  # the URL follows the view


@pytest.mark.slow
def test_the_suspect_data_page_counts_duplicates_and_mislabels_and_maps_a_run():
    at = page(open_app(), "app_pages/suspects.py")  # the first visit's search runs in the background
    at = until_gone(at, "Looking for near-duplicates and doubted labels")
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pairs within test"] == "1" and metrics["Byte-identical"] == "0"
    assert int(metrics["Labels doubted out of fold"]) > 1000
    assert metrics["Flagged as mislabels"] == metrics["Labels doubted out of fold"]  # no map yet
    assert [b for b in at.button if b.label == "Train it"]
    assert any("6 of 6 runs of the comparison are not in the cache" in i.value for i in at.info)

    # A small run that kept its training dynamics: its map of 3,000 images, and only the doubted
    # labels it never learnt stay flagged.
    small = suspect_study.retrain_base(0, cartography=True).replace(epochs=2, train_subset=3000)
    get_or_train(small, cache=RunCache())
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert sum(int(metrics[r]) for r in ("Easy to learn", "Ambiguous", "Hard to learn")) == 3000
    assert int(metrics["Flagged as mislabels"]) < int(metrics["Labels doubted out of fold"])
    assert "of the 3,000 images it trained on" in " ".join(c.value for c in at.caption)


def test_runs_on_other_data_are_never_picked_and_are_labelled_where_listed():
    from ui.runs import run_label, runs_table

    real = get_or_train(RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300))
    other = real.config.replace(data="other-0123456789abcdef")
    RunCache().save(other, real.model, real.history, {**real.metrics, "test_accuracy": 0.99})
    picked = runs_table()
    assert picked["run_id"].tolist() == [real.run_id]  # 0.99 on its own test set: not the best here
    listed = runs_table(all_data=True)
    assert listed["run_id"].tolist() == [real.run_id, other.run_id]  # after the real ones
    assert run_label(listed.iloc[1]).startswith("[other data other-0123456789abcdef] acc 0.990")
    at = page(open_app(), "app_pages/compare.py")
    shown = at.dataframe[0].value
    assert set(shown["data"]) == {"fashion-mnist", "other-0123456789abcdef"}


def test_a_new_loss_is_one_entry_that_trains_shows_in_the_form_and_is_named_in_compare(monkeypatch):
    """A throwaway loss registered in the table of losses alone (analysis.losses): the config
    accepts it, a run trains with it, the form offers it and Compare runs names its curves."""
    import torch.nn.functional as F

    from fmnist_core.analysis import losses

    hinge = losses.Loss(
        "hinge", "multi-class hinge", "classifier", lambda out, y, _: F.multi_margin_loss(out, y)
    )
    monkeypatch.setitem(losses.LOSSES, "hinge", hinge)
    with pytest.raises(ValueError, match="loss: 'hinge' is not one of"):
        RunConfig.for_model("conv_autoencoder", loss="hinge")  # an autoencoder's losses are its own
    run = get_or_train(RunConfig.for_model("mlp", loss="hinge", epochs=1, train_subset=2000, test_subset=500))
    assert run.history["train_loss"][0] > 0 and run.metrics["test_accuracy"] > 0.5  # it learns
    assert run.predict_proba(load_data().test_images[:5]).sum(1) == pytest.approx([1.0] * 5)
    at = page(open_app(), "app_pages/classifier.py")
    at.selectbox(key="widget:cls:model").set_value("mlp").run()
    assert at.selectbox(key="widget:cls:mlp:loss").options == [
        "cross-entropy",
        "MSE on one-hot",
        "KL divergence",
        "multi-class hinge",
    ]
    at.selectbox(key="widget:cls:mlp:loss").set_value("hinge").run()
    assert not at.exception and not at.error
    from ui.compare_sections import overlay_title  # the page's curves of runs selected in its table

    assert overlay_title("val_loss", "hinge") == "val loss (multi-class hinge)"
    assert overlay_title("val_loss", "cross_entropy") == "val loss (cross-entropy)"


def test_a_link_value_the_page_cannot_hold_is_said_not_dropped():
    at = open_link("app_pages/reports.py", reports__name="S9")
    assert at.title[0].value.startswith("S0")  # the default report
    assert any("'S9'" in toast.value and "not a value this page offers" in toast.value for toast in at.toast)


def test_a_page_without_its_model_says_what_trains_and_fills_in_when_it_ends():
    at = page(open_app(), "app_pages/try_it.py")
    assert any("No trained model yet" in i.value for i in at.info)
    from ui.jobs import job_queue

    config = RunConfig.for_model("mlp", epochs=2, train_subset=2000, test_subset=500)
    job_queue().submit(config)
    at.run()
    said = [i.value for i in at.info]
    assert any(value.startswith(("Training now: mlp", "Queued: mlp")) for value in said), said
    deadline = time.monotonic() + 900
    while not RunCache().exists(config.run_id) or job_queue().get(config.run_id).active:
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.5)
    at.run()  # the fragment's next tick: the job has ended, so the whole page reruns
    at.run()
    assert not any("No trained model yet" in i.value or "Training now" in i.value for i in at.info)
    assert any("Draw one garment" in c.value for c in at.caption)  # the page itself, past its guard


def test_a_page_waiting_on_a_queued_job_says_queued_and_what_is_ahead_of_it():
    from ui.jobs import job_queue

    queue = job_queue()
    # Minutes of work ahead (stopped at the end), so the autoencoder is still queued when the page looks.
    ahead = queue.submit(RunConfig.for_model("mlp", epochs=30, test_subset=500))
    waited = queue.submit(
        RunConfig.for_model("conv_autoencoder", epochs=1, train_subset=2000, test_subset=500)
    )
    try:
        deadline = time.monotonic() + 900
        while queue.get(ahead.run_id).state != "running":
            assert time.monotonic() < deadline, "the first job did not start"
            time.sleep(0.2)
        at = page(open_app(), "app_pages/classifier.py")
        at.selectbox(key="widget:cls:model").set_value("encoder_classifier").run()  # it needs an autoencoder
        said = [i.value for i in at.info]
        assert f"Queued: conv_autoencoder · `{waited.run_id[:6]}`, 1 training(s) ahead of it." in " ".join(
            said
        ), said
        assert not any(value.startswith("Training now") for value in said), said
    finally:
        queue.stop(waited.run_id)
        queue.stop(ahead.run_id)
        queue.wait(ahead.run_id, timeout=900)
        queue.wait(waited.run_id, timeout=900)


@pytest.mark.parametrize(
    "path, picker, model",
    [
        ("app_pages/classifier.py", "cls:model", "mlp"),
        ("app_pages/classifier.py", "cls:model", "cnn"),
        ("app_pages/autoencoder.py", "ae:model", "conv_autoencoder"),
    ],
)
def test_each_page_starts_from_the_starter_sets_run(path, picker, model):
    """A newcomer lands on the run the starter set trains (not a 'Not trained yet' for a config
    nobody queued): the page's defaults and the starter's config are one run."""
    from fmnist_core.runs.starter import starter_set

    [config] = [s.config for s in starter_set() if s.config.model == model]
    at = page(open_app(), path)
    at.selectbox(key=f"widget:{picker}").set_value(model).run()
    assert [b for b in at.button if b.key == f"train:{config.run_id}"], [b.key for b in at.button]


@pytest.mark.slow
def test_the_classifier_page_opens_on_what_can_train_now_not_on_a_wait():
    """With no autoencoder cached (the starter set's first minute), the Classifier page opens on the
    MLP the starter set trains first, not on a classifier waiting for an encoder; once a classifier
    is cached it opens on the best one's model, and with only an autoencoder on the encoder's."""
    from fmnist_core.runs.starter import starter_set

    at = page(open_app(), "app_pages/classifier.py")
    mlp = starter_set()[0].config
    assert at.selectbox(key="widget:cls:model").value == "mlp" == mlp.model
    assert [b for b in at.button if b.key == f"train:{mlp.run_id}"]
    get_or_train(
        RunConfig.for_model("conv_autoencoder", {"n": 8}, epochs=1, train_subset=500, test_subset=500)
    )
    assert (
        page(open_app(), "app_pages/classifier.py").selectbox(key="widget:cls:model").value
        == "encoder_classifier"
    )
    get_or_train(RunConfig.for_model("cnn", epochs=1, train_subset=500, test_subset=500))
    assert page(open_app(), "app_pages/classifier.py").selectbox(key="widget:cls:model").value == "cnn"


@pytest.mark.slow
def test_a_vae_trains_from_the_autoencoder_page_and_the_latent_page_draws_its_prior():
    """Registered by its model file alone, the VAE gets its form (the β slider), its KL term in the
    curves, and the Latent space page's prior samples; no page names it."""
    at = page(open_app(), "app_pages/autoencoder.py")
    at.selectbox(key="widget:ae:model").set_value("vae").run()
    assert at.select_slider(key="widget:vae:beta").value == 1.0
    at.select_slider(key="widget:vae:beta").set_value(0.5).run()
    at.select_slider(key="widget:vae:n").set_value(8).run()
    set_quick(at, "ae:vae")
    train_and_wait(at)
    assert not at.exception
    titles = [a.get("text") for s in plotly_specs(at) for a in s.get("layout", {}).get("annotations", [])]
    assert "term: kl" in titles and "term: mse" in titles  # the loss's two terms, each on its own scale
    at = page(at, "app_pages/latent.py")
    assert not at.exception
    assert any(h.value == "New garments from the prior" for h in at.subheader)
    assert at.select_slider(key="prior:count").value == 32
    assert any(h.value == "Walk across a class boundary" for h in at.subheader)  # a decoder like any other


@pytest.fixture
def small_runs():
    """A small CNN and a small autoencoder, as a person's first minutes leave them."""
    cnn = RunConfig.for_model(
        "cnn",
        {"layers": ("conv:8:3:valid:relu", "maxpool:2", "dense:32:relu")},
        epochs=1,
        train_subset=3000,
        test_subset=1000,
    )
    autoencoder = RunConfig.for_model(
        "conv_autoencoder", {"n": 8}, epochs=1, train_subset=3000, test_subset=1000
    )
    cache = RunCache()
    return [get_or_train(config, cache=cache) for config in (cnn, autoencoder)]


@pytest.mark.slow
def test_the_inside_page_shows_every_layer_dead_units_and_the_layer_table(small_runs):
    cnn, autoencoder = small_runs
    at = page(open_app(), "app_pages/inside.py")
    assert not at.exception, at.exception[0].value if at.exception else ""
    [run_box] = [box for box in at.selectbox if box.key == "inside:run"]
    at = run_box.set_value([o for o in run_box.options if cnn.run_id[:6] in o][0]).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    headings = [m.value for m in at.markdown if m.value.startswith("**features.")]
    assert headings[:2] == ["**features.0 · Conv2d · 8 × 26 × 26**", "**features.1 · ReLU · 8 × 26 × 26**"]
    assert any(m.label == "The model's answer" for m in at.metric)
    [dead] = [d.value for d in at.dataframe if "dying" in d.value.columns]
    assert dead["layer"].tolist() == ["features.1", "features.5"] and dead["units"].tolist() == [8, 32]
    # Each dead unit a link to its own address, as the core counts them (none: no line).
    from fmnist_core.views import inside as inside_view

    activity = inside_view.activity(load_run(cnn.run_id, RunCache()), RunCache())
    expected = [
        f"Dead in **{name}**: units "
        + ", ".join(
            f"[{u}](inside?run={cnn.run_id}&layer={name}&unit={u})"
            for u in np.flatnonzero(activity.dead(name))
        )
        for name in ("features.1", "features.5")
        if activity.dead(name).any()
    ]
    assert [m.value for m in at.markdown if m.value.startswith("Dead in **")] == expected
    [table] = [d.value for d in at.dataframe if "multiply_adds" in d.value.columns]
    assert table["parameters"].sum() == sum(p.numel() for p in cnn.model.parameters())
    [sources] = at.get("button_group")
    at = sources.set_value("A confusion cell").run()  # this run's commonest mistake, to start with
    assert not at.exception, at.exception[0].value if at.exception else ""
    from fmnist_core import views

    # On the page's own path (the run loaded from the cache, as the page loads it), and tie-aware: two
    # cells one count apart may trade places where the freshly trained model's kernels differ.
    loaded = load_run(cnn.run_id, RunCache())
    predictions = loaded.predict_proba(load_data().test_images).argmax(1)
    mistakes = views.commonest_mistakes(load_data().test_labels.numpy(), predictions, 3)
    shown = (at.selectbox(key="inside:true").value, at.selectbox(key="inside:predicted").value)
    assert shown in {(t, p) for t, p, count in mistakes if count >= mistakes[0][2] - 2}, (shown, mistakes)
    assert any("the model takes for a" in str(image.proto) for image in at.get("image"))
    # One unit up close: the first rectified layer, at the channel this image excites most.
    assert [m.value for m in at.markdown if m.value.startswith("#### Channel ")][0].endswith(" of features.1")
    assert any(m.value.startswith("**The 9 test images that excite it most**") for m in at.markdown)
    assert any(
        "test images leave it at 0**" in m.value or "where it is lowest" in m.value for m in at.markdown
    )
    images = len(at.get("image"))
    at = (
        at.toggle(key=f"inside:featureviz:{cnn.run_id}").set_value(True).run()
    )  # the input it responds to most
    assert not at.exception and len(at.get("image")) == images + 1
    [picture] = [image for image in at.get("image") if "optimised from noise" in str(image.proto)]
    assert len(picture.proto.imgs) == 1
    at = at.toggle(key=f"inside:featureviz:several:{cnn.run_id}").set_value(True).run()
    [pictures] = [image for image in at.get("image") if "optimised from noise" in str(image.proto)]
    assert not at.exception and len(pictures.proto.imgs) == 4  # four, pushed apart
    [added] = [box for box in at.multiselect if box.key.startswith("inside:featureviz:added:")]
    unit = int(
        re.search(r"#### Channel (\d+) ", [m.value for m in at.markdown if m.value.startswith("#### ")][0])[1]
    )
    other = added.options[0]
    at = added.set_value([int(other)]).run()
    [pictures] = [image for image in at.get("image") if "optimised from noise" in str(image.proto)]
    assert not at.exception and f"unit {unit} + unit {other}, optimised" in str(pictures.proto)

    run_box = at.selectbox(key="inside:run")
    at = run_box.set_value([o for o in run_box.options if autoencoder.run_id[:6] in o][0]).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert any(m.value.startswith("**What comes out**") and "reconstruction" in m.value for m in at.markdown)
    [sources] = at.get("button_group")
    assert [o.content for o in sources.proto.options] == ["A test image", "Try it's drawing or upload"]
    [beside] = [box for box in at.selectbox if box.key == "inside:beside"]
    at = beside.set_value([o for o in beside.options if cnn.run_id[:6] in o][0]).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert len([d for d in at.dataframe if "dying" in d.value.columns]) == 2  # both runs' dead units
    # The unit up close, and its match in the run beside it: by correlation over test images, not index.
    matched = [e.label for e in at.expander if e.label.startswith("Its match in")]
    assert matched or any(c.value.startswith("No match in") for c in at.caption)
    assert not matched or re.search(r"unit \d+ of .*, correlation -?[01]\.\d\d \(the next best", matched[0])

    at = page(at, "app_pages/compare.py")  # both were counted on the inside page: the column says so
    counted = at.dataframe[0].value.set_index("run_id")["dead_units"]
    assert counted[cnn.run_id].endswith("%)") and counted[autoencoder.run_id].endswith("%)")


def test_the_classifier_page_shows_the_layer_table_before_training_and_follows_the_layer_list():
    at = page(open_app(), "app_pages/classifier.py")
    at.selectbox(key="widget:cls:model").set_value("cnn").run()
    [before] = [c.value for c in at.caption if c.value.startswith("**Architecture:**")]
    assert " parameters (" in before and "multiply-adds per image" in before
    [lines] = [t for t in at.text_area if t.label.startswith("Layers")]
    lines.set_value("conv:8:3:same:relu\nmaxpool:2\ndense:32:relu").run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    [after] = [c.value for c in at.caption if c.value.startswith("**Architecture:**")]
    assert after != before and "7 layers" in after and f"{80 + 50_208 + 330:,} parameters" in after
    [table] = [d.value for d in at.dataframe if "multiply_adds" in d.value.columns]  # in its expander
    assert table["output"].tolist()[:3] == ["8 x 28 x 28", "8 x 28 x 28", "8 x 14 x 14"]


@pytest.mark.slow
def test_a_sweep_started_in_the_app_trains_its_trials_as_jobs_and_the_explorer_reads_them():
    at = page(open_app(), "app_pages/hpsweep.py")
    at.selectbox(key="sweep:model").set_value("mlp").run()
    assert [m.value for m in at.multiselect if m.key == "sweep:knobs:mlp"][0] == ["lr", "dropout"]
    at.number_input(key="sweep:trials").set_value(4).run()
    at.slider(key="sweep:epochs").set_value(2).run()
    at.selectbox(key="sweep:images").set_value("2,000").run()
    at.radio(key="sweep:sampler").set_value("random").run()
    start = [b for b in at.button if b.label.startswith("Start sweep mlp_")]
    assert start, [b.label for b in at.button]
    start[0].click().run()
    # Right after Start the page shows its sweep running, live (it showed Start and "No sweep yet.").
    assert not any(c.value == "No sweep yet." for c in at.caption)
    assert not [b for b in at.button if b.label.startswith("Start sweep")]
    assert any("is running; its trials are below" in i.value for i in at.info) and at.get("progress")
    rerun_until(
        at, lambda at: any("4 of 4 trials" in (p.text or "") for p in at.get("progress")), "unfinished"
    )
    name = at.session_state[keys.SWEEP_OPEN]
    study = hpsearch.open_study(RunCache(), name)
    assert len(study.trials) == 4 and all(t.state.is_finished() for t in study.trials)
    for trial in study.trials:  # each trial a run trained on a holdout split, or a pruned one kept
        if trial.state.name == "COMPLETE":
            assert RunCache().load_config(trial.user_attrs["run_id"]).validation == "holdout"
    at = page(at, "app_pages/explorer.py")
    assert not at.exception, at.exception[0].value
    assert at.selectbox(key="explorer:source").value == name
    axes = [m.value for m in at.multiselect if m.key == f"explorer:axes:{name}"][0]
    assert axes == ["lr", "dropout", "state", "val_accuracy"]  # pruned trials drawn too, marked
    assert any("**4 of 4 runs** inside no brush yet" in c.value for c in at.caption)
    at.segmented_control(key="explorer:view").set_value("importance").run()
    assert not at.exception, at.exception[0].value


@pytest.mark.slow
def test_in_a_class_a_job_is_stopped_only_by_those_who_asked_and_limits_are_said(monkeypatch):
    monkeypatch.setenv("FMNIST_CLASS", "1")  # as when served with --server.address 0.0.0.0
    monkeypatch.setenv("FMNIST_MAX_JOBS", "1")
    from fmnist_core.runs.jobs import RUNNING
    from ui.jobs import _job_queue

    _job_queue.clear()  # a server started with these settings
    alice = page(open_app(), "app_pages/autoencoder.py")
    [b for b in alice.button if b.label == "Train"][0].click().run()  # 10 epochs x 60,000: it runs a while
    # Until the trainer has taken it (on a busy machine the page can redraw first, and a queued job's
    # button is Cancel): waited on the job's state, not a pause.
    queue = _job_queue(str(RunCache().root.resolve()))
    [job] = queue.jobs()
    deadline = time.monotonic() + 900
    while (job := queue.get(job.run_id)).state != RUNNING:  # as the queue has it now
        assert job.active and time.monotonic() < deadline, job.state
        time.sleep(0.05)
    alice.run()
    assert any(b.label == "Stop" for b in alice.sidebar.button)  # hers to stop
    assert any("asked for by you" in c.value for c in alice.sidebar.caption)
    bob = page(open_app(), "app_pages/home.py")  # another browser
    assert any("Training queue" in m.value for m in bob.sidebar.markdown)  # he sees the queue...
    assert not any(b.label.startswith(("Stop", "Cancel")) for b in bob.sidebar.button)  # ...not her Stop
    assert any("asked for by someone else" in c.value for c in bob.sidebar.caption)
    # Alice asks for a second training: over her limit of one job, refused in one line on the page.
    alice.slider(key="widget:conv_autoencoder:dropout").set_value(0.35).run()
    [b for b in alice.button if b.label == "Train"][0].click().run()
    assert any(
        "limit: you have 1 job in the queue" in e.value and "FMNIST_MAX_JOBS" in e.value for e in alice.error
    )
    # On the page of Alice's config Bob watches her training live, with no Stop of his own.
    bob = page(bob, "app_pages/autoencoder.py")
    assert not any(b.label == "Stop" for b in [*bob.button, *bob.sidebar.button])
    job = [j for j in queue.jobs() if j.active][0]
    assert job.owners == [alice.session_state[keys.OWNER]]
    alice = page(alice, "app_pages/home.py")
    [b for b in alice.sidebar.button if b.label == "Stop"][0].click().run()
    assert queue.get(job.run_id).stop_requested.is_set()
    queue.wait(job.run_id, timeout=900)
    _job_queue.clear()


@pytest.mark.slow
def test_a_model_never_trained_here_counts_its_timed_minutes_against_the_queue_limit(monkeypatch):
    """With no run of a ResNet here its estimate was None, counted as 0 minutes: a 60-epoch ResNet
    passed FMNIST_MAX_QUEUE_MINUTES=1. Now a few of its steps are timed, through the app's queue."""
    from ui import jobs as app_jobs

    monkeypatch.setenv("FMNIST_MAX_QUEUE_MINUTES", "1")
    app_jobs._job_queue.clear()  # a server started with this setting
    try:
        queue = app_jobs.job_queue()
        with pytest.raises(ValueError, match=r"limit: your queue would hold about \d+ min of training"):
            # at a batch of 32: its timed steps an eighth of the default batch's, the same claim
            queue.submit(RunConfig.for_model("resnet", epochs=60, batch_size=32), owner="alice")
        assert queue.jobs() == [] and RunCache().run_ids() == []
    finally:
        app_jobs._job_queue.clear()


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet", "conv_autoencoder", "vae"])
def test_every_models_form_opens_on_its_defaults_ready_to_train(model):
    """Each registered model's sidebar form, as it starts, builds a config that can train (a
    ResNet's channels came back from their slider as a range of two tuples: 'Invalid setting')."""
    from fmnist_core.models import get_spec

    kind = get_spec(model).kind
    path, prefix = (
        ("app_pages/autoencoder.py", "ae") if kind == "autoencoder" else ("app_pages/classifier.py", "cls")
    )
    at = page(open_app(), path)
    at.selectbox(key=f"widget:{prefix}:model").set_value(model).run()
    assert not at.error and not at.exception, [e.value for e in at.error]
    assert [b for b in at.button if b.key and b.key.startswith("train:")], [b.key for b in at.button]


def test_with_the_starter_set_off_its_configs_trained_by_hand_are_not_called_the_starter_set(pooled):
    """FMNIST_STARTER=0 (the tests' setting): a run that happens to have a starter config, trained by
    a person, does not make Home say that the starter set is training."""
    from fmnist_core.runs.starter import starter_set

    pooled(starter_set()[0].config)
    at = open_app()
    assert not any("starter set is training" in h.value for h in at.subheader)
    assert not at.exception


def test_compare_runs_says_which_runs_are_damaged_rather_than_hiding_them(pooled):
    good = pooled(RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300))
    bad = pooled(RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300, seed=1))
    weights = RunCache().folder(bad.run_id) / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")  # fails its checksum
    at = page(open_app(), "app_pages/compare.py")
    assert at.dataframe[0].value["run_id"].tolist() == [good.run_id]
    [warning] = [w.value for w in at.warning if "damaged" in w.value]
    assert f"1 damaged run(s) not listed ({bad.run_id[:8]})" in warning and "runs --prune" in warning


def open_inside(address: dict) -> AppTest:
    """Inside the network opened at an address (?run=&layer=&unit=&tab=&beside=), as a link opens it."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.query_params.update(address)
    at.switch_page("app_pages/inside.py")
    return at.run()


@pytest.mark.slow
def test_a_unit_has_an_address_and_its_feeders_walk_down_the_network(small_runs):
    """?run=&layer=&unit= opens that unit up close; the units that feed it most are listed by their
    share (the core's numbers) and a click walks down to one, and the address follows."""
    from fmnist_core.analysis.upstream import upstream_shares

    cnn, _ = small_runs
    warmup.wait()
    at = open_inside({"run": cnn.run_id[:8], "layer": "features.5", "unit": "3"})
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert at.selectbox(key="inside:run").value.count(cnn.run_id[:6]) == 1
    assert [m.value for m in at.markdown if m.value.startswith("#### ")][0] == "#### Unit 3 of features.5"
    assert any(m.value == "**The units of features.2 that feed it most**" for m in at.markdown)
    # The page writes no default into the address (a second history step made the first Back do nothing).
    assert sorted(at.query_params) == ["layer", "run", "unit"], dict(at.query_params)
    shares = upstream_shares(
        load_run(cnn.run_id, RunCache()).model, "features.5", 3, "features.2", load_data().test_images[:1000]
    )
    strongest = int(np.argmax(np.abs(shares)))
    first = [c.value for c in at.caption if c.value.startswith("unit ") and " · its top: #" in c.value][0]
    assert first.startswith(f"unit {strongest} · {shares[strongest]:+.3f}"), (first, shares)
    # For the page's image alone: the same core function on that one image.
    [shown] = [
        re.search(r"test image #(\d+)", str(i.proto))
        for i in at.get("image")
        if "test image #" in str(i.proto)
    ]
    image = load_data().test_images[int(shown[1]) : int(shown[1]) + 1]
    at = at.segmented_control(key="inside:feeding:over").set_value("for this image").run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    alone = upstream_shares(load_run(cnn.run_id, RunCache()).model, "features.5", 3, "features.2", image)
    first_alone = int(np.argmax(np.abs(alone)))
    captions = [c.value for c in at.caption if c.value.startswith("unit ") and " · its top: #" in c.value]
    assert captions[0].startswith(f"unit {first_alone} · {alone[first_alone]:+.3f}"), (captions, alone)
    at = at.segmented_control(key="inside:feeding:over").set_value("over 1,000 test images").run()
    at = at.button(key=f"inside:walk:{cnn.run_id}:features.5:3:{strongest}").click().run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    headings = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert headings[0] == f"#### Channel {strongest} of features.2"
    assert (at.query_params["layer"], at.query_params["unit"]) == ("features.2", str(strongest))
    # features.2 pools the first conv's channels: what feeds it is the image
    assert any(c.value.startswith("It reads the image itself") for c in at.caption)

    wrong = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    wrong.query_params.update({"run": cnn.run_id[:8], "layer": "features.5", "unit": "99"})
    wrong.switch_page("app_pages/inside.py")
    wrong.run()
    assert not wrong.exception
    assert any("not a unit of features.5 (0 to 31)" in w.value for w in wrong.warning)
    for address, words in (
        ({"run": cnn.run_id, "unit": "3"}, "needs its layer"),  # a unit without its layer
        (
            {"run": cnn.run_id, "layer": "features.5", "unit": "\u00b2"},
            "is not a unit of features.5",
        ),  # '²' isdigit
        ({"run": cnn.run_id, "layer": "features.5", "unit": "9" * 5000}, "is not a unit of features.5"),
        (
            {"run": cnn.run_id, "tab": "Nonsense"},
            "'Nonsense' is not a tab of this page (its tabs: Every layer,",
        ),
        ({"run": cnn.run_id, "tab": "Matched units"}, "it needs a run beside"),
        ({"run": cnn.run_id, "beside": cnn.run_id[:8]}, "is the run itself"),
        ({"run": cnn.run_id[:3], "layer": "features.5"}, "is too short (6 characters at least)"),
        ({"run": "f" * 16, "layer": "features.5"}, "is not a run of this lab's cache"),
        ({"layer": "features.5", "unit": "3"}, "names a layer or a unit but no run"),
        ({"run": cnn.run_id, "layer": "features.5", "unit": "9" * 23}, f"'{'9' * 23}' is not a unit of"),
        ({"run": cnn.run_id, "layer": "features.99"}, "is not a layer of this run (its layers: features.0,"),
    ):
        odd = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        odd.query_params.update(address)
        odd.switch_page("app_pages/inside.py")
        odd.run()
        assert not odd.exception and any(words in w.value for w in odd.warning), (address, odd.warning)


@pytest.mark.slow
def test_a_layers_dictionary_and_its_units_matched_to_a_second_run_are_tabs_of_their_own(small_runs):
    """?tab=Dictionary: the first rectified layer's NMF features, each with the test images it is
    strongest on and the units it weighs (the core's numbers), its pictures on asking; with a run
    beside it (here the autoencoder), the Matched units tab holds the table of a layer's units and
    their partners; a closed tab computes nothing."""
    from fmnist_core.views.dictionary import dictionary

    cnn, _ = small_runs
    warmup.wait()
    at = open_inside({"run": cnn.run_id[:8], "tab": "Dictionary"})
    assert not at.exception, at.exception[0].value if at.exception else ""
    found = dictionary(load_run(cnn.run_id, RunCache()), RunCache(), "features.1", 6)
    headings = [m.value for m in at.markdown if m.value.startswith("**Feature ")]
    assert len(headings) == 6
    assert headings[0] == "**Feature 0** · weighs units " + ", ".join(
        f"{unit} ({weight:.2f})" for unit, weight in found.top_units(0)
    )
    assert any(
        c.value.startswith(f"6 features account for {found.explained:.0%} of what features.1")
        for c in at.caption
    )
    # An address's layer is the Dictionary's first layer too.
    on = open_inside({"run": cnn.run_id[:8], "layer": "features.5", "unit": "0", "tab": "Dictionary"})
    assert any(
        c.value.startswith("6 features account for") and "what features.5 says" in c.value for c in on.caption
    )
    at = at.toggle(key=f"inside:nmf:pictures:{cnn.run_id}").set_value(True).run()
    assert not at.exception and sum("its picture" in str(image.proto) for image in at.get("image")) == 6
    at = at.slider(key=f"inside:nmf:k:{cnn.run_id}").set_value(3).run()
    assert len([m for m in at.markdown if m.value.startswith("**Feature ")]) == 3

    beside = at.selectbox(key="inside:beside")
    at = beside.set_value([o for o in beside.options if o != "(none)"][0]).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not [d for d in at.dataframe if "the next best" in d.value.columns]  # a closed tab costs nothing
    beside_id = at.query_params["beside"]  # the run beside, in the address
    assert at.selectbox(key="inside:beside").value.endswith(beside_id[:6])
    mine = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)  # the tab's address, the run beside
    mine.query_params.update({"run": cnn.run_id[:8], "tab": "Matched units", "beside": beside_id[:6]})
    mine.switch_page("app_pages/inside.py")
    mine.run()
    assert not mine.exception, mine.exception[0].value if mine.exception else ""
    tables = [d.value for d in mine.dataframe if "the next best" in d.value.columns]
    assert len(tables) == 1 and tables[0]["correlation"].notna().any()
    assert any(" have a partner in " in c.value for c in mine.caption)
    # Any layer of the run beside can be the other side: the table follows the choice.
    [twin] = [box for box in mine.selectbox if box.key.startswith("inside:match:twin:")]
    mine = twin.set_value(twin.options[-1]).run()
    assert not mine.exception, mine.exception[0].value if mine.exception else ""
    [caption] = [c.value for c in mine.caption if " have a partner in " in c.value]
    assert f"in {twin.options[-1].split(' · ')[0]} (" in caption


@pytest.mark.slow
def test_every_units_picture_of_a_layer_is_drawn_in_the_background_and_then_shown(small_runs):
    """The toggle starts the layer's pictures off the page's thread: the page answers at once with a
    progress bar, and a later run (the fragment's, or any) shows one picture per unit."""
    cnn, _ = small_runs
    warmup.wait()
    at = open_inside({"run": cnn.run_id[:8], "layer": "features.1", "unit": "0"})
    at = at.toggle(key=f"widget:inside:every:{cnn.run_id}:features.1").set_value(True).run()
    assert not at.exception, at.exception[0].value if at.exception else ""

    def pictures(at):
        return [image for image in at.get("image") if "unit 7" in str(image.proto)]

    deadline = time.monotonic() + 300  # 8 units x 256 steps: seconds here, minutes on a busy machine
    while not pictures(at):
        assert any("in the background" in str(p.proto) for p in at.get("progress")), (
            "neither pictures nor progress"
        )
        assert time.monotonic() < deadline, "the layer's pictures never came"
        time.sleep(0.5)
        at = at.run()
        assert not at.exception, at.exception[0].value if at.exception else ""
    [shown] = pictures(at)
    assert len(shown.proto.imgs) == 8  # one per unit of features.1
    from fmnist_core.views import inside

    assert inside.kept_layer_pictures(load_run(cnn.run_id, RunCache()), RunCache(), "features.1").shape == (
        8,
        28,
        28,
    )
    # Another layer and back: the toggle is as it was, and the kept pictures show at once.
    layer = at.selectbox(key="inside:layer")
    first = layer.value
    at = layer.set_value([o for o in layer.options if o.startswith("features.5 ")][0]).run()
    assert not pictures(at) and not at.exception
    at = at.selectbox(key="inside:layer").set_value(first).run()
    assert at.toggle(key=f"widget:inside:every:{cnn.run_id}:features.1").value is True
    assert len(pictures(at)) == 1 and not at.get("progress")


@pytest.mark.slow
def test_an_address_naming_a_unit_twice_opens_the_last(small_runs):
    cnn, _ = small_runs
    warmup.wait()
    at = open_inside({"run": cnn.run_id[:8], "layer": "features.5", "unit": ["3", "9"]})
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert [m.value for m in at.markdown if m.value.startswith("#### ")][0] == "#### Unit 9 of features.5"
    # Another run and back: the unit view is where it was (its layer and its unit), not the first layer.
    run = at.selectbox(key="inside:run")
    mine = run.value
    at = run.set_value([o for o in run.options if o != mine][0]).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    at = at.selectbox(key="inside:run").set_value(mine).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert [m.value for m in at.markdown if m.value.startswith("#### ")][0] == "#### Unit 9 of features.5"
    assert (at.query_params["layer"], at.query_params["unit"]) == ("features.5", "9")
