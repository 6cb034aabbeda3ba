import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist_core.models import list_models

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fmnist_core", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def run_main(*args, capsys, env=None, monkeypatch=None):
    """The command line in this process (no interpreter to start: ~3 s a call saved), for what
    needs no process of its own; the subprocess tests cover the real entry point."""
    from fmnist_core.cli import main

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    try:
        code = main(list(args))
    except SystemExit as refused:  # argparse's own refusals
        code = refused.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_models_lists_the_registry(capsys):
    out = run_main("models", capsys=capsys)
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == list_models()


def test_train_json_then_cached(tmp_path, capsys):
    args = (
        "train",
        "mlp",
        "--epochs",
        "1",
        "--batch-size",
        "200",
        "--set",
        "train_subset=3000",
        "--set",
        "n1=64",
        "--json",
    )
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["cached"] is False and result["epochs"] == 1
    assert {"run_id", "train_seconds", "test_loss", "test_accuracy"} <= set(result)
    assert "epoch 1/1" in first.stderr
    second = json.loads(run_main(*args, capsys=capsys).stdout.strip().splitlines()[-1])
    assert second["cached"] is True and second["run_id"] == result["run_id"]
    assert second["test_accuracy"] == result["test_accuracy"]
    table = run_main("runs", capsys=capsys)
    assert result["run_id"] in table.stdout


