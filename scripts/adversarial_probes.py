"""Try the lab with bad input and faults, and count what goes wrong (issue 14's campaign).

Each probe feeds one bad input (a setting, a data folder, a damaged cache entry, an upload, a
job, a page's text box) and sorts the outcome:
  refused    a clear one-line error naming the cause, nothing else happened (the goal for bad input);
  recovered  the fault was detected and the right result came back anyway (e.g. a retrain);
  accepted   the input was valid after all and did what it should;
  traceback  an uncaught exception reached the user (or a message that names nothing);
  lost       finished work was thrown away;
  wrong      a result that is not what the config computes on the real data was served;
  code run   a payload ran code (a marker file appeared).
Goal: 0 traceback, 0 lost, 0 wrong, 0 code run. Takes ~10 minutes on 2 cores:

    .venv/bin/python scripts/adversarial_probes.py [--quick]
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import gzip
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fmnist_core import cli  # noqa: E402
from fmnist_core.data.fashion import FILES, DataError, find_data_folder, load_from_folder  # noqa: E402
from fmnist_core.data.preprocess import ImageError, prepare_data_url, prepare_upload  # noqa: E402
from fmnist_core.runs.trained import get_or_train  # noqa: E402
from fmnist_core.store.cache import RunCache  # noqa: E402
from fmnist_core.training.config import RunConfig  # noqa: E402

SMALL = ["--epochs", "1", "--set", "train_subset=300", "--set", "test_subset=300", "--quiet"]
WORK = Path(tempfile.mkdtemp(prefix="fmnist-probes-"))
os.chmod(WORK, 0o755)  # the unprivileged probes' user reads the read-only caches made here
MARKER = WORK / "code-ran"
results: list[tuple[str, str, str, str]] = []  # (category, probe, outcome, detail)


class Bad(Exception):
    """A probe's finding: outcome (traceback, lost, wrong, code run) and what happened."""

    def __init__(self, outcome: str, detail: str):
        super().__init__(detail)
        self.outcome = outcome


def probe(category: str, name: str, check) -> None:
    try:
        outcome, detail = check()
    except Bad as finding:
        outcome, detail = finding.outcome, str(finding)
    except Exception as error:  # anything uncaught is what a user would have seen as a traceback
        outcome, detail = "traceback", f"{type(error).__name__}: {error}"
    if MARKER.exists():
        outcome, detail = "code run", detail
        MARKER.unlink()
    results.append((category, name, outcome, detail[:160]))
    print(f"{outcome:9s} {category:9s} {name}: {detail[:110]}", flush=True)


# ---------------------------------------------------------------- the command line


def run_cli(args: list[str], env: dict | None = None, unprivileged: bool = False) -> tuple[int, str]:
    """The CLI in a fresh interpreter; `unprivileged` runs it as nobody where this runs as root
    (root writes through any file mode, so a read-only cache needs another user to be read-only)."""
    environment = {**os.environ, "FMNIST_CACHE": str(WORK / "cache"), **(env or {})}
    prefix = []
    if unprivileged and os.geteuid() == 0:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        home = WORK / "home"
        home.mkdir(exist_ok=True)
        os.chmod(home, 0o777)
        environment["HOME"] = str(home)
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "fmnist_core", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, done.stdout + done.stderr


def last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def expect_refusal(rc: int, output: str, names: str) -> tuple[str, str]:
    last = output.strip().splitlines()[-1] if output.strip() else ""
    if "Traceback" in output:
        raise Bad("traceback", last)
    if rc != 2:
        raise Bad("traceback", f"exit {rc}: {last}")
    if names.lower() not in output.lower():
        raise Bad("traceback", f"message does not name {names!r}: {last}")
    return "refused", last


