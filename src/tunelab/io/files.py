"""Sizes and content hashes of files and folders, as reports and provenance state them."""

import hashlib
from pathlib import Path


def folder_size(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def folder_size_mb(folder: Path) -> float:
    return round(folder_size(folder) / 2**20, 1)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """One sha256 for a folder's content: of each file's relative path and sha256, in path order.

    (No library states a folder's hash this simply; DVC's own ``.dir`` hash is md5 and internal.)
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_of(path)}\n".encode())
    return digest.hexdigest()
