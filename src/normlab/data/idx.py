"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al., "THE MNIST DATABASE").

Layout: a 4-byte magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
values, big-endian, row-major. Files may be gzip-compressed (detected from the content, not the
name).

A damaged file must never crash the caller with an obscure error or make it allocate gigabytes:
every size is checked against what the file can actually hold (the uncompressed length for plain
files; at most :data:`MAX_DEFLATE_RATIO` times the compressed length for gzip, deflate's
theoretical limit) before anything is read, and every failure is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

# type byte -> big-endian dtype (the IDX specification's table)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# deflate cannot expand better than ~1032:1, so a .gz of n bytes decompresses to < 1032 n bytes
MAX_DEFLATE_RATIO = 1032
GZIP_MAGIC = b"\x1f\x8b"
# The most data one IDX file may declare: 4x the 47 MB of MNIST's training images. A 0.9 MB
# gzip file can honestly hold 930 MB of zeros, which the loader's float32 copy quadruples:
# the cap, checked on the header before the body is decompressed, keeps that off the machine.
MAX_IDX_BYTES = 1 << 28


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """The array stored in an IDX file (plain or gzip), in native byte order.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming the file) for a bad
    magic number, an impossible size, a body larger than ``max_bytes`` (read from the header,
    before decompressing), a truncated or over-long body, or corrupt compression.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {str(path)!r}")
    file_size = path.stat().st_size
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    # The largest body the file can hold: its own size, or deflate's bound for gzip.
    capacity = file_size * MAX_DEFLATE_RATIO if compressed else file_size
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            dtype, shape = _read_header(f, path)
            header_len = 4 + 4 * len(shape)
            n_bytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
            if n_bytes > capacity - header_len:
                raise ValueError(f"{str(path)!r}: header claims shape {shape} ({n_bytes} bytes of "
                                 f"data) but a {file_size}-byte file cannot hold that "
                                 "(truncated file or corrupt header)")
            if n_bytes > max_bytes:
                raise ValueError(f"{str(path)!r}: expected at most {max_bytes} bytes of data "
                                 f"(normlab.data.idx.MAX_IDX_BYTES), got a header declaring "
                                 f"shape {shape} ({n_bytes} bytes)")
            body = f.read(n_bytes)
            if len(body) != n_bytes:
                raise ValueError(f"{str(path)!r}: truncated: header claims shape {shape} "
                                 f"({n_bytes} bytes) but only {len(body)} bytes follow")
            if f.read(1):
                raise ValueError(f"{str(path)!r}: trailing data after the {n_bytes} bytes that "
                                 f"shape {shape} needs (corrupt header?)")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{str(path)!r}: corrupt or truncated IDX file: {exc}") from exc
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(np.dtype(dtype).newbyteorder("="))


def _read_header(f, path: Path) -> tuple[str, tuple[int, ...]]:
    magic = f.read(4)
    if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES:
        raise ValueError(f"{str(path)!r}: not an IDX file (magic bytes {magic.hex() or 'missing'}; "
                         "expected 00 00 <type 08/09/0b/0c/0d/0e> <ndim>)")
    ndim = magic[3]
    if ndim == 0:
        raise ValueError(f"{str(path)!r}: IDX header declares 0 dimensions")
    dims = f.read(4 * ndim)
    if len(dims) != 4 * ndim:
        raise ValueError(f"{str(path)!r}: truncated IDX header ({ndim} sizes declared, "
                         f"{len(dims)} bytes present)")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    return IDX_TYPES[magic[2]], shape