def cli_in_process(args: list[str]) -> tuple[int, str]:
    """The CLI's main() here (no interpreter start per probe); an exception escaping is a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(args)
        except SystemExit as exit:  # argparse's own refusals: usage and one line, exit 2
            rc = exit.code
    return rc, out.getvalue() + err.getvalue()


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


def settings_probes() -> None:
    for (model, key), values in BAD_SETTINGS.items():
        for value in values:

            def check(model=model, key=key, value=value):
                small = list(SMALL)
                if f"{key}=300" in small:  # the probe's value, not the small run's
                    at = small.index(f"{key}=300")
                    del small[at - 1 : at + 1]
                rc, output = cli_in_process(["train", model, *small, "--set", f"{key}={value}"])
                if rc == 0:
                    raise Bad("wrong", f"{key}={value!r} was accepted and trained")
                return expect_refusal(rc, output, key)

            probe("settings", f"{model} {key}={value[:40]!r}", check)
    flag_cases = [
        (["train", "mlp", "--epochs", "2", "--set", "epochs=3"], "epochs"),
        (["train", "mlp", "--set", "model=cnn"], "model"),
        (["train", "mlp", "--set", "nonsense=1"], "nonsense"),
        (["train", "mlp", "--set", "lr"], "lr"),
        (["train", "no_such_model"], "no_such_model"),
        (["train", "cnn", "--set", "layers=conv:35:3:valid:relu", "--set", "n=4"], "n"),
    ]
    for args, names in flag_cases:
        probe(
            "settings", " ".join(args[1:])[:60], lambda a=args, n=names: expect_refusal(*cli_in_process(a), n)
        )


# ---------------------------------------------------------------- the data


def real_arrays() -> dict[str, bytes]:
    source = find_data_folder()
    out = {}
    for stem in FILES.values():
        gz = source / f"{stem}.gz"
        out[stem] = gzip.decompress(gz.read_bytes()) if gz.exists() else (source / stem).read_bytes()
    return out


def data_folder(name: str, files: dict[str, bytes], compress: bool = True) -> Path:
    folder = WORK / "data" / name
    folder.mkdir(parents=True)
    for stem, raw in files.items():
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw, compresslevel=1))
        else:
            (folder / stem).write_bytes(raw)
    return folder


def data_probes(quick: bool) -> None:
    raw = real_arrays()
    train_labels, train_images = "train-labels-idx1-ubyte", "train-images-idx3-ubyte"
    labels = np.frombuffer(raw[train_labels][8:], np.uint8)
    images = np.frombuffer(raw[train_images][16:], np.uint8).reshape(-1, 28, 28)
    rng = np.random.default_rng(0)

    def variant(stem: str, header: bytes, array: np.ndarray) -> dict[str, bytes]:
        return {**raw, stem: header + array.astype(np.uint8).tobytes()}

    variants = {
        "relabelled": variant(train_labels, raw[train_labels][:8], rng.permutation(labels)),
        "pixel-shuffled": variant(train_images, raw[train_images][:16], images[:, rng.permutation(28)]),
        "transposed": variant(train_images, raw[train_images][:16], images.transpose(0, 2, 1)),
        "all-black": variant(train_images, raw[train_images][:16], np.zeros_like(images)),
        "train-test swapped": {
            **raw,
            train_labels: raw["t10k-labels-idx1-ubyte"],
            "t10k-labels-idx1-ubyte": raw[train_labels],
        },
        "truncated images": {**raw, train_images: raw[train_images][:-5000]},
        "wrong magic": {**raw, train_labels: b"\x00\x00\x09\x01" + raw[train_labels][4:]},
    }
    for name, files in variants.items():
        folder = data_folder(name.replace(" ", "-"), files)
        probe(
            "data",
            f"FMNIST_DATA at {name} files",
            lambda f=folder: expect_refusal(
                *run_cli(["train", "mlp", *SMALL], {"FMNIST_DATA": str(f)}), "ubyte"
            ),
        )
    empty = WORK / "data" / "empty"
    empty.mkdir()
    incomplete = data_folder("incomplete", {k: v for k, v in raw.items() if "t10k-images" not in k})
    plain = data_folder("uncompressed-bad", {**raw, train_labels: raw[train_labels][:100]}, compress=False)
    a_file = WORK / "data" / "a-file"
    a_file.write_text("not a folder")
    bomb = WORK / "data" / "bomb"
    bomb.mkdir()
    for stem in FILES.values():
        (bomb / f"{stem}.gz").write_bytes(gzip.compress(b"\0" * 200_000_000, compresslevel=9))
    for name, folder, names in [
        ("a missing folder", WORK / "data" / "nowhere", "FMNIST_DATA"),
        ("an empty folder", empty, "FMNIST_DATA"),
        ("a folder missing t10k-images", incomplete, "t10k-images"),
        ("short uncompressed labels", plain, "train-labels"),
        ("a file, not a folder", a_file, "FMNIST_DATA"),
        ("gzip bombs", bomb, "ubyte"),
    ]:
        probe(
            "data",
            f"FMNIST_DATA at {name}",
            lambda f=folder, n=names: expect_refusal(
                *run_cli(["train", "mlp", *SMALL], {"FMNIST_DATA": str(f)}), n
            ),
        )

    # FMNIST_OTHER_DATA=1 opts in: trained on, under another run id, never served to the real files.
    def opted_in():
        folder = WORK / "data" / "relabelled"
        env = {"FMNIST_DATA": str(folder), "FMNIST_OTHER_DATA": "1"}
        rc, output = run_cli(["train", "mlp", *SMALL, "--json"], env)
        if rc != 0:
            raise Bad("traceback", output.strip().splitlines()[-1])
        other = last_json(output)
        rc, output = run_cli(["train", "mlp", *SMALL, "--json"])
        real = last_json(output)
        if real["run_id"] == other["run_id"] or real["test_accuracy"] == other["test_accuracy"]:
            raise Bad("wrong", f"the relabelled run {other['run_id']} was served for the real files")
        return (
            "accepted",
            f"other data {other['run_id']} acc {other['test_accuracy']:.3f}; real {real['run_id']} {real['test_accuracy']:.3f}",
        )

    probe("data", "FMNIST_OTHER_DATA=1 with relabelled files, then the real files", opted_in)

    # Random corruptions of each real .gz file, loaded in this process.
    source = find_data_folder()
    corruptions = 8 if quick else 15
    for stem in FILES.values():
        original = (source / f"{stem}.gz").read_bytes()
        for k in range(corruptions):
            damaged = bytearray(original)
            kind = k % 3
            if kind == 0:  # flip bytes
                for _ in range(1 + k):
                    position = rng.integers(10, len(damaged))
                    damaged[position] ^= 1 << int(rng.integers(8))
            elif kind == 1:  # truncate
                damaged = damaged[: int(rng.integers(1, len(damaged)))]
            else:  # a zeroed block
                start = int(rng.integers(0, len(damaged) - 64))
                damaged[start : start + 64] = bytes(64)

            def check(stem=stem, damaged=bytes(damaged), k=k):
                folder = WORK / "fuzz" / f"{stem}-{k}"
                folder.mkdir(parents=True)
                for other in FILES.values():
                    target = folder / f"{other}.gz"
                    if other == stem:
                        target.write_bytes(damaged)
                    else:
                        target.symlink_to(source / f"{other}.gz")
                try:
                    load_from_folder(folder, allow_other=False)
                except DataError as error:
                    if stem not in str(error):
                        raise Bad("traceback", f"does not name {stem}: {error}") from None
                    return "refused", str(error)
                finally:
                    shutil.rmtree(folder)
                raise Bad("wrong", "a corrupted file loaded")

            probe("loader", f"{stem} corruption {k}", check)


# ---------------------------------------------------------------- the cache


def tiny(model: str = "mlp", **settings) -> RunConfig:
    return RunConfig.for_model(model, settings, epochs=1, train_subset=300, test_subset=300)


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def cache_probes() -> None:
    cache = RunCache(WORK / "cache-probes")
    config = tiny()
    reference = get_or_train(config, cache=cache)
    good = {
        name: (cache.folder(config.run_id) / name).read_bytes()
        for name in os.listdir(cache.folder(config.run_id))
    }

    def restore():
        folder = cache.folder(config.run_id)
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        for name, data in good.items():
            (folder / name).write_bytes(data)

    def matching_manifest(folder: Path) -> None:
        import hashlib

        manifest = json.loads((folder / "manifest.json").read_text())
        for name in ("config.json", "history.json", "model.pt"):
            manifest["sha256"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))

    def served_right(label: str):
        """After the damage: train again must give the reference's result (retrained or loaded)."""
        listing = cache.list_runs()  # must not raise
        run = get_or_train(config, cache=cache)
        if run.metrics["test_accuracy"] != reference.metrics["test_accuracy"]:
            raise Bad(
                "wrong",
                f"served accuracy {run.metrics['test_accuracy']} != {reference.metrics['test_accuracy']}",
            )
        state = "retrained" if not run.cached else "served"
        return "recovered", f"{label}: {state}; listing had {len(listing)} rows"

    damages = {}
    for name in ("model.pt", "config.json", "history.json", "manifest.json"):
        damages[f"{name} truncated"] = lambda f, n=name: (f / n).write_bytes((f / n).read_bytes()[:37])
        damages[f"{name} emptied"] = lambda f, n=name: (f / n).write_bytes(b"")
        damages[f"{name} deleted"] = lambda f, n=name: (f / n).unlink()
        damages[f"{name} a folder"] = lambda f, n=name: ((f / n).unlink(), (f / n).mkdir())
        damages[f"{name} one bit flipped"] = lambda f, n=name: (f / n).write_bytes(
            bytes([(f / n).read_bytes()[0] ^ 1]) + (f / n).read_bytes()[1:]
        )

    def evil_payload(f):
        (f / "model.pt").write_bytes(pickle.dumps(Evil()))
        matching_manifest(f)

    def torch_evil(f):
        import torch

        torch.save({"w": Evil()}, f / "model.pt")
        matching_manifest(f)

    def manifest_sha_int(f):
        manifest = json.loads((f / "manifest.json").read_text())
        manifest["sha256"] = {"model.pt": 5}
        (f / "manifest.json").write_text(json.dumps(manifest))

    def history_malformed(f):
        (f / "history.json").write_text('{"history": [1, 2], "metrics": "x"}')
        matching_manifest(f)

    def config_edited(f):
        values = json.loads((f / "config.json").read_text())
        values["lr"] = 0.5
        (f / "config.json").write_text(json.dumps(values))
        matching_manifest(f)

    def weights_reshaped(f):
        import torch

        state = torch.load(f / "model.pt", weights_only=True)
        first = next(iter(state))
        state[first] = torch.zeros(3, 3)
        torch.save(state, f / "model.pt")
        matching_manifest(f)

    def other_entry(f):
        other = get_or_train(tiny(n1=32), cache=cache)
        shutil.rmtree(f)
        f.symlink_to(cache.folder(other.run_id).resolve())

    def entry_a_file(f):
        shutil.rmtree(f)
        f.write_text("x")

    def entry_symlink_to_nowhere(f):
        shutil.rmtree(f)
        f.symlink_to(WORK / "nowhere")

    damages.update(
        {
            "a pickle that runs code, checksum matching": evil_payload,
            "torch.save of an object that runs code, checksum matching": torch_evil,
            "manifest sha256 not strings": manifest_sha_int,
            "history malformed, checksum matching": history_malformed,
            "config edited, checksum matching": config_edited,
            "weights of the wrong shape, checksum matching": weights_reshaped,
            "entry a symlink to another run's entry": other_entry,
            "entry a file": entry_a_file,
            "entry a dangling symlink": entry_symlink_to_nowhere,
        }
    )
    for label, damage in damages.items():

        def check(label=label, damage=damage):
            restore()
            damage(cache.folder(config.run_id))
            return served_right(label)

        probe("cache", label, check)
    restore()

    # An encoder damaged: the encoder and its classifiers listed damaged, pruned, retrained together.
    def encoder_damaged():
        encoder = get_or_train(tiny("conv_autoencoder", n=8), cache=cache)
        classifier_config = tiny("encoder_classifier", encoder_run=encoder.run_id)
        classifier = get_or_train(classifier_config, cache=cache)
        path = cache.folder(encoder.run_id) / "model.pt"
        path.write_bytes(path.read_bytes()[:-100])
        status = dict(zip(cache.list_runs()["run_id"], cache.list_runs()["status"], strict=True))
        if not (
            status[encoder.run_id].startswith("damaged") and status[classifier.run_id].startswith("damaged")
        ):
            raise Bad("wrong", f"listed {status[encoder.run_id]!r} / {status[classifier.run_id]!r}")
        pruned = {run_id for run_id, _ in cache.prune()}
        if not {encoder.run_id, classifier.run_id} <= pruned:
            raise Bad("wrong", f"prune removed {pruned}")
        again = get_or_train(classifier_config, cache=cache)
        if again.cached or again.metrics["test_accuracy"] != classifier.metrics["test_accuracy"]:
            raise Bad("wrong", "the classifier was not retrained to the same result")
        return "recovered", "both listed damaged, pruned, retrained to the same accuracy"

    probe("cache", "encoder's model.pt truncated", encoder_damaged)

    # Cache folders that cannot hold the run: the trained run must come back anyway, with a note.
    def unwritable(make_root):
        def check():
            root = make_root()
            run = get_or_train(config, cache=RunCache(root))
            saved = RunCache(root).usable(config.run_id)
            if run.metrics["test_accuracy"] != reference.metrics["test_accuracy"] or not (saved or run.note):
                raise Bad("lost", f"run {run.metrics.get('test_accuracy')}, saved {saved}, note {run.note!r}")
            return "recovered", "trained and saved" if saved else f"trained, kept in memory: {run.note[:90]}"

        return check

    def root_a_file():
        path = WORK / "root-file"
        path.write_text("x")
        return path

    def root_read_only():
        """A cache another user can only read, holding one good entry and one damaged one."""
        path = WORK / "root-ro"
        if not path.exists():
            shutil.copytree(cache.folder(config.run_id), path / config.run_id)
            shutil.copytree(cache.folder(config.run_id), path / "0123456789abcdef")
            (path / "0123456789abcdef" / "model.pt").write_bytes(b"junk")
        for folder in [path, *path.iterdir()]:
            os.chmod(folder, 0o755)
        return path

    def root_under_a_file():
        return root_a_file() / "cache"

    def lock_a_folder():
        path = WORK / "root-lockdir"
        (path / f".{config.run_id}.lock").mkdir(parents=True, exist_ok=True)
        return path

    for label, make_root in [
        ("cache root a file", root_a_file),
        ("cache root under a file", root_under_a_file),
        ("the run's lock a folder", lock_a_folder),
    ]:
        probe("cache", label, unwritable(make_root))

    def listing(root_factory, label):
        def check():
            cache_here = RunCache(root_factory())
            table = cache_here.list_runs()
            cache_here.prune()
            return "recovered", f"{label}: {len(table)} rows, prune ran"

        return check

    probe("cache", "runs and prune with the cache root a file", listing(root_a_file, "a file"))

    def cli_check(args, make_root, label, unprivileged=False, trains=False):
        def check():
            rc, output = run_cli(args, {"FMNIST_CACHE": str(make_root())}, unprivileged)
            last = output.strip().splitlines()[-1] if output.strip() else ""
            if "Traceback" in output:
                raise Bad("traceback", last)
            if trains:  # the run must come back, with a note that it could not be saved
                if rc != 0 or "not saved" not in output:
                    raise Bad("lost", f"exit {rc}: {last}")
                return "recovered", last[-120:]
            return ("refused" if rc else "accepted"), f"{label}: exit {rc}: {last[:100]}"

        return check

    read_only = {"unprivileged": True}
    probe("cache", "CLI runs --prune, cache a file", cli_check(["runs", "--prune"], root_a_file, "a file"))
    probe("cache", "CLI runs, read-only cache", cli_check(["runs"], root_read_only, "read-only", **read_only))
    probe(
        "cache",
        "CLI runs --prune, read-only cache",
        cli_check(["runs", "--prune"], root_read_only, "ro", **read_only),
    )
    train_small = ["train", "mlp", *SMALL, "--json"]
    probe("cache", "CLI train, the cache a file", cli_check(train_small, root_a_file, "a file", trains=True))
    probe(
        "cache",
        "CLI train, read-only cache holding the run",
        cli_check(train_small, root_read_only, "read-only", **read_only),
    )
    probe(
        "cache",
        "CLI train, read-only cache not holding the run",
        cli_check(
            ["train", "mlp", *SMALL, "--seed", "3", "--json"],
            root_read_only,
            "read-only",
            trains=True,
            **read_only,
        ),
    )
    for missing in ("0123456789abcdef", "zz"):
        probe(
            "cache",
            f"CLI train encoder_classifier at missing encoder {missing}",
            lambda m=missing: expect_refusal(
                *cli_in_process(["train", "encoder_classifier", "--set", f"encoder_run={m}", *SMALL]),
                "encoder_run",
            ),
        )


