"""A run as a file to take away and bring back: a zip of its config, history and metrics (JSON) and
its weights in safetensors (no pickle anywhere), an encoder classifier's encoder inside it, and the
list of training images a run left out (so that another lab can train it again); and a classifier
exported to ONNX."""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from dataclasses import dataclass

import torch

from fmnist_core.analysis import test_metrics
from fmnist_core.base.files import MAX_JSON_DEPTH, MAX_JSON_VALUES, JsonScan, checksum, parse_json
from fmnist_core.base.settings import shown
from fmnist_core.data.exclusions import exclusion_digest, exclusion_folder, load_exclusion, save_exclusion
from fmnist_core.data.fashion import load_data
from fmnist_core.models import get_spec
from fmnist_core.runs.trained import load_run, model_skeleton, model_with_weights
from fmnist_core.store.cache import CorruptRunError, RunCache
from fmnist_core.training.config import ENGINE_VERSION, RunConfig, check_record
from fmnist_core.training.splits import make_splits

FORMAT = "fmnist-lab-bundle/1"
MAX_BYTES = 400_000_000  # uncompressed: the largest model the lab allows is ~100 MB of weights
FILES = ("config.json", "record.json", "model.safetensors")
# The most each file may unpack to, whatever its entry declares (a record's own limit follows from
# its config: record_limit).
LIMITS = {
    "manifest.json": 64_000,
    "config.json": 64_000,
    "record.json": 256_000_000,
    "exclude.json": 1_000_000,
}
# A record's size: its metrics, and per epoch its curves, reconstructions and latent maps (measured:
# ~32 KB an epoch for an autoencoder at n=8, ~11 KB for an MLP) and, with cartography, every training
# image's confidence (~1.5 bytes an image an epoch). Limits well above that.
RECORD_BYTES, EPOCH_BYTES, CARTOGRAPHY_BYTES = 256_000, 128_000, 8_000
RECORD_VALUES, EPOCH_VALUES = 20_000, 500  # values: ~150 an epoch (a 10 x 10 confusion the most)
RECORD_TEXT = 1_000_000  # the longest text in a record: an epoch's cartography, ~90 KB
EXCLUDED = "exclude.json"  # a part's list of left-out training images, when its config names one


class BundleError(ValueError):
    """A bundle that cannot be brought in; the message says why, in one line."""


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
        "sha256": {name: checksum(data) for name, data in files.items()},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=1))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass(frozen=True)
class Imported:
    """One run a bundle brought: `added` False where the lab had it already, with the same weights."""

    run_id: str
    added: bool


def import_bundle(data: bytes, cache: RunCache | None = None) -> list[Imported]:
    """Check a bundle and add its runs to the cache (an encoder first). BundleError, in one line,
    names what is wrong: not a bundle, damaged, another engine's, a config that does not validate
    or hash to its id, weights that do not fit the model or do not score what the bundle claims.

    A run the lab has already is never replaced: the same weights are a no-op, other weights are
    refused. Every run's test metrics are measured here before it is kept."""
    cache = cache or RunCache()
    archive, entries, files, manifest = _read(data)
    parts = {}
    for part in ("encoder", "run"):  # the encoder first: the run's model is built on it
        if f"{part}/config.json" in files:
            encoder = parts["encoder"][0] if part == "run" and "encoder" in parts else None
            parts[part] = _check_run(archive, entries, files, manifest, part, cache, encoder)
            if part == "encoder" and not get_spec(parts[part][0].model).reconstructs:
                raise BundleError(
                    f"encoder: run {parts[part][0].run_id} is a {parts[part][0].model}, not an autoencoder"
                )
    if "run" not in parts:
        raise BundleError("the bundle holds no run")
    config = parts["run"][0]
    if config.run_id != manifest.get("run_id"):
        raise BundleError(
            f"the bundle names run {str(manifest.get('run_id'))[:20]} but holds {config.run_id}"
        )
    encoder_run = config.settings.get("encoder_run") or None
    if encoder_run not in (None, manifest.get("encoder_run")):
        raise BundleError("the classifier's encoder is not the one in the bundle")
    brought = "encoder" in parts and parts["encoder"][0].run_id == encoder_run
    if encoder_run and not brought and ("encoder" in parts or not cache.usable(encoder_run)):
        raise BundleError(f"the classifier's encoder {encoder_run} is neither in the bundle nor here")
    encoder_config = parts["encoder"][0] if "encoder" in parts else None
    # Every part checked before any is written: an import is whole or nothing. A list of left-out
    # images is kept first (measuring its run reads it) and taken away again where the import fails.
    kept_lists: list = []
    try:
        checked = [
            _checked_part(cache, files, part, config, state, record, encoder_config, kept_lists)
            for part, (config, state, record) in parts.items()
        ]
    except BundleError:
        for path in kept_lists:
            path.unlink(missing_ok=True)
        raise
    imported = []
    try:
        for _, config, model, record in checked:
            if record is None:  # the lab has this run, with the same weights
                imported.append(Imported(config.run_id, added=False))
                continue
            with cache.lock_if_writable(config.run_id):
                if not cache.usable(config.run_id):  # another import may have brought it meanwhile
                    cache.save(config, model, record["history"], record["metrics"])
            imported.append(Imported(config.run_id, added=True))
    except OSError as error:
        raise BundleError(f"cannot write into the cache {cache.root} ({error.strerror or error})") from None
    return imported


