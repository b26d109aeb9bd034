"""Read TensorFlow checkpoints without TensorFlow, and load them into a network.

A TensorFlow checkpoint ``my_model.ckpt`` is two kinds of file: ``my_model.ckpt.index``, a
LevelDB-format table mapping each variable name to a ``BundleEntryProto`` (dtype, shape,
which data shard, offset, size, checksum), and ``my_model.ckpt.data-00000-of-00001``, the
raw tensor bytes. Both are parsed here by hand: no TensorFlow, no protobuf runtime.

    >>> from graftnet.network import Network
    >>> ckpt = read_tf_checkpoint("tests/fixtures/tf/tf1/my_model_final.ckpt")
    >>> ckpt["hidden1/kernel"].shape                      # TF's (in, out) layout
    (784, 300)
    >>> net = Network.mlp(784, [300, 50, 50, 50, 50], 10)  # hidden1..hidden5, outputs
    >>> report = load_tf_checkpoint(net, "tests/fixtures/tf/tf1/my_model_final.ckpt")
    >>> report.ignored
    ['global_step']

Names: TF1 variables (``hidden1/kernel``, ``dnn/hidden1/bias``, ``bn1/moving_mean``) map
by name after a scope shared by all of them is stripped. TF2 object-based checkpoints
(``tf.train.Checkpoint(model=...)``, Keras 2 or 3) map by position by default: the k-th
layer with weights in the checkpoint goes into the k-th layer with weights of the network;
``match="name"`` uses the variables' Keras names (``sequential/conv1/kernel``) instead.
Kernels are transposed on the way in: Dense ``(in, out) -> (out, in)``, Conv2D
``(H, W, I, O) -> (O, I, H, W)``. Optimizer state, ``global_step`` and ``save_counter``
are ignored and listed in the report.

What the checkpoint cannot tell, the network must match: Keras' BatchNorm epsilon is 1e-3
(PyTorch's is 1e-5), and a Dense after a Flatten of NHWC feature maps expects
``Flatten(channels_last=True)``.

Checksums are CRC32C, computed with ``google-crc32c`` or ``crc32c`` when one is installed,
else with a table-driven pure-Python CRC (about 0.14 s per MiB); ``CRC32C_BACKEND`` says which.
"""

from __future__ import annotations

import ast
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch.nn as nn

from graftnet.errors import ConfigError, ImportFormatError, format_names
from graftnet.io.mapping import MappingReport, apply_rename, kernel_to_torch, load_tensors

__all__ = [
    "TFCheckpoint",
    "read_tf_checkpoint",
    "tf_to_graftnet_names",
    "load_tf_checkpoint",
    "CRC32C_BACKEND",
]

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


# ------------------------------------------------------------------------------ CRC32C
def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def _crc32c_python(data: bytes | bytearray | memoryview) -> int:
    """CRC32C of ``data``: ``_crc32c_python(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_backend() -> tuple[Callable[[bytes | bytearray], int], str]:
    try:
        import google_crc32c  # type: ignore[import-not-found]

        return (lambda data: int(google_crc32c.value(bytes(data)))), "google-crc32c"
    except ImportError:
        pass
    try:
        import crc32c  # type: ignore[import-not-found]

        return (lambda data: int(crc32c.crc32c(data))), "crc32c"
    except ImportError:
        return _crc32c_python, "pure-python"


_crc32c, CRC32C_BACKEND = _crc32c_backend()


def _masked_crc32c(data: bytes | bytearray) -> int:
    """TF/LevelDB store CRCs rotated and offset, so a CRC of data holding CRCs stays useful."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------------------ bytes
class _Corrupt(Exception):
    """A malformed structure; turned into an ImportFormatError that names the file."""


