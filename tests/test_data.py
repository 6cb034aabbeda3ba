import gzip
import struct

import numpy as np
import pytest
import torch

from fmnist_core import data
from fmnist_core.data import DataError, load_data, read_idx


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
    with pytest.raises(DataError, match="expected \\(60000, 28, 28\\)"):
        data.load_from_folder(tmp_path)


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