def _checked_part(cache, files, part, config, state, record, encoder_config, kept_lists: list):
    """One part checked: its exclusion list, its weights in its model, its record's claims measured."""
    _check_exclusion(files, part, config)
    try:
        model = model_with_weights(config, state, cache, "cpu", encoder_config if part == "run" else None)
    except CorruptRunError as error:
        raise BundleError(f"{part}: {error}") from None
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as error:
        raise BundleError(
            f"{part}: the weights do not make its model ({' '.join(str(error).split())[:120]})"
        ) from None
    if config.exclude:
        path = exclusion_folder(cache.root) / f"{config.exclude}.json"
        try:
            if not path.exists():
                kept_lists.append(path)
            save_exclusion(cache.root, parse_json(files[f"{part}/{EXCLUDED}"]))
        except OSError as error:
            raise BundleError(
                f"cannot write into the cache {cache.root} ({error.strerror or error})"
            ) from None
    return part, config, model, _checked_record(cache, config, model, record, part)


def import_summary(imported: list[Imported]) -> str:
    """What an import did, in a sentence: runs added, and runs the lab had already."""
    added = [f"`{run.run_id}`" for run in imported if run.added]
    here = [f"`{run.run_id}`" for run in imported if not run.added]
    words = [f"Added {', '.join(added)} (test metrics measured here)" if added else ""]
    words.append(
        f"{', '.join(here)} {'was' if len(here) == 1 else 'were'} here already, same weights" if here else ""
    )
    return "; ".join(filter(None, words)) + "."


def _checked_record(cache: RunCache, config: RunConfig, model, record: dict, part: str) -> dict | None:
    """The record to keep, its claims measured here; None where the lab has the run with the same
    weights (nothing to do); a BundleError where it has other weights (the lab's own is kept)."""
    if cache.usable(config.run_id):
        here = cache.load_state(config.run_id)
        same = here.keys() == model.state_dict().keys() and all(
            torch.equal(value, here[name]) for name, value in model.state_dict().items()
        )
        if same:
            return None
        raise BundleError(
            f"{part}: run {config.run_id} is already in this lab with other weights; the lab's own is kept"
        )
    metrics = dict(record["metrics"])
    measured = _measure(config, model, cache)
    for key, value in measured.items():
        claimed = metrics[key]
        tolerance = 0.005 if key == "test_accuracy" else 1e-3 + 1e-2 * abs(claimed)
        if not (math.isfinite(claimed) and abs(value - claimed) <= tolerance):  # NaN, inf claims fail
            raise BundleError(
                f"{part}: the bundle claims {key} {claimed:.4g}, its weights score {value:.4g} here"
            )
    metrics["measured_on_import"] = measured
    return {"history": record["history"], "metrics": metrics}


