"""How the lab reads and writes its own files: one atomic writer, one checksum, one bounded JSON
reader. Every file the cache, the reports and the exclusion lists keep goes through here."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch


class CorruptRunError(RuntimeError):
    """A cache entry exists but cannot be trusted (half-written, edited, damaged)."""


def default_root() -> Path:
    """The run store's folder: $FMNIST_CACHE, else models_cache/ here."""
    return Path(os.environ.get("FMNIST_CACHE") or "models_cache")


def checksum(data: bytes | str) -> str:
    """SHA-256 of bytes (text as UTF-8), hexadecimal: with `sha256` of a file, the lab's one
    checksum (run ids and exclusion lists are its first 16 digits)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def replaced_atomically(path: Path):
    """A temporary file beside `path` to write, moved onto `path` in one step (os.replace) when the
    block ends, removed if it fails: a reader never sees half a file, two writers never share one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        # mkstemp makes the file private (0600); the lab's files are as readable as a plain write
        # would leave them: the mode of the file it replaces, else rw-r--r--.
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o644
        os.chmod(temporary, mode)
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` in one step (replaced_atomically)."""
    with replaced_atomically(path) as temporary:
        if isinstance(text, bytes):
            temporary.write_bytes(text)
        else:
            temporary.write_text(text)


def remove_path(path: Path, strict: bool = False) -> None:
    """Remove a path whatever it is: a link (never followed, it may point into another entry) or a
    file is unlinked, a folder removed with its files. `strict`: failures raise."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=not strict)


MAX_JSON_DEPTH = 32  # the lab's own files nest 6 deep at most; json itself recurses past ~1,000
MAX_JSON_BYTES = 256_000_000  # a history with cartography: ~88 KB an epoch, 1,000 epochs at most
# Values in one file (arrays, objects and what they hold): a history has ~150 an epoch (its
# large parts are base64 text), a listing of 5,000 runs ~200,000. Each value costs up to ~100
# bytes of Python (~100 MB at the limit): 250 MB of `1,` would be 125 million floats, gigabytes.
MAX_JSON_VALUES = 1_000_000


SCAN_CHUNK = 1 << 20  # bytes a step: the scan's memory is a few times this, whatever the input's size


class JsonScan:
    """The shape of JSON text fed in pieces, found without parsing it (brackets and commas inside
    strings not counted): its deepest nesting and an upper bound on the values it holds (arrays,
    objects, and one more per comma). Vectorised over the positions of quotes, brackets and commas
    a piece at a time, so its memory is bounded by the piece, whatever the text's size. Also: its
    longest string (in bytes), and whether it holds a NUL byte, which UTF-8 JSON never does and
    UTF-16 or UTF-32 JSON always does (json.loads reads those too, and there a byte 0x22 need not
    be a quote: the count would be fooled)."""

    def __init__(self):
        self.deepest = self.depth = self.values = self.longest_text = self.seen = 0
        self.inside_string = False
        self.text_began = 0  # where the string the text so far ends inside began
        self.odd_backslashes = False  # the text so far ends in an odd run of backslashes
        self.nul = False

    def feed(self, piece: bytes) -> None:
        self.nul = self.nul or b"\x00" in piece
        start = self.seen
        self.seen += len(piece)
        if self.odd_backslashes:  # a run split between pieces: its parity is all that matters
            piece, start = b"\\" + piece, start - 1
        trailing = len(piece) - len(piece.rstrip(b"\\"))
        self.odd_backslashes = trailing % 2 == 1
        depth, deepest, values, quotes = _scan_piece(piece, self.inside_string, self.depth)
        self.depth, self.deepest = depth, max(self.deepest, deepest)
        self.values += values
        # Strings' lengths: quotes alternate opening and closing (closing first, inside a string).
        bounds = np.concatenate([[self.text_began - start], quotes] if self.inside_string else [quotes])
        ended = bounds.size // 2 * 2
        if ended:
            self.longest_text = max(self.longest_text, int(np.max(bounds[1:ended:2] - bounds[:ended:2])))
        if bounds.size % 2:  # ends inside a string: counted as far as it goes
            self.text_began = start + int(bounds[-1])
            self.longest_text = max(self.longest_text, self.seen - self.text_began)
        self.inside_string = bool(bounds.size % 2)

    def refusal(
        self, max_depth: int | None, max_values: int | None, max_text: int | None = None
    ) -> str | None:
        """Why text of this shape is refused (one line), or None (no limit where a limit is None)."""
        if self.nul:
            return "holds a NUL byte: not JSON in UTF-8"
        if max_text is not None and self.longest_text > max_text:
            return f"holds a text of more than {max_text:,} bytes, the most this file has"
        if max_depth is not None and self.deepest > max_depth:
            return f"nested more than {max_depth} deep, the most a lab file may be"
        if max_values is not None and self.values + 1 > max_values:
            return f"more than {max_values:,} values (arrays, objects, numbers, text), the most this file may hold"
        return None


def json_shape(data: bytes, max_depth: int | None = None, max_values: int | None = None) -> tuple[int, int]:
    """(deepest nesting, values at most) of JSON text (see JsonScan), stopping early past either limit."""
    scan = _scanned(data, max_depth, max_values)
    return scan.deepest, scan.values + 1


def _scanned(data: bytes, max_depth: int | None, max_values: int | None) -> JsonScan:
    scan = JsonScan()
    for start in range(0, len(data), SCAN_CHUNK):
        scan.feed(data[start : start + SCAN_CHUNK])
        if scan.refusal(max_depth, max_values):
            break
    return scan


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (see JsonScan)."""
    return json_shape(data)[0]


def _scan_piece(data: bytes, inside_string: bool, depth: int) -> tuple[int, int, int, np.ndarray]:
    """One piece: (depth at its end, deepest in it, arrays, objects and commas outside strings,
    unescaped quotes)."""
    codes = np.frombuffer(data, dtype=np.uint8)
    backslashes = np.flatnonzero(codes == ord("\\"))
    quotes = np.flatnonzero(codes == ord('"'))
    if backslashes.size and quotes.size:
        # A quote after an odd run of backslashes is escaped: runs are found by their last position.
        ends = np.flatnonzero(np.diff(backslashes, append=-2) != 1)
        run_end = backslashes[ends]
        run_length = np.diff(ends, prepend=-1)
        at = np.minimum(np.searchsorted(run_end, quotes - 1), run_end.size - 1)
        escaped = (run_end[at] == quotes - 1) & (run_length[at] % 2 == 1)
        quotes = quotes[~escaped]
    parity = 1 if inside_string else 0  # outside a string: an even number of quotes before it
    opening = np.flatnonzero((codes == ord("[")) | (codes == ord("{")))
    closing = np.flatnonzero((codes == ord("]")) | (codes == ord("}")))
    commas = np.flatnonzero(codes == ord(","))
    brackets = np.concatenate([opening, closing])
    steps = np.concatenate([np.ones(opening.size, np.int64), -np.ones(closing.size, np.int64)])
    outside = np.searchsorted(quotes, brackets) % 2 == parity
    order = np.argsort(brackets[outside], kind="stable")
    levels = depth + np.cumsum(steps[outside][order])
    values = int(np.count_nonzero(steps[outside] > 0))
    values += int(np.count_nonzero(np.searchsorted(quotes, commas) % 2 == parity))
    return int(levels[-1]) if levels.size else depth, int(levels.max(initial=depth)), values, quotes


def parse_json(
    data: bytes | str,
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = MAX_JSON_BYTES,
    max_values: int = MAX_JSON_VALUES,
):
    """JSON text parsed with bounded size, depth and number of values; ValueError (one line) where
    it is not JSON, too large, nested too deeply (json itself would die with RecursionError on `[` x
    100,000) or made of millions of small values (`[{},{},...]` or `[1,1,...]`: 32 to 64 bytes of
    Python for 2 or 3 bytes of text, gigabytes for a file the size limit lets in)."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) > max_bytes:
        raise ValueError(f"{len(data):,} bytes, more than the {max_bytes:,} a lab file may have")
    refusal = _scanned(data, max_depth, max_values).refusal(max_depth, max_values)
    if refusal:
        raise ValueError(refusal)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError as error:  # not JSON, not UTF-8, an integer of more than 4,300 digits
        raise ValueError(f"not JSON ({' '.join(str(error).split())[:80]})") from None


def read_regular(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes: OSError where `path` is anything else (a link, a FIFO, whose open
    would wait for a writer, a folder), ValueError where it holds more than `max_bytes`."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise OSError(f"{path.name} is not a regular file")
    # O_NONBLOCK: a FIFO swapped in after the lstat opens at once and is refused by the fstat below.
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(handle, "rb", closefd=True) as file:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"{path.name} is larger than the {max_bytes:,} bytes it may have")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:  # grown since the fstat
        raise ValueError(f"{path.name} is larger than the {max_bytes:,} bytes it may have")
    return data


def read_json(path: Path, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES):
    """A JSON file read with bounded size and depth (see parse_json); OSError where it cannot be read."""
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path.name} is larger than the {max_bytes:,} bytes a lab file may have")
    return parse_json(path.read_bytes(), max_depth, max_bytes)


def write_tensors_atomic(value, path: Path) -> None:
    """save_tensors in one step (replaced_atomically)."""
    with replaced_atomically(path) as temporary:
        save_tensors(value, temporary)


def save_tensors(value, path: Path) -> None:
    """torch.save, whose writer reports a full disk as a RuntimeError ("enforce fail at
    inline_container.cc"), as the OSError every caller of the cache handles."""
    try:
        torch.save(value, path)
    except RuntimeError as error:
        raise OSError(f"{path.name} could not be written ({' '.join(str(error).split())[:120]})") from None


# An array's shape and type as the lab expects them; None in a shape: any length.
ArraySpec = tuple[tuple[int | None, ...], np.dtype | type | str]
NPY_OVERHEAD = 4096  # bytes an .npz member takes beyond its data: its .npy header and zip headers


def arrays_size_bound(expected: dict[str, ArraySpec], longest: int = 0) -> int:
    """The most bytes an .npz of `expected` arrays can take (a None length counted as `longest`)."""
    return sum(
        NPY_OVERHEAD + math.prod(longest if n is None else n for n in shape) * np.dtype(dtype).itemsize
        for shape, dtype in expected.values()
    )


def write_arrays_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays as an .npz (np.savez: no pickle), written in one step (replaced_atomically)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_text_atomic(path, buffer.getvalue())


def read_arrays(data: bytes, expected: dict[str, ArraySpec]) -> dict[str, np.ndarray]:
    """The arrays of an .npz held in `data`, each member's .npy header checked against `expected`
    before its data is read (a header may claim 10^12 strings): ValueError where a member is
    missing, extra, compressed or not of the shape and type expected. Nothing is unpickled."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if set(members) != set(expected):
                raise ValueError(f"members {sorted(members)[:8]}, not {sorted(expected)[:8]}")
            return {name: _npy_member(archive, members[name], *expected[name]) for name in expected}
    except (zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError, OverflowError) as error:
        raise ValueError(f"not an .npz ({' '.join(str(error).split())[:80]})") from None


def _npy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shape, dtype) -> np.ndarray:
    """One member read as np.load would, once its header says what `shape` and `dtype` ask for."""
    if info.compress_type != zipfile.ZIP_STORED:  # stored: its size on disk is its size in memory
        raise ValueError(f"{info.filename} is compressed")
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{info.filename}: .npy version {version}")
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        found_shape, fortran_order, found_dtype = read_header(handle)
        fits = len(found_shape) == len(shape) and all(
            n is None or n == m for n, m in zip(shape, found_shape, strict=True)
        )
        if fortran_order or found_dtype != np.dtype(dtype) or not fits:
            raise ValueError(
                f"{info.filename} holds {found_dtype} {found_shape}, not {np.dtype(dtype)} {shape}"
            )
        size = math.prod(found_shape) * found_dtype.itemsize
        if info.file_size != handle.tell() + size:
            raise ValueError(f"{info.filename} is not as long as its header says")
        buffer = bytearray(size)
        if handle.readinto(buffer) != size:
            raise ValueError(f"{info.filename} is cut short")
    return np.frombuffer(buffer, dtype=found_dtype).reshape(found_shape)