def _varint(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    end = len(buf) if end is None else end
    value = shift = 0
    while True:
        if pos >= end:
            raise _Corrupt("a varint runs past the end of its data")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt("a varint is longer than 10 bytes")


def _fixed(buf: bytes, pos: int, size: int) -> int:
    if pos < 0 or pos + size > len(buf):
        raise _Corrupt(f"a {size}-byte integer runs past the end of its data")
    return int.from_bytes(buf[pos:pos + size], "little")


# ------------------------------------------------------------------------------ protobuf
ProtoValue = int | bytes


def _proto_fields(buf: bytes, what: str) -> list[tuple[int, ProtoValue]]:
    """The (field number, value) pairs of a serialized protobuf message, in order."""
    fields: list[tuple[int, ProtoValue]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Corrupt(f"{what}: protobuf field number 0")
        value: ProtoValue
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = _fixed(buf, pos, size), pos + size
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Corrupt(f"{what}: a {length}-byte protobuf field runs past the end of the message")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise _Corrupt(f"{what}: unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


def _as_int(value: ProtoValue, what: str, signed: bool = False) -> int:
    if not isinstance(value, int):
        raise _Corrupt(f"{what}: expected a number, found a length-delimited field")
    return value - (1 << 64) if signed and value >= 1 << 63 else value


def _as_bytes(value: ProtoValue, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise _Corrupt(f"{what}: expected a length-delimited field, found a number")
    return value


# ------------------------------------------------------------------------------ SSTable
_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic number
_BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes)


def _block_handle(buf: bytes, pos: int, end: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos, end)
    size, pos = _varint(buf, pos, end)
    return (offset, size), pos


def _read_block(data: bytes, handle: tuple[int, int], what: str) -> bytes:
    """A block's contents after checking its checksum and that it is uncompressed."""
    offset, size = handle
    end = offset + size
    if end + _BLOCK_TRAILER > len(data) - _FOOTER_SIZE:
        raise _Corrupt(f"{what} (bytes {offset}..{end}) runs past the end of the file "
                       f"({len(data)} bytes): truncated or corrupt")
    stored = _fixed(data, end + 1, 4)
    actual = _masked_crc32c(data[offset:end + 1])  # the checksum covers the type byte too
    if stored != actual:
        raise _Corrupt(f"{what} (bytes {offset}..{end}): checksum mismatch "
                       f"(stored 0x{stored:08x}, computed 0x{actual:08x})")
    if data[end] != 0:
        kind = {1: "snappy"}.get(data[end], "unknown")
        raise _Corrupt(f"{what} is compressed ({kind}, type {data[end]}); graftnet reads the "
                       f"uncompressed blocks TensorFlow writes")
    return data[offset:end]


def _block_entries(block: bytes, what: str) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of a block; keys share prefixes with the key before them."""
    if len(block) < 4:
        raise _Corrupt(f"{what} is {len(block)} bytes, too short for its restart count")
    n_restarts = _fixed(block, len(block) - 4, 4)
    limit = len(block) - 4 - 4 * n_restarts  # entries end where the restart array begins
    if n_restarts == 0 or limit < 0:
        raise _Corrupt(f"{what}: bad restart count {n_restarts} for a {len(block)}-byte block")
    entries, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = _varint(block, pos, limit)
        unshared, pos = _varint(block, pos, limit)
        value_size, pos = _varint(block, pos, limit)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise _Corrupt(f"{what}: entry at byte {pos} does not fit in the block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_size]))
        pos += value_size
    return entries


def _table_entries(data: bytes) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table, in key order."""
    if len(data) < _FOOTER_SIZE:
        raise _Corrupt(f"the file is {len(data)} bytes, shorter than a table footer (48 bytes): truncated")
    footer_at = len(data) - _FOOTER_SIZE
    magic = _fixed(data, len(data) - 8, 8)
    if magic != _TABLE_MAGIC:
        raise _Corrupt(f"bad magic number 0x{magic:016x} (expected 0x{_TABLE_MAGIC:016x}): "
                       f"not a TensorFlow checkpoint index, or truncated")
    _, pos = _block_handle(data, footer_at, footer_at + 40)  # the meta-index block: unused
    index_handle, _ = _block_handle(data, pos, footer_at + 40)
    entries = []
    for _, value in _block_entries(_read_block(data, index_handle, "index block"), "index block"):
        handle, _ = _block_handle(value, 0, len(value))
        what = f"data block at offset {handle[0]}"
        entries += _block_entries(_read_block(data, handle, what), what)
    return entries


# ------------------------------------------------------------------------------ bundle
# DataType enum codes (tensorflow/core/framework/types.proto) -> (name, little-endian numpy dtype)
_DTYPES = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"),
    5: ("int16", "<i2"), 6: ("int8", "i1"), 9: ("int64", "<i8"), 10: ("bool", "?"),
    14: ("bfloat16", "<u2"), 17: ("uint16", "<u2"), 19: ("float16", "<f2"),
    22: ("uint32", "<u4"), 23: ("uint64", "<u8"),
}
_OTHER_DTYPES = {7: "string", 8: "complex64", 11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16",
                 16: "quint16", 18: "complex128", 20: "resource", 21: "variant"}
_STRING = 7


@dataclass(frozen=True)
class _Entry:
    """One BundleEntryProto: where a tensor's bytes are and what they hold."""

    name: str
    dtype: int = 0
    shape: tuple[int, ...] = ()
    shard: int = 0
    offset: int = 0
    size: int = 0
    crc: int | None = None
    n_slices: int = 0

    @property
    def count(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def _parse_shape(buf: bytes, what: str) -> tuple[int, ...]:
    dims = []
    for number, value in _proto_fields(buf, what):
        if number == 2:  # repeated Dim { int64 size = 1; string name = 2; }
            size = 0
            for sub, sub_value in _proto_fields(_as_bytes(value, what), what):
                if sub == 1:
                    size = _as_int(sub_value, what, signed=True)
            if size < 0:
                raise _Corrupt(f"{what}: dimension of unknown size ({size}) in a saved tensor")
            dims.append(size)
        elif number == 3 and _as_int(value, what):
            raise _Corrupt(f"{what}: a saved tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> _Entry:
    what = f"entry {name!r}"
    values: dict[str, object] = {"n_slices": 0}
    for number, value in _proto_fields(buf, what):
        if number == 1:
            values["dtype"] = _as_int(value, what)
        elif number == 2:
            values["shape"] = _parse_shape(_as_bytes(value, what), what)
        elif number in (3, 4, 5):
            number_value = _as_int(value, what, signed=True)
            if number_value < 0:
                raise _Corrupt(f"{what}: negative {('shard', 'offset', 'size')[number - 3]} {number_value}")
            values[("shard", "offset", "size")[number - 3]] = number_value
        elif number == 6:
            values["crc"] = _as_int(value, what)
        elif number == 7:
            values["n_slices"] = int(values["n_slices"]) + 1  # type: ignore[call-overload]
    return _Entry(name, **values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Header:
    num_shards: int = 1
    big_endian: bool = False


def _parse_header(buf: bytes) -> _Header:
    num_shards, big_endian = 1, False
    for number, value in _proto_fields(buf, "bundle header"):
        if number == 1:
            num_shards = _as_int(value, "bundle header")
        elif number == 2:
            big_endian = _as_int(value, "bundle header") == 1
        elif number == 3:
            for sub, sub_value in _proto_fields(_as_bytes(value, "bundle header"), "bundle version"):
                if sub == 2 and _as_int(sub_value, "bundle version") > 1:  # min_consumer
                    raise _Corrupt(f"written by a newer TensorFlow: bundle format needs a reader of "
                                   f"version {_as_int(sub_value, 'bundle version')} (graftnet reads version 1)")
    if num_shards < 1:
        raise _Corrupt(f"bundle header says {num_shards} data shards")
    return _Header(num_shards, big_endian)


def _parse_index(data: bytes) -> tuple[_Header, list[_Entry], list[str]]:
    """The bundle header, the tensor entries, and the names of undecodable (slice) entries."""
    header: _Header | None = None
    entries: list[_Entry] = []
    slice_keys: list[str] = []
    seen: set[bytes] = set()
    for key, value in _table_entries(data):
        if key in seen:
            raise _Corrupt(f"key {key!r} appears twice")
        seen.add(key)
        if key == b"":
            header = _parse_header(value)
            continue
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            slice_keys.append(repr(key))  # slices of partitioned variables have binary keys
            continue
        if name.startswith("\x00"):
            slice_keys.append(repr(name))
            continue
        entries.append(_parse_entry(name, value))
    if header is None:
        raise _Corrupt("no bundle header (the entry with the empty key): not a TensorFlow checkpoint index")
    for entry in entries:
        if entry.shard >= header.num_shards:
            raise _Corrupt(f"entry {entry.name!r} is in shard {entry.shard}, but the header says "
                           f"there are {header.num_shards} shards")
    return header, entries, slice_keys


# ------------------------------------------------------------------------------ reading
class TFCheckpoint(dict[str, np.ndarray]):
    """Tensors of a TensorFlow checkpoint by variable name (a plain dict), plus:

    Attributes:
        prefix: the checkpoint prefix (``.../my_model_final.ckpt``).
        skipped: name -> why it was not read (string, resource, partitioned variables, ...).
        object_graph: the serialized ``TrackableObjectGraph`` of a TF2 object-based
            checkpoint (the ``_CHECKPOINTABLE_OBJECT_GRAPH`` entry), or None for TF1.
        dtypes: name -> TensorFlow dtype name (``bfloat16`` tensors are read as float32).
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], *, prefix: Path, skipped: dict[str, str],
                 object_graph: bytes | None, dtypes: dict[str, str]) -> None:
        super().__init__(tensors)
        self.prefix = prefix
        self.skipped = skipped
        self.object_graph = object_graph
        self.dtypes = dtypes

    @property
    def has_object_graph(self) -> bool:
        """True for TF2 object-based checkpoints (``tf.train.Checkpoint``, Keras)."""
        return self.object_graph is not None


def read_tf_checkpoint(path: str | os.PathLike[str]) -> TFCheckpoint:
    """Read every numeric tensor of a TensorFlow checkpoint into NumPy arrays.

    Args:
        path: the checkpoint prefix (``my_model_final.ckpt``), its ``.index`` or a
            ``.data-*`` file, or a directory holding a ``checkpoint`` state file (its
            ``model_checkpoint_path`` is read) or a single ``.index`` file.

    float16/32/64, int8/16/32/64, uint8/16/32/64 and bool keep their dtype; bfloat16 is
    returned as float32 (exactly). String, resource and other tensors are skipped and
    listed in ``.skipped``. Every tensor's CRC32C is checked.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ImportFormatError: a corrupt or truncated index or data file, a missing data
            shard or a checksum mismatch; the message names the file.

        >>> read_tf_checkpoint("tests/fixtures/tf/tf1")["hidden1/bias"].dtype
        dtype('float32')
    """
    prefix = _resolve_prefix(Path(path))
    index_path = Path(f"{prefix}.index")
    try:
        header, entries, slice_keys = _parse_index(index_path.read_bytes())
    except _Corrupt as err:
        raise ImportFormatError(f"TensorFlow checkpoint index {index_path}: {err}") from None
    skipped = {key: "slice of a partitioned variable" for key in slice_keys}
    wanted = []
    for entry in entries:
        reason = _skip_reason(entry)
        if reason:
            skipped[entry.name] = reason
        else:
            wanted.append(entry)
    raw = _read_shards(prefix, header, wanted)
    tensors = {e.name: _decode(raw[e.name], e, header.big_endian) for e in wanted if e.dtype != _STRING}
    object_graph = _object_graph(raw, wanted, prefix, header.num_shards)
    dtypes = {e.name: _DTYPES.get(e.dtype, (_OTHER_DTYPES.get(e.dtype, f"dtype {e.dtype}"),))[0] for e in entries}
    return TFCheckpoint(tensors, prefix=prefix, skipped=skipped, object_graph=object_graph, dtypes=dtypes)


def _skip_reason(entry: _Entry) -> str | None:
    if entry.n_slices:
        return f"partitioned variable ({entry.n_slices} slices): not supported"
    if entry.name == OBJECT_GRAPH_KEY:
        return None if entry.dtype == _STRING and entry.shape == () else "malformed object graph entry"
    if entry.dtype in _DTYPES:
        return None
    name = _OTHER_DTYPES.get(entry.dtype, f"unknown dtype code {entry.dtype}")
    return f"{name} tensor: not a weight graftnet can load"


class NoCheckpointError(ImportFormatError, FileNotFoundError):
    """No TensorFlow checkpoint where one was named: a graftnet error (one line on the command
    line) that is also the ``FileNotFoundError`` this module documents."""


def _resolve_prefix(path: Path) -> Path:
    """The checkpoint prefix named by a prefix, an .index/.data/.meta file or a directory."""
    if path.is_dir():
        return _prefix_in_directory(path)
    name = re.sub(r"\.(index|meta|data-\d{5}-of-\d{5})$", "", path.name)
    prefix = path.with_name(name)
    if name == path.name and path.is_file() and not Path(f"{prefix}.index").is_file():
        raise ImportFormatError(f"{path} is a single file, not a TensorFlow checkpoint: a checkpoint is a "
                                f"'<prefix>.index' file with '<prefix>.data-*' shards beside it. A one-file "
                                f"'.ckpt' is the V1 format of TensorFlow < 1.0, which graftnet does not read")
    if not Path(f"{prefix}.index").is_file():
        found = sorted(p.name for p in prefix.parent.glob("*.index")) if prefix.parent.is_dir() else []
        raise NoCheckpointError(f"no TensorFlow checkpoint at {path}: {prefix}.index does not exist; "
                                f"index files in {prefix.parent}: {format_names(found)}")
    return prefix


def _prefix_in_directory(directory: Path) -> Path:
    state = directory / "checkpoint"
    if state.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', state.read_text(errors="replace"), re.M)
        if match is None:
            raise ImportFormatError(f"{state}: no model_checkpoint_path line in the checkpoint state file")
        recorded = Path(_unescape(match.group(1)))
        prefix = recorded if recorded.is_absolute() else directory / recorded
        if not Path(f"{prefix}.index").is_file() and Path(f"{directory / recorded.name}.index").is_file():
            prefix = directory / recorded.name  # the directory was moved since it was written
        return _resolve_prefix(prefix)
    indexes = sorted(directory.glob("*.index"))
    if len(indexes) == 1:
        return _resolve_prefix(indexes[0])
    raise NoCheckpointError(f"no TensorFlow checkpoint in {directory}: no 'checkpoint' state file and "
                            f"{len(indexes)} .index files ({format_names(p.name for p in indexes)}); "
                            f"pass the checkpoint prefix")


def _unescape(text: str) -> str:
    """Undo the C escapes of a text-format protobuf string."""
    try:
        return ast.literal_eval('b"' + text + '"').decode("utf-8")
    except (ValueError, SyntaxError, UnicodeDecodeError):
        return text


def _shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def _read_shards(prefix: Path, header: _Header, entries: Sequence[_Entry]) -> dict[str, bytearray]:
    """The checked bytes of each entry, read from its data shard."""
    raw: dict[str, bytearray] = {}
    for shard in sorted({e.shard for e in entries}):
        path = _shard_path(prefix, shard, header.num_shards)
        if not path.is_file():
            present = sorted(p.name for p in prefix.parent.glob(f"{prefix.name}.data-*"))
            raise ImportFormatError(f"TensorFlow checkpoint {prefix}: data shard {path.name} is missing "
                                    f"(the index lists {header.num_shards} shard(s); found: {format_names(present)})")
        on_shard = sorted((e for e in entries if e.shard == shard), key=lambda e: e.offset)
        with path.open("rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            for entry in on_shard:
                raw[entry.name] = _read_entry(file, file_size, entry, path)
    return raw


def _read_entry(file: io.BufferedReader, file_size: int, entry: _Entry, path: Path) -> bytearray:
    end = entry.offset + entry.size
    if end > file_size:
        raise ImportFormatError(f"TensorFlow checkpoint data {path}: truncated: {entry.name!r} needs bytes "
                                f"{entry.offset}..{end}, the file has {file_size} bytes")
    file.seek(entry.offset)
    buf = bytearray(entry.size)
    if file.readinto(buf) != entry.size:
        raise ImportFormatError(f"TensorFlow checkpoint data {path}: short read for {entry.name!r}")
    if entry.crc is not None:
        # String tensors are checksummed over a different layout (see _scalar_string).
        actual = _masked_crc32c(_string_checksum_input(buf, entry, path) if entry.dtype == _STRING else buf)
        if actual != entry.crc:
            raise ImportFormatError(f"TensorFlow checkpoint data {path}: checksum mismatch for {entry.name!r} "
                                    f"(bytes {entry.offset}..{end}: stored 0x{entry.crc:08x}, computed "
                                    f"0x{actual:08x}); the file is corrupt")
    return buf


def _decode(buf: bytearray, entry: _Entry, big_endian: bool) -> np.ndarray:
    """The tensor's bytes as an array of its shape (a writable view of ``buf``)."""
    name, code = _DTYPES[entry.dtype]
    dtype = np.dtype(code)
    if big_endian:
        dtype = dtype.newbyteorder(">")
    if entry.count * dtype.itemsize != entry.size:
        raise ImportFormatError(f"TensorFlow checkpoint: tensor {entry.name!r} has {entry.size} bytes, but a "
                                f"{name} tensor of shape {entry.shape} needs {entry.count * dtype.itemsize}")
    array = np.frombuffer(buf, dtype=dtype).reshape(entry.shape)
    if big_endian:
        array = array.astype(dtype.newbyteorder("="))
    if name == "bfloat16":  # the top half of a float32: shift into place
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _split_scalar_string(buf: bytearray, entry: _Entry, path: Path) -> tuple[int, int]:
    """(length, start of the bytes) of a scalar string tensor laid out as
    ``[varint64 length][4-byte masked crc32c of the length][bytes]``."""
    if entry.shape != ():
        raise ImportFormatError(f"TensorFlow checkpoint data {path}: {entry.name!r} should be a scalar string, "
                                f"has shape {entry.shape}")
    try:
        length, pos = _varint(bytes(buf[:10]), 0)
    except _Corrupt as err:
        raise ImportFormatError(f"TensorFlow checkpoint data {path}: {entry.name!r}: {err}") from None
    if pos + 4 + length != len(buf):
        raise ImportFormatError(f"TensorFlow checkpoint data {path}: {entry.name!r} has {len(buf)} bytes, "
                                f"its length field says {pos + 4 + length}")
    return length, pos + 4


def _object_graph(raw: Mapping[str, bytearray], entries: Sequence[_Entry], prefix: Path,
                  num_shards: int) -> bytes | None:
    """The serialized TrackableObjectGraph of a TF2 checkpoint, or None."""
    entry = next((e for e in entries if e.name == OBJECT_GRAPH_KEY), None)
    if entry is None:
        return None
    buf = raw[OBJECT_GRAPH_KEY]
    _, start = _split_scalar_string(buf, entry, _shard_path(prefix, entry.shard, num_shards))
    return bytes(buf[start:])


def _string_checksum_input(buf: bytearray, entry: _Entry, path: Path) -> bytes:
    """What TF checksums for a string tensor: each length as a uint32 (uint64 past 4 GiB),
    the 4-byte length checksum, then the string bytes."""
    length, start = _split_scalar_string(buf, entry, path)
    return length.to_bytes(4 if length < 1 << 32 else 8, "little") + bytes(buf[start - 4:])


# ------------------------------------------------------------------------------ object graph
@dataclass
class _Node:
    children: list[tuple[int, str]] = field(default_factory=list)
    variables: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint key, full name)


def _parse_object_graph(buf: bytes) -> list[_Node]:
    """The nodes of a TrackableObjectGraph: children (node id, local name) and variables."""
    what = "object graph node"
    nodes = []
    for number, value in _proto_fields(buf, "object graph"):
        if number != 1:  # repeated TrackableObject nodes = 1
            continue
        node = _Node()
        for sub, sub_value in _proto_fields(_as_bytes(value, what), what):
            if sub not in (1, 2):
                continue
            fields = dict(_proto_fields(_as_bytes(sub_value, what), what))
            if sub == 1:  # ObjectReference { int32 node_id = 1; string local_name = 2; }
                node.children.append((_as_int(fields.get(1, 0), what), _text(fields.get(2, b""), what)))
            elif _text(fields.get(1, b""), what) == "VARIABLE_VALUE":
                # SerializedTensor { string name = 1; string full_name = 2; string checkpoint_key = 3; }
                node.variables.append((_text(fields.get(3, b""), what), _text(fields.get(2, b""), what)))
        nodes.append(node)
    return nodes


def _text(value: ProtoValue, what: str) -> str:
    return _as_bytes(value, what).decode("utf-8", "replace")


# Children of a checkpoint's objects that hold training state, not the model.
_BOOKKEEPING_CHILDREN = {"optimizer", "save_counter", "global_step", "step"}


@dataclass(frozen=True)
class _ModelVariable:
    key: str  # checkpoint key
    full_name: str  # the variable's TF name, e.g. "sequential/conv1/kernel"
    layer: int  # position of the layer holding it, in first-reached order


def _model_variables(nodes: list[_Node]) -> list[_ModelVariable]:
    """Variables reachable from the root without going through the optimizer, in depth-first
    order of the object graph, each with the position of the layer (object) holding it."""
    found: list[_ModelVariable] = []
    layers: dict[int, int] = {}
    visited: set[int] = set()
    stack: list[tuple[int, int]] = [(0, -1)]  # (node, parent)
    while stack:
        node_id, parent = stack.pop()
        if node_id in visited or not 0 <= node_id < len(nodes):
            continue
        visited.add(node_id)
        node = nodes[node_id]
        for key, full_name in node.variables:
            layer = layers.setdefault(parent, len(layers))
            found.append(_ModelVariable(key, full_name, layer))
        stack += [(child, node_id) for child, name in reversed(node.children) if name not in _BOOKKEEPING_CHILDREN]
    return found


# ------------------------------------------------------------------------------ names
# TF variable name (last part) -> PyTorch parameter name; kernels are transposed.
_PARAMETERS = {
    "kernel": "weight", "weights": "weight", "bias": "bias", "biases": "bias", "gamma": "weight",
    "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var", "embeddings": "weight",
}
_KERNELS = {"kernel", "weights"}
_BOOKKEEPING_NAMES = {"global_step", "beta1_power", "beta2_power", "save_counter", OBJECT_GRAPH_KEY}
_ATTRIBUTE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_POSITIONAL = re.compile(r"(?:.*/)?layer_with_weights-(\d+)/([^/]+)(?:/\.ATTRIBUTES/VARIABLE_VALUE)?")


def _is_bookkeeping(name: str, names: set[str]) -> bool:
    """Optimizer slots and counters: not model weights."""
    bare = name.removesuffix(_ATTRIBUTE_SUFFIX)
    return (bare in _BOOKKEEPING_NAMES or bare.startswith("optimizer/") or "/.OPTIMIZER_SLOT/" in name
            or bare.rsplit("/", 1)[-1] in ("beta1_power", "beta2_power")  # TF1 Adam's, under its name scope
            or "/" in bare and bare.rsplit("/", 1)[0] in names)  # TF1 slots: hidden1/kernel/Adam


def tf_to_graftnet_names(names: Iterable[str], layers: Sequence[str] | None = None) -> dict[str, str]:
    """Map TensorFlow variable names to graftnet state-dict keys; bookkeeping names are left out.

    Path names (TF1, Keras variable names) map by name, after the scope that all of them
    share is stripped: ``dnn/hidden1/kernel -> hidden1.weight``, ``bn1/moving_variance ->
    bn1.running_var``. Object-based names ``[model/]layer_with_weights-K/<attr>/...`` map to
    ``layers[K]``, the K-th layer with weights of the target. Optimizer slots and state,
    ``global_step`` and ``save_counter`` are not in the result.

        >>> tf_to_graftnet_names(["dnn/hidden1/kernel", "dnn/outputs/bias", "global_step"])
        {'dnn/hidden1/kernel': 'hidden1.weight', 'dnn/outputs/bias': 'outputs.bias'}
        >>> tf_to_graftnet_names(["model/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE"], ["conv1", "bn1"])
        {'model/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE': 'bn1.bias'}
    """
    names = list(names)
    known = {n.removesuffix(_ATTRIBUTE_SUFFIX) for n in names}
    kept = [n for n in names if not _is_bookkeeping(n, known)]
    paths = {n: _path_parts(n) for n in kept if not _POSITIONAL.fullmatch(n)}
    strip = _common_scope(list(paths.values()))
    mapped = {}
    for name in kept:
        positional = _POSITIONAL.fullmatch(name)
        if positional:
            mapped[name] = _positional_name(name, int(positional.group(1)), positional.group(2), layers)
        else:
            parts = paths[name][strip:]
            mapped[name] = ".".join(parts[:-1] + [_PARAMETERS.get(parts[-1], parts[-1])])
    return mapped


def _path_parts(name: str) -> list[str]:
    return name.removesuffix(_ATTRIBUTE_SUFFIX).removesuffix(":0").split("/")


def _common_scope(paths: list[list[str]]) -> int:
    """How many leading scopes all names share, keeping at least a layer and a variable."""
    if not paths:
        return 0
    depth = min(len(p) for p in paths) - 2
    count = 0
    while count < depth and len({p[count] for p in paths}) == 1:
        count += 1
    return count


def _positional_name(name: str, index: int, attribute: str, layers: Sequence[str] | None) -> str:
    if layers is None:
        raise ConfigError(f"{name!r} names a layer by position (layer_with_weights-{index}); pass "
                          f"layers=[...], the names of the target's layers with weights in order")
    layer = layers[index] if index < len(layers) else f"layer_with_weights-{index}"
    return f"{layer}.{_PARAMETERS.get(attribute, attribute)}" if layer else _PARAMETERS.get(attribute, attribute)


def _weighted_layers(module: nn.Module) -> list[str]:
    """Names of the modules that hold parameters or buffers themselves, in state-dict order."""
    layers: dict[str, None] = {}
    for key in module.state_dict():
        layers.setdefault(key.rsplit(".", 1)[0] if "." in key else "", None)
    return list(layers)


def _source_names(checkpoint: TFCheckpoint, match: str) -> dict[str, tuple[str, str]]:
    """Checkpoint key -> (name to show, name to map by), for the model's variables only.

    TF1 keys are names already. For TF2, the object graph says which variables belong to
    the model (not the optimizer), their TF names (shown instead of keys such as
    ``optimizer/_trainable_variables/0/...``) and which layer holds each.
    """
    if checkpoint.object_graph is None:
        if match == "position":
            raise ConfigError(f"{checkpoint.prefix} is a TF1 (name-based) checkpoint: it does not record "
                              f"the order of its layers, so match='position' cannot be used; use match='name'")
        return {key: (key, key) for key in checkpoint}
    try:
        variables = [v for v in _model_variables(_parse_object_graph(checkpoint.object_graph)) if v.key in checkpoint]
    except _Corrupt as err:
        raise ImportFormatError(f"TensorFlow checkpoint {checkpoint.prefix}: object graph: {err}") from None
    uses = Counter(v.full_name for v in variables)
    names = {}
    for var in variables:
        shown = var.full_name if var.full_name and uses[var.full_name] == 1 else var.key  # names must be unique
        attribute = _path_parts(shown)[-1]
        names[var.key] = (shown, shown if match == "name" else f"layer_with_weights-{var.layer}/{attribute}")
    return names


def load_tf_checkpoint(
    network: nn.Module,
    path: str | os.PathLike[str],
    *,
    rename: list[tuple[str, str]] | Mapping[str, str] | None = None,
    strict: bool = True,
    match: Literal["auto", "name", "position"] = "auto",
    meta: str | os.PathLike[str] | bool = True,
) -> MappingReport:
    """Load a TensorFlow checkpoint's model weights into ``network``; all or nothing when strict.

    Args:
        network: the target, e.g. ``Network.mlp(784, [300, 50, 50, 50, 50], 10)`` for the
            book's ch. 11 model; any ``nn.Module`` works.
        path: as for ``read_tf_checkpoint``.
        rename: regex rules applied to the target names the default mapping proposes
            (``[(r"hidden(\\d)\\.(.*)", r"dense\\1.\\2")]``); see ``apply_rename``.
        strict: raise ``CheckpointError`` (loading nothing) unless every model variable
            finds a target of the same shape and every target is loaded. ``strict=False``
            loads what fits, e.g. only ``hidden1..hidden3`` into a network with a new head.
        match: ``"name"`` maps variables by their names; ``"position"`` maps the k-th
            checkpoint layer with weights to the k-th layer with weights of ``network``
            (TF2 checkpoints only); ``"auto"`` is position for TF2, name for TF1.
        meta: the twin check. ``True`` (default): when ``<prefix>.meta`` is beside the
            checkpoint, the network must compute what that graph computes (activations,
            BatchNorm epsilon and momentum, Flatten order before a Dense), else a
            ``CheckpointError`` names each layer that differs and nothing loads; a path names
            another ``.meta``; ``False`` skips it. ``report.layout`` says, per loaded layer,
            "verified against ..." or "not verifiable" (no graph to check against).

    Returns:
        The report: matched pairs, transposed kernels, ignored optimizer state, ...

        >>> from graftnet.network import Network
        >>> net = Network.mlp(784, [300, 50, 50, 50, 50], 10)
        >>> load_tf_checkpoint(net, "tests/fixtures/tf/tf1/my_model_final.ckpt").ok
        True
    """
    if match not in ("auto", "name", "position"):
        raise ConfigError(f"match={match!r}: expected 'auto', 'name' or 'position'")
    checkpoint = read_tf_checkpoint(path)
    if match == "auto":
        match = "position" if checkpoint.has_object_graph else "name"
    sources = _source_names(checkpoint, match)
    mapped = tf_to_graftnet_names((name for _, name in sources.values()), layers=_weighted_layers(network))
    # shown name -> target; shown names are TF variable names (keys for TF1)
    targets = {shown: mapped[name] for shown, name in sources.values() if name in mapped}
    if rename:
        renamed = apply_rename(targets.values(), rename)
        targets = {shown: renamed[target] for shown, target in targets.items()}
    keys = {shown: key for key, (shown, _) in sources.items() if shown in targets}
    transforms = {shown: kernel_to_torch for shown in targets if _path_parts(shown)[-1] in _KERNELS}
    layout = _twin_check(network, checkpoint.prefix, targets, meta)
    report = load_tensors(network, {shown: checkpoint[key] for shown, key in keys.items()}, strict=strict,
                          transforms=transforms, source=str(checkpoint.prefix), rename=targets)
    loaded_keys = set(keys.values())
    report.ignored = [key for key in checkpoint if key not in loaded_keys]
    report.notes += [f"skipped {key}: {why}" for key, why in checkpoint.skipped.items()]
    report.layout = layout
    return report


def _twin_check(network: nn.Module, prefix: Path, targets: Mapping[str, str],
                meta: str | os.PathLike[str] | bool) -> dict[str, str]:
    """Layer -> "verified against ..." / "not verifiable: ..."; an error when the graph disagrees."""
    from graftnet.network import Network

    layers: dict[str, None] = {}
    for target in targets.values():
        layers.setdefault(target.rsplit(".", 1)[0] if "." in target else "", None)
    if not isinstance(network, Network):
        return {layer: "not verifiable: the target is not a graftnet Network" for layer in layers}
    names = {name.replace("/", "."): name for name in network.layer_names}
    layer_names = [names.get(layer, layer) for layer in layers]
    path = Path(f"{prefix}.meta") if meta is True else (Path(meta) if meta else None)
    if path is None or not path.is_file():
        if meta not in (True, False) and path is not None:
            raise ImportFormatError(f"meta={str(meta)!r}: no such file")
        return {layer: NOT_VERIFIABLE_TEXT for layer in layer_names}
    from graftnet.io.tf_graph import verify_twin

    status = verify_twin(network, targets, path)
    return {layer: status.get(layer, f"not verifiable: {path.name} has no layer that holds these variables")
            for layer in layer_names}


NOT_VERIFIABLE_TEXT = ("not verifiable: the checkpoint holds values only, not the activation, BatchNorm "
                       "epsilon/momentum or Flatten order (a .meta beside it would tell)")
