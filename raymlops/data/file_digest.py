"""The content digest of plain data files, hashed in parallel: Ray tasks on a cluster, threads here.

A version of ``files:<path>`` is a SHA-256 over the files' content. One running hash over every byte is
sequential: 20M flights as parquet (about 1 GB) took one core several seconds, in the driver. So each file
is cut into pieces of ``PIECE_BYTES``, each piece is hashed on its own (in a Ray task when Ray is up and
the data is large, else in a thread: hashlib releases the GIL), and the digest is a SHA-256 over the
pieces' (relative path, index, digest) in a stable order: the same bytes give the same digest either way.

Digests of the earlier form (one hash over every path and byte) are still recognised by
:func:`legacy_digest`, so references and lineage recorded before keep reading the same files.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["PIECE_BYTES", "content_digest", "legacy_digest"]

PIECE_BYTES = 128 << 20  # one task's share: ~0.1-0.2 s of SHA-256 on one core
_RAY_MIN_BYTES = 512 << 20  # below this, threads in this process finish before Ray tasks would start
_CHUNK = 1 << 20
_THREADS = 4

Piece = tuple[str, int, int]  # (file, offset, length)


def _hash_piece(piece: Piece) -> str:
    path, offset, length = piece
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        handle.seek(offset)
        left = length
        while left > 0:
            chunk = handle.read(min(_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _pieces(files: list[Path]) -> list[Piece]:
    """Every file as pieces of at most PIECE_BYTES (an empty file is one empty piece)."""
    pieces: list[Piece] = []
    for file in files:
        size = file.stat().st_size
        pieces += [
            (str(file), offset, min(PIECE_BYTES, size - offset)) for offset in range(0, size, PIECE_BYTES)
        ]
        if size == 0:
            pieces.append((str(file), 0, 0))
    return pieces


def _hash_pieces(pieces: list[Piece], total_bytes: int) -> list[str]:
    import ray

    if ray.is_initialized() and total_bytes >= _RAY_MIN_BYTES and len(pieces) > 1:
        # Each task reads its piece where it runs: the files must be visible to every node, as they must
        # be for Ray Data to read them (read_arrow_dataset).
        task: Any = ray.remote(num_cpus=1)(_hash_piece)
        return list(ray.get([task.remote(piece) for piece in pieces]))
    with ThreadPoolExecutor(max_workers=min(_THREADS, max(len(pieces), 1))) as pool:
        return list(pool.map(_hash_piece, pieces))


def content_digest(root: Path, files: list[Path]) -> str:
    """SHA-256 over (path relative to ``root``, piece index, piece SHA-256) of every piece of ``files``."""
    pieces = _pieces(files)
    digests = _hash_pieces(pieces, sum(length for _, _, length in pieces))
    top = hashlib.sha256(b"raymlops-files-v2\0")
    index_in_file: dict[str, int] = {}
    for (path, _, _), piece_digest in zip(pieces, digests, strict=True):
        index = index_in_file.get(path, 0)
        index_in_file[path] = index + 1
        top.update(f"{_relative(root, Path(path))}\0{index}\0{piece_digest}\0".encode())
    return top.hexdigest()


def legacy_digest(root: Path, files: list[Path]) -> str:
    """The earlier digest: one SHA-256 over (relative path, bytes) of every file, in order."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(_relative(root, file).encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _relative(root: Path, file: Path) -> str:
    return str(file.relative_to(root)) if root.is_dir() else file.name