def _measure(config: RunConfig, model, cache: RunCache) -> dict[str, float]:
    """The run's test metrics, measured on this lab's data as training measured them."""
    fingerprint = load_data().fingerprint
    if config.data != fingerprint:
        raise BundleError(f"the run was trained on other data ({config.data}); this lab has {fingerprint}")
    splits = make_splits(config, cache.root)
    measured = test_metrics(model, splits.test_images, splits.test_labels, config.loss, config.tta)
    if config.kind == "autoencoder":
        return {"test_mse": measured["loss"], "test_loss": measured["loss"]}
    return {"test_accuracy": measured["accuracy"], "test_loss": measured["loss"]}


ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    OSError,
    ValueError,
)


LATER = ("record.json", "model.safetensors")  # unpacked once their config says how large they may be


def _read(data: bytes):
    """The archive, its entries by name, the small files unpacked (manifest, configs, exclusion
    lists: their checksums checked) and the manifest."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except ARCHIVE_ERRORS:
        raise BundleError("this is not a lab bundle (not a .zip file)") from None
    allowed = {"manifest.json"} | {
        f"{part}/{name}" for part in ("run", "encoder") for name in (*FILES, EXCLUDED)
    }
    names = [entry.filename for entry in entries]
    strange = next((name for name in names if name not in allowed), None)
    if strange is not None:
        raise BundleError(f"the bundle holds a file a lab bundle does not have: {strange[:60]!r}")
    if len(set(names)) != len(names):
        raise BundleError("the bundle holds a file twice")
    if sum(entry.file_size for entry in entries) > MAX_BYTES:
        raise BundleError(f"the bundle unpacks to more than {MAX_BYTES // 1_000_000} MB")
    for entry in entries:  # every entry's method and declared size, before anything unpacks
        _check_entry(entry, None)
    by_name = {entry.filename: entry for entry in entries}
    files = {e.filename: _unpack(archive, e) for e in entries if e.filename.rsplit("/", 1)[-1] not in LATER}
    if "manifest.json" not in files:
        raise BundleError("the bundle has no manifest.json")
    manifest = _json(files.pop("manifest.json"), "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"the manifest is not a {FORMAT} manifest")
    engine = manifest.get("engine")
    if type(engine) is not int:
        raise BundleError(f"the manifest's engine {str(engine)[:20]!r} is not an engine number")
    if engine != ENGINE_VERSION:
        raise BundleError(
            f"the bundle was made by engine {shown(engine)}; this lab is engine {ENGINE_VERSION}, "
            "whose run ids differ: train the run here instead"
        )
    for name, content in files.items():
        _check_digest(manifest, name, content)
    return archive, by_name, files, manifest


def _check_digest(manifest: dict, name: str, content: bytes) -> None:
    digests = manifest.get("sha256") if isinstance(manifest.get("sha256"), dict) else {}
    if digests.get(name) != checksum(content):
        raise BundleError(f"{name} does not match the manifest's checksum (damaged or edited)")


def record_limit(config: RunConfig, epochs: int | None = None) -> int:
    """The most bytes a run's record.json may hold, from its epochs (all its config's, or the
    `epochs` it ran) and, where it keeps cartography, its training images (each ~1.5 bytes an
    epoch, as base64 of a byte and a bit)."""
    images = config.train_subset or 60_000
    per_epoch = EPOCH_BYTES + (CARTOGRAPHY_BYTES + 2 * images if config.cartography else 0)
    return min(LIMITS["record.json"], RECORD_BYTES + (epochs or config.epochs) * per_epoch)


def record_values(config: RunConfig) -> int:
    """The most values a run's record.json may hold: a history has ~150 an epoch (its large parts,
    maps, reconstructions and cartography, are base64 text) and its metrics a few hundred."""
    return RECORD_VALUES + config.epochs * EPOCH_VALUES


def _unpack(
    archive: zipfile.ZipFile,
    entry: zipfile.ZipInfo,
    limit: int | None = None,
    max_values: int = MAX_JSON_VALUES,
) -> bytes:
    """One entry's bytes, decompressed in bounded steps and never past its declared size (a zip
    bomb declares a small size: counting what actually comes out is what stops it) or `limit`; a
    JSON file's shape scanned as it comes, refused at its first piece past `max_values` values, the
    lab's depth or a text longer than a record's longest (a record of millions of numbers is
    megabytes of text, gigabytes parsed; no lab file holds a NUL byte or a megabyte's text)."""
    name = entry.filename
    _check_entry(entry, limit)
    chunks, size = [], 0
    scan = JsonScan() if name.endswith(".json") else None
    try:
        with archive.open(entry) as stream:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > entry.file_size:
                    raise BundleError(f"{name} unpacks to more than its declared size (damaged or hostile)")
                if scan is not None:
                    scan.feed(chunk)
                    if refusal := scan.refusal(MAX_JSON_DEPTH, max_values, RECORD_TEXT):
                        raise BundleError(f"{name}: {refusal}")
                chunks.append(chunk)
    except BundleError:
        raise
    except ARCHIVE_ERRORS:
        raise BundleError(f"the bundle is damaged ({name} does not unpack)") from None
    return b"".join(chunks)


def _check_entry(entry: zipfile.ZipInfo, limit: int | None) -> None:
    name = entry.filename
    if entry.flag_bits & 0x1:
        raise BundleError(f"{name} is encrypted; a lab bundle is not")
    if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2 and lzma entries decompress a whole input block at once, unbounded: never opened.
        raise BundleError(
            f"{name} is compressed with method {entry.compress_type}; a lab bundle uses deflate"
        )
    limit = limit or LIMITS.get(name.rsplit("/", 1)[-1], MAX_BYTES)
    if entry.file_size > limit:
        raise BundleError(f"{name} unpacks to {entry.file_size:,} bytes, more than {limit:,}")


def _json(content: bytes, name: str, max_values: int = MAX_JSON_VALUES):
    try:
        return parse_json(content, max_values=max_values)
    except ValueError as error:
        raise BundleError(f"{name}: {error}") from None


def weights_limit(config: RunConfig, cache: RunCache, encoder: RunConfig | None, part: str) -> int:
    """The most a part's model.safetensors may unpack to: its model's weights, as its config builds
    it, and a header (a few hundred bytes a tensor). A 400 KB bundle declared 396 MB of weights for
    a small MLP and was unpacked before its shapes were compared."""
    try:
        state = model_skeleton(config, cache, encoder).state_dict()
    except (CorruptRunError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as error:
        raise BundleError(
            f"{part}: its model cannot be built ({' '.join(str(error).split())[:120]})"
        ) from None
    return sum(t.numel() * t.element_size() for t in state.values()) + 65_536 + 512 * len(state)


def _check_run(archive, entries: dict, files: dict[str, bytes], manifest: dict, part: str, cache, encoder):
    """A part's config, weights and record, each checked; the record and weights unpacked only
    within the sizes its config allows (`encoder`: the config of the bundle's encoder, if any)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    for name in FILES:
        if f"{part}/{name}" not in entries:
            raise BundleError(f"{part}: {name} is missing")
    try:
        config = RunConfig.from_dict(_json(files[f"{part}/config.json"], f"{part}/config.json"))
    except ValueError as error:  # a setting that does not validate: the message names it
        raise BundleError(f"{part}/config.json: {' '.join(str(error).split())}") from None
    path, values = f"{part}/record.json", record_values(config)
    files[path] = _unpack(archive, entries[path], record_limit(config), values)
    _check_digest(manifest, path, files[path])
    record = _json(files[path], path, values)
    try:
        if not isinstance(record, dict):
            raise TypeError("not a history and metrics")
        check_record(config, record.get("history"), record.get("metrics"))
    except TypeError as error:
        raise BundleError(f"{part}/record.json: {error}") from None
    done = record["metrics"]["epochs_done"]
    if len(files[path]) > record_limit(config, done):  # a 1,000-epoch config's allowance, 2 epochs run
        raise BundleError(f"{path}: {len(files[path]):,} bytes, more than {done} epochs' record holds")
    path = f"{part}/model.safetensors"
    files[path] = _unpack(archive, entries[path], weights_limit(config, cache, encoder, part))
    _check_digest(manifest, path, files[path])
    try:
        state = load(files[f"{part}/model.safetensors"])
    except (SafetensorError, ValueError, OSError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:80]
        raise BundleError(f"{part}: the weights do not read as safetensors ({reason})") from None
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
        indices = parse_json(files[name])
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
