"""Per-frame arrays written as they are produced, so a long video never holds them all in memory."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_HEADER_BYTES = 128  # fixed .npy v1.0 header size: room for any row count, rewritten in place at the end


class NpyAppender:
    """An ``.npy`` file grown one block of rows at a time; ``np.load`` reads it (memory-mapped if wished)."""

    def __init__(self, path: str | os.PathLike, dtype, row_shape: tuple[int, ...]):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._file = open(self.path, "wb")
        self._file.write(self._header())

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype).reshape((-1, *self.row_shape))
        self._file.write(rows.tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(self._header())
        self._file.close()

    def _header(self) -> bytes:
        shape = (self.rows, *self.row_shape)
        text = f"{{'descr': {self.dtype.str!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        prefix = b"\x93NUMPY\x01\x00"
        body_len = _HEADER_BYTES - len(prefix) - 2
        body = text.ljust(body_len - 1).encode("latin1") + b"\n"
        assert len(body) == body_len, "header overflow"
        return prefix + body_len.to_bytes(2, "little") + body