# ---------------------------------------------------------------- uploads and drawings


def png(array: np.ndarray, mode: str | None = None, **save) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def image_bytes(image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def upload_probes() -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    good = png((rng.random((60, 40)) * 255).astype(np.uint8))
    big = io.BytesIO()
    Image.new("L", (20000, 20000)).save(big, format="PNG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (30, 30), (0, 0, 0, 255)).save(cmyk, format="JPEG")
    gif = io.BytesIO()
    Image.new("P", (30, 30)).save(gif, format="GIF")
    animated = io.BytesIO()
    frames = [Image.new("RGB", (30, 30), (i * 40, 0, 0)) for i in range(4)]
    frames[0].save(animated, format="WEBP", save_all=True, append_images=frames[1:])
    uploads = {
        "empty": b"",
        "text": b"hello, this is not an image",
        "random bytes": rng.bytes(5000),
        "PNG header only": good[:8],
        "truncated PNG": good[: len(good) // 2],
        "PNG with a flipped byte in the data": good[:60] + bytes([good[60] ^ 255]) + good[61:],
        "20000x20000 PNG (bomb)": big.getvalue(),
        "1x1 PNG": png(np.zeros((1, 1), np.uint8)),
        "1x5000 PNG": png(np.full((1, 5000), 255, np.uint8)),
        "all white PNG": png(np.full((50, 50), 255, np.uint8)),
        "all black PNG": png(np.zeros((50, 50), np.uint8)),
        "16-bit PNG": image_bytes(Image.fromarray((rng.random((30, 30)) * 65535).astype(np.uint16))),
        "RGBA fully transparent": png(np.zeros((30, 30, 4), np.uint8)),
        "LA PNG": image_bytes(Image.new("LA", (30, 30), (200, 0))),
        "palette PNG": image_bytes(Image.new("P", (30, 30), 3)),
        "CMYK JPEG": cmyk.getvalue(),
        "GIF (not accepted)": gif.getvalue(),
        "animated WebP": animated.getvalue(),
        "SVG": b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="10" height="10"/></svg>',
        "a pickle": pickle.dumps(Evil()),
        "a zip file": b"PK\x03\x04" + rng.bytes(100),
        "an ELF binary header": b"\x7fELF" + rng.bytes(100),
        "JPEG header, then junk": b"\xff\xd8\xff\xe0" + rng.bytes(500),
        "WebP header, then junk": b"RIFF\x00\x00\x00\x00WEBPVP8 " + rng.bytes(200),
        "PNG with NaN-like huge dimensions in IHDR": good[:16]
        + (2**31 - 1).to_bytes(4, "big") * 2
        + good[24:],
    }
    for name, data in uploads.items():

        def check(data=data):
            start = time.perf_counter()
            try:
                image = prepare_upload(data)
            except ImageError as error:
                return "refused", f"{error} ({time.perf_counter() - start:.2f} s)"
            if image.shape != (28, 28) or not np.isfinite(image).all():
                raise Bad("wrong", f"image {image.shape}")
            return "accepted", f"28x28 in {time.perf_counter() - start:.2f} s"

        probe("upload", name, check)

    def url(grey, fmt="PNG"):
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, format=fmt)
        return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()

    blank, dot = np.zeros((280, 280), np.uint8), np.zeros((280, 280), np.uint8)
    dot[140, 140] = 255
    whole = url(dot)
    drawings = {  # what the canvas component could send instead of its PNG data URL
        "empty canvas": url(blank),
        "one pixel": whole,
        "a JPEG data URL": url(dot, "JPEG"),
        "not a data URL": "https://example.com/x.png",
        "broken base64": whole[:-7] + "!!!" + whole[-4:],
        "truncated PNG": whole[: len(whole) // 2],
        "a huge string": "data:image/png;base64," + "A" * 20_000_000,
        "a dict, not a string": {"png": whole},
    }
    for name, data in drawings.items():

        def check(data=data):
            try:
                image = prepare_data_url(data)
            except ImageError as error:
                return "refused", str(error)
            if image.shape != (28, 28) or not np.isfinite(image).all():
                raise Bad("wrong", f"image {getattr(image, 'shape', None)} with non-finite values")
            return "accepted", "28x28"

        probe("drawing", name, check)


# ---------------------------------------------------------------- jobs and pages


def job_probes() -> None:
    from fmnist_core.runs.jobs import DONE, FAILED, JobQueue

    cache = RunCache(WORK / "cache-jobs")
    queue = JobQueue(cache)
    config = tiny()

    def entry_vanished():
        first = queue.wait(queue.submit(config).run_id, timeout=300)
        cache.delete(config.run_id)
        second = queue.submit(config)
        queue.wait(second.run_id, timeout=300)
        if second is first or not cache.exists(config.run_id):
            raise Bad("lost", "Train did not train again after the entry vanished")
        return "recovered", f"{first.state} then trained again: {second.state}"

    probe("jobs", "a finished job's entry deleted, Train again", entry_vanished)

    def failing_twice():
        bad = tiny("encoder_classifier", encoder_run="0123456789abcdef")
        for _ in range(2):
            job = queue.submit(bad)
            queue.wait(job.run_id, timeout=60)
        listed = [j for j in queue.jobs() if j.run_id == bad.run_id]
        if len(listed) != 1 or listed[0].state != FAILED or "\n" in (listed[0].error or ""):
            raise Bad("traceback", f"listed {len(listed)} times, {listed[0].error!r}")
        return "refused", listed[0].error

    probe("jobs", "a job that fails, submitted twice", failing_twice)

    def same_config_twice():
        other = tiny(n1=48)
        a, b = queue.submit(other), queue.submit(other)
        queue.wait(a.run_id, timeout=300)
        if a is not b or a.state != DONE:
            raise Bad("wrong", "two jobs for one config")
        return "accepted", "one job"

    probe("jobs", "the same config submitted twice at once", same_config_twice)


def page_probes() -> None:
    from streamlit.testing.v1 import AppTest

    os.environ["FMNIST_CACHE"] = str(WORK / "cache-probes")
    for value in ["conv:", "conv:35:3:same:relu,dense:16384:relu", "conv:1024:3:same:relu", "💥", "x" * 5000]:

        def check(value=value):
            app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
            app.switch_page("app_pages/classifier.py").run()
            app.selectbox(key="widget:cls:model").set_value("cnn").run()
            app.text_area[0].set_value(value).run()
            if app.exception:
                raise Bad("traceback", app.exception[0].value[:120])
            shown = [e.value for e in app.error]
            return ("refused", shown[0][:100]) if shown else ("accepted", "no error shown")

        probe("page", f"Classifier layers {value[:30]!r}", check)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer random corruptions")
    parser.add_argument("--only", help="run only this category's probes")
    args = parser.parse_args()
    os.environ["FMNIST_CACHE"] = str(WORK / "cache")
    groups = {
        "settings": settings_probes,
        "data": lambda: data_probes(args.quick),
        "cache": cache_probes,
        "upload": upload_probes,
        "jobs": job_probes,
        "page": page_probes,
    }
    start = time.perf_counter()
    try:
        for name, group in groups.items():
            if args.only is None or args.only == name:
                group()
    finally:
        for path in WORK.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    os.chmod(path, 0o755)
        shutil.rmtree(WORK, ignore_errors=True)
    counts = collections.Counter(outcome for *_, outcome, _ in results)
    by_category = collections.defaultdict(collections.Counter)
    for category, _, outcome, _ in results:
        by_category[category][outcome] += 1
    print(f"\n{len(results)} probes in {time.perf_counter() - start:.0f} s: {dict(counts)}")
    for category, outcomes in by_category.items():
        print(f"  {category:9s} {sum(outcomes.values()):4d}  {dict(outcomes)}")
    failures = [r for r in results if r[2] in ("traceback", "lost", "wrong", "code run")]
    for category, name, outcome, detail in failures:
        print(f"FAIL {outcome} [{category}] {name}: {detail}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
