"""Sizes on disk, as reports state them."""

from pathlib import Path


def folder_size(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def folder_size_mb(folder: Path) -> float:
    return round(folder_size(folder) / 2**20, 1)
