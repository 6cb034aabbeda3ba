import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from fmnist_core.data import fashion as data
from fmnist_core.data.fashion import DataError, load_data, read_idx


def write_idx(path, array, magic_type=0x08, compress=False, cut=0):
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - cut] if cut else raw
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(raw)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("a.gz" if compress else "a"), array, compress=compress)
    np.testing.assert_array_equal(read_idx(path), array)


def test_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)


def test_idx_wrong_type(tmp_path):
    path = write_idx(tmp_path / "f", np.zeros(4, dtype=np.uint8), magic_type=0x0D)
    with pytest.raises(DataError, match="not unsigned byte"):
        read_idx(path)


def test_idx_truncated_body_names_the_file(tmp_path):
    path = write_idx(tmp_path / "short", np.zeros((3, 5), dtype=np.uint8), cut=4)
    with pytest.raises(DataError, match="short.*header promises 15"):
        read_idx(path)


def test_idx_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((100, 100), dtype=np.uint8), compress=True)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="x.gz"):
        read_idx(path)


def test_env_folder_is_searched_first_and_fake_data_is_refused(tmp_path, monkeypatch):
    labels = np.arange(100, dtype=np.uint8) % 10
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((100, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((100, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    monkeypatch.setenv("FMNIST_DATA", str(tmp_path))
    assert data.candidate_folders()[0] == tmp_path
    assert data.find_data_folder() == tmp_path
    with pytest.raises(DataError, match="train-images-idx3-ubyte: not Fashion-MNIST's original"):
        data.load_from_folder(tmp_path)
    with pytest.raises(DataError, match="expected \\(60000, 28, 28\\)"):
        data.load_from_folder(tmp_path, allow_other=True)


def test_real_data_is_loaded_once_as_float_tensors():
    fmnist = load_data()
    assert fmnist.train_images.shape == (60_000, 1, 28, 28)
    assert fmnist.test_images.shape == (10_000, 1, 28, 28)
    assert fmnist.train_images.dtype == torch.float32
    assert fmnist.train_images.min().item() == 0.0 and fmnist.train_images.max().item() == 1.0
    assert torch.bincount(fmnist.train_labels).tolist() == [6000] * 10
    assert torch.bincount(fmnist.test_labels).tolist() == [1000] * 10
    assert load_data() is fmnist
    assert fmnist.class_names[6] == "Shirt"
    # The original files: their first labels and mean pixel are well-known figures.
    assert fmnist.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert fmnist.test_labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert fmnist.train_images.mean().item() == pytest.approx(0.2860, abs=1e-4)


def copy_real_files(target, labels_transform=None):
    """The four real .gz files in `target`, the training labels passed through `labels_transform`."""
    source = data.find_data_folder()
    target.mkdir(exist_ok=True)
    for stem in data.FILES.values():
        raw = data.read_raw(data._file_in(source, stem))
        if stem == "train-labels-idx1-ubyte" and labels_transform is not None:
            body = np.frombuffer(raw, dtype=np.uint8, offset=8)
            raw = raw[:8] + labels_transform(body).astype(np.uint8).tobytes()
        (target / f"{stem}.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    return target


def test_relabelled_files_are_refused_by_name_and_an_opt_in_names_them_apart(tmp_path, monkeypatch):
    shifted = copy_real_files(
        tmp_path / "shifted", lambda labels: (labels + 1) % 10
    )  # counts still 6000 each
    with pytest.raises(DataError, match="shifted/train-labels-idx1-ubyte.gz: not Fashion-MNIST's original"):
        data.load_from_folder(shifted)
    other = data.load_from_folder(shifted, allow_other=True)
    assert other.fingerprint.startswith("other-") and other.fingerprint != data.REAL_DATA
    assert load_data().fingerprint == data.REAL_DATA
    same = data.load_from_folder(copy_real_files(tmp_path / "recompressed"))  # other gzip bytes, same data
    assert same.fingerprint == data.REAL_DATA


@pytest.mark.parametrize("make", ["missing", "empty", "partial"])
def test_an_unusable_fmnist_data_folder_is_an_error_naming_it(tmp_path, monkeypatch, make):
    folder = tmp_path / "data"
    if make != "missing":
        folder.mkdir()
    if make == "partial":
        write_idx(folder / "train-labels-idx1-ubyte", np.zeros(10))
    monkeypatch.setenv("FMNIST_DATA", str(folder))
    with pytest.raises(DataError, match="FMNIST_DATA"):
        data.find_data_folder()


def test_a_gzip_bomb_is_refused_at_the_size_limit(tmp_path):
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as handle:
        for _ in range(80):
            handle.write(bytes(1 << 20))  # 80 MB of zeros in about 80 KB
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(DataError, match="holds over"):
        read_idx(bomb)


def test_random_corruptions_of_the_real_files_are_all_data_errors_naming_the_file(tmp_path):
    source = data.find_data_folder()
    rng = np.random.default_rng(0)
    originals = {
        stem: data._file_in(source, stem).read_bytes()
        for stem in ("t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte")
    }
    kinds = {"truncate": 0, "flip": 0, "garbage": 0}
    for trial in range(150):
        stem = list(originals)[trial % 2]
        raw = bytearray(originals[stem])
        kind = list(kinds)[trial % 3]
        if kind == "truncate":
            raw = raw[: int(rng.integers(0, len(raw)))]
        elif kind == "flip":
            for at in rng.integers(0, len(raw), size=int(rng.integers(1, 8))):
                raw[at] ^= 1 << int(rng.integers(0, 8))
        else:
            at = int(rng.integers(0, len(raw)))
            raw[at : at + 64] = rng.integers(0, 256, size=64, dtype=np.uint8).tobytes()
        path = tmp_path / f"{trial}-{stem}.gz"
        path.write_bytes(bytes(raw))
        try:
            parsed = read_idx(path)
        except DataError as error:
            assert path.name in str(error)
            kinds[kind] += 1
            continue
        # a flip inside gzip's stored data that still parses: the digest check must refuse it
        assert hashlib.sha256(gzip.decompress(bytes(raw))).hexdigest() != data.ORIGINAL[stem][0]
        assert parsed.dtype == np.uint8
    assert all(count > 10 for count in kinds.values()), kinds


def test_a_run_on_other_data_has_its_own_run_id_and_never_replaces_the_real_ones(tmp_path, monkeypatch):
    from fmnist_core.runs.trained import get_or_train
    from fmnist_core.training.config import RunConfig

    config = RunConfig.for_model("mlp", epochs=1, train_subset=300, test_subset=300)
    real = get_or_train(config)
    assert real.run_id == config.run_id and real.config.data == data.REAL_DATA
    monkeypatch.setenv(
        "FMNIST_DATA", str(copy_real_files(tmp_path / "shifted", lambda labels: (labels + 1) % 10))
    )
    monkeypatch.setenv("FMNIST_OTHER_DATA", "1")
    other = get_or_train(config)
    assert other.run_id != real.run_id and other.config.data.startswith("other-") and not other.cached
    assert other.metrics["test_accuracy"] != real.metrics["test_accuracy"]
    monkeypatch.delenv("FMNIST_DATA")
    monkeypatch.delenv("FMNIST_OTHER_DATA")
    again = get_or_train(config)  # the real run is still there, untouched
    assert again.cached and again.metrics["test_accuracy"] == real.metrics["test_accuracy"]