def test_autoencoder_json_reports_test_mse(capsys):
    out = run_main(
        "train",
        "conv_autoencoder",
        "--epochs",
        "1",
        "--set",
        "train_subset=1000",
        "--set",
        "test_subset=1000",
        "--set",
        "n=8",
        "--json",
        "--quiet",
        capsys=capsys,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < result["test_mse"] < 0.2 and "test_accuracy" not in result


def test_invalid_setting_is_one_line_naming_it(tmp_path, capsys):
    out = run_cli("train", "conv_autoencoder", "--set", "dropout=1.5", cwd=tmp_path)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == ["error: dropout: 1.5 is outside [0.0, 0.99]"]
    out = run_main("train", "mlp", "--set", "width=3", capsys=capsys)
    assert out.returncode != 0 and "width" in out.stderr


def test_recipes_are_listed_and_train_by_name(capsys):
    from fmnist_core.runs.recipes import list_recipes

    out = run_main("recipes", capsys=capsys)
    assert [line.split()[0] for line in out.stdout.splitlines()] == list_recipes()
    args = (
        "train",
        "fast_cnn",
        "--epochs",
        "1",
        "--set",
        "train_subset=1000",
        "--set",
        "test_subset=500",
        "--json",
    )
    result = json.loads(run_main(*args, "--quiet", capsys=capsys).stdout.strip().splitlines()[-1])
    assert result["model"] == "cnn" and result["epochs"] == 1 and 0.0 < result["test_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "arguments, environment, says",
    [
        (["train", "mlp", "--epochs", "1", "--set", "epochs=2"], {}, "epochs: given both"),
        (["train", "mlp", "--set", "model=cnn"], {}, "--set: model is not a setting"),
        (["train", "mlp", "--set", "lr=nan"], {}, "lr: nan is not a finite number"),
        (["train", "mlp", "--set", "dropout=0.999"], {}, "dropout: 0.999 is outside"),
        (
            ["train", "encoder_classifier", "--set", "encoder_run=feedfacefeedface"],
            {},
            "no cached run feedface",
        ),
        (["train", "mlp"], {"FMNIST_DATA": "/nonexistent/folder"}, "FMNIST_DATA: /nonexistent/folder"),
        (
            ["train", "cnn", "--set", "layers=conv:1024:3:same:relu,dense:16384:relu"],
            {},
            "limit of 25,000,000",
        ),
        (  # inside the layer limits, but 512 images a step through 1,024 channels: ~38 GB
            [
                "train",
                "cnn",
                "--batch-size",
                "512",
                "--set",
                "layers=conv:1024:3:same:relu,conv:1024:3:same:relu",
            ],
            {"FMNIST_MEMORY_LIMIT_GB": "8"},
            "batch_size: 512 images a step through this model need about 38.0 GB",
        ),
        (["train", "mlp", "--set", "n1=" + "9" * 400], {}, "n1: a 400-digit number is outside"),
        (
            ["train", "cnn", "--set", "layers=conv:4:3:same:relu,dense:16:relu,bn", "--batch-size", "1"],
            {},
            "a batch of 1",
        ),
        (["suspects", "--seeds", "0"], {}, "argument --seeds: '0' is not a whole number"),
        (["suspects", "--seeds", "-1"], {}, "argument --seeds: '-1' is not a whole number"),
        (["reproduce", "S3", "--seeds", "0"], {}, "argument --seeds: '0' is not a whole number"),
        (["reproduce", "S3", "--seeds", "-2"], {}, "argument --seeds"),
    ],
)
def test_every_expected_failure_is_one_line_and_exit_code_2(
    arguments, environment, says, capsys, monkeypatch
):
    out = run_main(*arguments, capsys=capsys, env=environment, monkeypatch=monkeypatch)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if not line.startswith("run ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args, named",
    [
        (["--set", "lr=0.1", "--set", "lr=0.2"], "lr: given twice"),
        (["--set", "encoder_run=../../etc"], "encoder_run"),
        (["--set", "encoder_run=/tmp"], "encoder_run"),
    ],
)
def test_repeated_settings_and_run_ids_that_are_paths_are_refused_in_one_line(args, named, capsys):
    model = "encoder_classifier" if "encoder_run" in named else "mlp"
    out = run_main("train", model, *args, capsys=capsys)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert named in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_epochs_and_train_again_continues(tmp_path):
    args = ["train", "mlp", "--epochs", "20", "--set", "train_subset=3000", "--set", "test_subset=1000"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FMNIST_CACHE": str(tmp_path / "cache")}
    child = subprocess.Popen(
        [sys.executable, "-m", "fmnist_core", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    for line in child.stderr:  # epoch lines go to stderr
        if line.startswith("epoch 1/20"):
            child.send_signal(signal.SIGINT)
            break
    rest = child.stderr.read()
    assert child.wait(timeout=900) == 130, rest
    assert "stopping: the finished epochs are kept" in rest
    done = int(rest.split("stopped after ")[1].split()[0])
    assert 1 <= done < 20 and "kept: training this run again continues it" in rest
    again = run_cli(*args, "--json", cwd=tmp_path, env={"FMNIST_CACHE": str(tmp_path / "cache")})
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["completed"] and result["epochs"] == 20
    assert result["note"] == f"continued from epoch {done}"
    # Its kept epochs first, said as such, then the rest as they train.
    assert f"epoch {done}/20: " in again.stderr and "(kept from the stopped run)" in again.stderr
    assert f"epoch {done + 1}/20: " in again.stderr.split("(kept from the stopped run)")[-1]


def test_a_classifier_that_never_answers_a_class_says_so_in_its_result():
    from types import SimpleNamespace

    from fmnist_core.analysis import classes_never_predicted
    from fmnist_core.cli import summary

    confusion = [[0] * 10 for _ in range(10)]
    for true in range(10):
        confusion[true][true if true not in (2, 9) else 0] = 100  # Pullover and Ankle boot: never answered
    assert classes_never_predicted(confusion) == ["Pullover", "Ankle boot"]
    metrics = {"epochs_done": 1, "train_seconds": 1.0, "test_loss": 1.0, "test_accuracy": 0.8}
    run = SimpleNamespace(
        run_id="0" * 16,
        config=SimpleNamespace(model="encoder_classifier"),
        cached=False,
        completed=True,
        note="",
        metrics={**metrics, "test_confusion": confusion},
    )
    assert summary(run)["classes_never_predicted"] == ["Pullover", "Ankle boot"]
    healthy = [[100 if i == j else 0 for j in range(10)] for i in range(10)]
    assert "classes_never_predicted" not in summary(
        SimpleNamespace(**{**vars(run), "metrics": {**metrics, "test_confusion": healthy}})
    )


# Bad settings of every kind the command line takes (the fault probe's table, issues 14 and 27):
# each refused in one line that names the setting, before any work. (model, setting): values.
BAD_SETTINGS = {
    # (model, key): bad values; the message must name the key
    ("mlp", "lr"): ["nan", "inf", "-1", "0", "1e9", "abc", ""],
    ("mlp", "dropout"): ["nan", "1", "0.999", "0.99805", "-0.1", "2", "x"],
    ("mlp", "weight_decay"): ["nan", "-1", "inf"],
    ("mlp", "momentum"): ["nan", "-0.5", "2"],
    ("mlp", "label_smoothing"): ["nan", "-0.1", "1.5"],
    ("mlp", "holdout_fraction"): ["nan", "0", "1", "-0.2"],
    ("mlp", "batch_size"): ["0", "-5", "1000000000", "x", "2.5"],
    ("mlp", "epochs"): ["0", "-1", "nan", "1000000000"],
    ("mlp", "seed"): ["-1", "x", str(2**70)],
    ("mlp", "n1"): ["0", "-3", "100000000", "nan", "1.5"],
    ("mlp", "optimizer"): ["adamz", ""],
    ("mlp", "loss"): ["mse", "hinge"],
    ("mlp", "precision"): ["fp16", "int8"],
    ("mlp", "train_subset"): ["-1", "70000", "x"],
    ("mlp", "test_subset"): ["-1", "20000"],
    ("mlp", "augment"): ["rotate"],
    ("mlp", "validation"): ["train"],
    ("mlp", "schedule"): ["cosine"],
    ("conv_autoencoder", "n"): ["0", "-1", "1000000", "nan"],
    ("conv_autoencoder", "dropout"): ["1", "nan"],
    ("conv_autoencoder", "pooling"): ["median"],
    ("resnet", "blocks"): ["-1", "1000"],
    ("resnet", "channels"): ["0", "100000"],
    ("encoder_classifier", "encoder_run"): ["0123456789abcdef", "../../etc", "/tmp", "x" * 300],
    ("encoder_classifier", "head"): ["huge"],
    ("vae", "beta"): ["-1", "nan", "1000"],
    ("vae", "n"): ["0", "100000"],
    ("cnn", "layers"): [
        "",
        "conv",
        "conv:0:3:same:relu",
        "conv:35:0:same:relu",
        "conv:35:3:full:relu",
        "conv:35:3:same:gelu",
        "conv:35:99:valid:relu",
        "maxpool:0",
        "maxpool:64",
        "dropout:1",
        "dropout:nan",
        "dense:0:relu",
        "dense:-4:relu",
        "conv:1024:3:same:relu,dense:16384:relu",
        "conv:64:3:same:relu,dense:16384:relu",
        "dense:100000000:relu",
        "bn,bn,bn,unknown",
        "conv:35:3:same:relu;rm -rf /",
    ],
}


FLAG_CASES = [  # (arguments, what the one line must name)
    (["train", "mlp", "--epochs", "2", "--set", "epochs=3"], "epochs"),
    (["train", "mlp", "--set", "model=cnn"], "model"),
    (["train", "mlp", "--set", "nonsense=1"], "nonsense"),
    (["train", "mlp", "--set", "lr"], "lr"),
    (["train", "no_such_model"], "no_such_model"),
    (["train", "cnn", "--set", "layers=conv:35:3:valid:relu", "--set", "n=4"], "n"),
]


@pytest.mark.parametrize(
    "model, key, value",
    [(model, key, value) for (model, key), values in BAD_SETTINGS.items() for value in values],
    ids=lambda part: str(part)[:30],
)
def test_every_bad_setting_is_refused_in_one_line_naming_it(model, key, value, capsys):
    small = ["--epochs", "1", "--quiet"] + ([] if key == "train_subset" else ["--set", "train_subset=300"])
    out = run_main("train", model, *small, "--set", f"{key}={value}", capsys=capsys)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = [
        line for line in out.stderr.splitlines() if line and not line.startswith("run ")
    ]  # the run's name
    assert len(lines) == 1 and key in lines[0].lower(), out.stderr


@pytest.mark.parametrize("arguments, named", FLAG_CASES, ids=lambda part: str(part)[:40])
def test_settings_given_twice_or_unknown_are_refused_naming_them(arguments, named, capsys):
    out = run_main(*arguments, capsys=capsys)
    assert out.returncode == 2 and "Traceback" not in out.stderr and named in out.stderr, out.stderr


def test_models_lists_the_vae_and_train_vae_works(capsys):
    out = run_main("models", capsys=capsys)
    assert any(line.split()[:2] == ["vae", "autoencoder"] for line in out.stdout.splitlines())
    out = run_main("train", "vae", "--epochs", "1", "--set", "train_subset=500", "--json", capsys=capsys)
    result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    assert out.returncode == 0 and result["model"] == "vae" and 0 < result["test_mse"] < 0.2


def test_summary_times_a_model_never_trained_here_and_says_when_it_would_be_refused(capsys):
    """A VAE on an empty cache: expected seconds from a few of its own steps timed here (it said
    "about 1.8 h" from other models' tiny runs, and the VAE took 4 min); a config over the memory
    limit: summary says it would be refused and why (it said "about 296048.3 h here")."""
    from fmnist_core.store.cache import RunCache

    done = run_main("summary", "vae", "--epochs", "3", "--set", "train_subset=2000", capsys=capsys)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert (
        line.startswith("training: 3 epochs over 2,000 images, about ") and "of its steps timed here" in line
    )
    assert RunCache().run_ids() == []  # timing trains nothing into the cache
    layers = "layers=conv:1024:3:same:relu,conv:1024:3:same:relu,maxpool:2,maxpool:2,maxpool:2,dense:10:relu"
    done = run_main("summary", "cnn", "--set", layers, "--batch-size", "512", capsys=capsys)
    line = done.stdout.strip().splitlines()[-1]
    assert (
        done.returncode == 0
        and "refused here: batch_size: 512 images a step" in line
        and " here (from" not in line
    )


def test_inside_writes_a_units_sheet_and_refuses_a_wrong_unit_in_one_line(pooled, tmp_path, capsys):
    from PIL import Image

    from fmnist_core.training.config import RunConfig

    run = pooled(RunConfig.for_model("cnn", epochs=1, train_subset=1000, test_subset=500))
    (tmp_path / "d.png").mkdir()  # a folder named like a picture: refused, nothing left beside it
    out = tmp_path / "unit.png"
    done = run_main(
        "inside",
        "--run",
        run.run_id,
        "--layer",
        "features.4",
        "--unit",
        "7",
        "--out",
        str(out),
        capsys=capsys,
    )
    assert done.returncode == 0 and done.stdout.strip() == str(out)
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.mode == "L"
        fed = sheet.size
    first = tmp_path / "first.png"  # the first conv's unit reads the image: no row of feeders
    run_main(
        "inside",
        "--run",
        run.run_id,
        "--layer",
        "features.1",
        "--unit",
        "0",
        "--out",
        str(first),
        capsys=capsys,
    )
    with Image.open(first) as sheet:
        assert sheet.size[0] == fed[0] and sheet.size[1] < fed[1]
    for args, words in (
        (
            ("--layer", "features.44", "--unit", "7"),
            "error: layer: 'features.44' is not a layer of this model with units to show (those: features.0,",
        ),
        (("--layer", "features.4", "--unit", "70"), "error: unit: 70 is not a unit of features.4 (0..49)"),
        (("--layer", "features.4", "--unit", "1", "--out", str(tmp_path / "x.jpg")), "error: --out:"),
        (("--layer", "features.4", "--unit", "1", "--out", str(tmp_path / "d.png")), "error: --out: "),
        (
            ("--layer", "features.4", "--unit", "1", "--out", str(tmp_path / "no" / "x.png")),
            "error: --out: the folder",
        ),
    ):
        refused = run_main("inside", "--run", run.run_id, *args, capsys=capsys)
        assert (
            refused.returncode == 2
            and refused.stderr.startswith(words)
            and len(refused.stderr.splitlines()) == 1
        )
    written = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert written == ["first.png", "unit.png"] and not any((tmp_path / "d.png").iterdir())
    short = run_main("inside", "--run", run.run_id[:3], "--layer", "features.4", "--unit", "1", capsys=capsys)
    assert short.returncode == 2 and short.stderr.startswith(f"error: --run: '{run.run_id[:3]}' is too short")
