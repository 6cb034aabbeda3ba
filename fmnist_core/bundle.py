"""A run as a file to take away and bring back: a zip of its config, history and metrics (JSON) and
its weights in safetensors (no pickle anywhere), an encoder classifier's encoder inside it, and the
list of training images a run left out (so that another lab can train it again); and a classifier
exported to ONNX."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import torch

from .cache import CorruptRunError, RunCache
from .config import ENGINE_VERSION, RunConfig
from .runs import load_run, model_with_weights
from .suspects import exclusion_digest, load_exclusion, save_exclusion

FORMAT = "fmnist-lab-bundle/1"
MAX_BYTES = 400_000_000  # uncompressed: the largest model the lab allows is ~100 MB of weights
FILES = ("config.json", "record.json", "model.safetensors")
EXCLUDED = "exclude.json"  # a part's list of left-out training images, when its config names one


class BundleError(ValueError):
    """A bundle that cannot be brought in; the message says why, in one line."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run_files(run_id: str, cache: RunCache) -> dict[str, bytes]:
    from safetensors.torch import save

    run = load_run(run_id, cache)
    state = {key: value.detach().cpu().contiguous() for key, value in run.model.state_dict().items()}
    files = {
        "config.json": json.dumps(run.config.to_dict(), sort_keys=True).encode(),
        "record.json": json.dumps({"history": run.history, "metrics": run.metrics}).encode(),
        "model.safetensors": save(state),
    }
    if run.config.exclude:
        files[EXCLUDED] = json.dumps(load_exclusion(cache.root, run.config.exclude).tolist()).encode()
    return files


def export_bundle(run_id: str, cache: RunCache | None = None) -> bytes:
    """The cached run `run_id` (and the encoder it builds on) as the bytes of a .zip bundle."""
    cache = cache or RunCache()
    config = cache.load_config(run_id)
    files = {f"run/{name}": data for name, data in _run_files(run_id, cache).items()}
    encoder = config.settings.get("encoder_run")
    if encoder:
        files |= {f"encoder/{name}": data for name, data in _run_files(encoder, cache).items()}
    manifest = {
        "format": FORMAT,
        "engine": ENGINE_VERSION,
        "run_id": run_id,
        "encoder_run": encoder or None,
        "sha256": {name: _digest(data) for name, data in files.items()},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def import_bundle(data: bytes, cache: RunCache | None = None) -> list[str]:
    """Check a bundle and add its runs to the cache (an encoder first); returns their run ids.
    BundleError names what is wrong: not a bundle, damaged, another engine's, a config that does
    not validate or does not hash to its id, weights that do not fit the model."""
    cache = cache or RunCache()
    files, manifest = _read(data)
    saved = []
    for part in ("encoder", "run"):
        if f"{part}/config.json" not in files:
            continue
        config, state, record = _check_run(files, part)
        _check_exclusion(files, part, config)
        if part == "run" and config.run_id != manifest.get("run_id"):
            raise BundleError(f"the bundle names run {manifest.get('run_id')} but holds {config.run_id}")
        if part == "run" and config.settings.get("encoder_run") not in (
            None,
            "",
            manifest.get("encoder_run"),
        ):
            raise BundleError("the classifier's encoder is not the one in the bundle")
        try:
            model = model_with_weights(config, state, cache)
        except CorruptRunError as error:
            raise BundleError(f"{part}: {error}") from None
        if config.exclude:
            save_exclusion(cache.root, json.loads(files[f"{part}/{EXCLUDED}"]))
        cache.save(config, model, record["history"], record["metrics"])
        saved.append(config.run_id)
    if not saved:
        raise BundleError("the bundle holds no run")
    return saved


def _read(data: bytes) -> tuple[dict[str, bytes], dict]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise BundleError("this is not a lab bundle (not a .zip file)") from None
    allowed = {"manifest.json"} | {
        f"{part}/{name}" for part in ("run", "encoder") for name in (*FILES, EXCLUDED)
    }
    if any(entry.filename not in allowed for entry in entries):
        strange = next(entry.filename for entry in entries if entry.filename not in allowed)
        raise BundleError(f"the bundle holds a file a lab bundle does not have: {strange[:60]!r}")
    if sum(entry.file_size for entry in entries) > MAX_BYTES:
        raise BundleError(f"the bundle unpacks to more than {MAX_BYTES // 1_000_000} MB")
    try:
        files = {entry.filename: archive.read(entry) for entry in entries}
        manifest = json.loads(files.pop("manifest.json"))
    except KeyError:
        raise BundleError("the bundle has no manifest.json") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise BundleError("the bundle is damaged (a file does not unpack)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"the manifest is not a {FORMAT} manifest")
    if manifest.get("engine") != ENGINE_VERSION:
        raise BundleError(
            f"the bundle was made by engine {manifest.get('engine')}; this lab is engine {ENGINE_VERSION}, "
            "whose run ids differ: train the run here instead"
        )
    digests = manifest.get("sha256") if isinstance(manifest.get("sha256"), dict) else {}
    for name, content in files.items():
        if digests.get(name) != _digest(content):
            raise BundleError(f"{name} does not match the manifest's checksum (damaged or edited)")
    return files, manifest


def _check_run(files: dict[str, bytes], part: str) -> tuple[RunConfig, dict, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        config = RunConfig.from_dict(json.loads(files[f"{part}/config.json"]))
        record = json.loads(files[f"{part}/record.json"])
    except KeyError as error:
        raise BundleError(f"{part}: {error.args[0]} is missing") from None
    except ValueError as error:  # JSON or a setting that does not validate: the message names it
        raise BundleError(f"{part}: {' '.join(str(error).split())}") from None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("history"), dict)
        or not isinstance(record.get("metrics"), dict)
    ):
        raise BundleError(f"{part}: record.json is not a history and metrics")
    try:
        state = load(files[f"{part}/model.safetensors"])
    except KeyError:
        raise BundleError(f"{part}: model.safetensors is missing") from None
    except (SafetensorError, ValueError, OSError) as error:
        raise BundleError(f"{part}: the weights do not read as safetensors ({error})") from None
    return config, state, record


def _check_exclusion(files: dict[str, bytes], part: str, config: RunConfig) -> None:
    """A part whose config leaves images out carries that list, and the list is the one named."""
    name = f"{part}/{EXCLUDED}"
    if not config.exclude:
        if name in files:
            raise BundleError(f"{part}: {EXCLUDED} is there but the config leaves no image out")
        return
    if name not in files:
        raise BundleError(
            f"{part}: the run left out the training images {config.exclude}, and their list is missing"
        )
    try:
        indices = json.loads(files[name])
        named = isinstance(indices, list) and all(type(i) is int for i in indices)
        named = named and exclusion_digest(indices) == config.exclude
    except ValueError:  # not JSON, or indices out of range
        named = False
    if not named:
        raise BundleError(f"{part}: {EXCLUDED} is not the list {config.exclude} the run names")


def export_onnx(run_id: str, cache: RunCache | None = None) -> bytes:
    """A cached classifier as an ONNX model: input `images` (N, 1, 28, 28) in [0, 1], output `logits`
    (N, 10); N is free."""
    run = load_run(run_id, cache or RunCache(), device="cpu")
    if run.config.kind == "autoencoder":
        raise ValueError(f"run_id: {run_id} is an autoencoder; ONNX export is for classifiers")
    example = torch.zeros(2, 1, 28, 28)
    program = torch.onnx.export(
        run.model.eval(),
        (example,),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
    )
    buffer = io.BytesIO()
    program.save(buffer)
    return buffer.getvalue()
