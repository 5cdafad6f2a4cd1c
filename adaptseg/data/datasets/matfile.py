"""A minimal reader for MATLAB v5/v7 ``.mat`` files holding numeric arrays (GTA5's ``split.mat``).

SciPy is not a dependency, and the only ``.mat`` a dataset here ships is GTA5's ``split.mat``
(``trainIds``/``valIds``/``testIds``, read by cycada with ``scipy.io.loadmat``, so it is v5/v7, not the
HDF5-based v7.3). This reads the v5 container: a 128-byte header, then data elements, each optionally
zlib-compressed (``miCOMPRESSED``), each a ``miMATRIX`` with flags, dimensions, a name and the real part.
Non-numeric arrays (cells, structs, chars, sparse) are skipped. Format: MathWorks "MAT-File Format"
(R2024), chapter 1.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from adaptseg.errors import UserError

_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_NUMERIC_CLASSES = range(6, 16)  # double, single, int8 … uint64


class _Malformed(Exception):
    pass


def _elements(data: bytes, order: str):
    """Yield (type, payload) for each data element in ``data`` (tags in normal or small format)."""
    pos = 0
    while pos + 8 <= len(data):
        first, second = struct.unpack_from(order + "II", data, pos)
        if first >> 16:  # small data element: type and size share the first word, payload the second
            kind, size = first & 0xFFFF, first >> 16
            if size > 4:
                raise _Malformed("small data element larger than 4 bytes")
            yield kind, data[pos + 4 : pos + 4 + size]
            pos += 8
            continue
        kind, size = first, second
        start = pos + 8
        if start + size > len(data):
            raise _Malformed("data element runs past the end of the file")
        yield kind, data[start : start + size]
        pos = start + size
        if kind != _MI_COMPRESSED:  # everything but compressed elements is padded to 8 bytes
            pos += -size % 8


def _numeric(kind: int, payload: bytes, order: str) -> np.ndarray:
    if kind not in _MI_DTYPES:
        raise _Malformed(f"unsupported data type {kind}")
    return np.frombuffer(payload, dtype=np.dtype(_MI_DTYPES[kind]).newbyteorder(order))


def _matrix(payload: bytes, order: str) -> tuple[str, np.ndarray] | None:
    parts = list(_elements(payload, order))
    if len(parts) < 3:
        return None
    flags = _numeric(*parts[0], order)
    array_class = int(flags[0]) & 0xFF
    if array_class not in _NUMERIC_CLASSES or len(parts) < 4:
        return None
    dims = tuple(int(d) for d in _numeric(*parts[1], order))
    name = parts[2][1].decode("ascii", errors="replace")
    real = _numeric(*parts[3], order)
    if real.size != int(np.prod(dims)):
        raise _Malformed(f"array {name!r} has {real.size} values for dimensions {dims}")
    return name, real.reshape(dims, order="F")


def read_mat_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The numeric arrays of a v5/v7 ``.mat`` file by variable name (column-major, as MATLAB stores them)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror})", path=path) from None
    header = data[:128]
    if len(data) < 128 or not header.startswith(b"MATLAB"):
        raise UserError("not a MATLAB v5 .mat file", path=path, fix="re-save it with MATLAB `save -v7`")
    if header.startswith(b"MATLAB 7.3"):
        raise UserError(
            "MATLAB v7.3 (HDF5) .mat files are not supported",
            path=path,
            fix="re-save it with `save -v7`, or write the split as a text file of ids",
        )
    order = {b"IM": "<", b"MI": ">"}.get(header[126:128])
    if order is None:
        raise UserError("corrupt .mat header (no endian indicator)", path=path, fix="re-download the file")
    arrays: dict[str, np.ndarray] = {}
    try:
        for kind, payload in _elements(data[128:], order):
            if kind == _MI_COMPRESSED:
                inner = list(_elements(zlib.decompress(payload), order))
                if not inner:
                    continue
                kind, payload = inner[0]
            if kind == _MI_MATRIX and (matrix := _matrix(payload, order)) is not None:
                arrays[matrix[0]] = matrix[1]
    except (_Malformed, zlib.error, struct.error, ValueError) as exc:
        raise UserError(f"corrupt .mat file ({exc})", path=path, fix="re-download the file") from None
    return arrays
