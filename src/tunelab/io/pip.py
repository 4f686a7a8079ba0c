"""Pinned packages from the package index, downloaded by pip itself and checked by sha256.

Data sources (tunelab.data.sources) and tools that ship inside a package (llama.cpp's GGUF
converter in the llama-cpp-python sdist, tunelab.deploy.gguf) come this way: no hub, the
configured index, the bytes pinned.
"""

import re
import subprocess
import sys
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io.files import folder_sha256, sha256_of

SHA256_KEY = "data.source.sha256"


def mismatch(name: str, expected: str, actual: str, key: str = SHA256_KEY) -> TunelabError:
    return TunelabError(f"{name}: sha256 mismatch: expected {expected} ({key}), got {actual}. "
                        "The source changed or the download is corrupt; check it, then update the pin")


def verify_sha256(path: Path, expected: str, key: str = SHA256_KEY) -> str:
    actual = folder_sha256(path) if path.is_dir() else sha256_of(path)
    if actual != expected.lower():
        raise mismatch(path.name, expected, actual, key)
    return actual


PIP_DISTRIBUTIONS = {"pip_sdist": ("sdist", "--no-binary"), "pip_wheel": ("wheel", "--only-binary")}
"""Each pip source kind: what it downloads, and the pip flag that makes pip take only that."""


def download_distribution(kind: str, package: str, version: str, sha256: str, into: Path,
                          key: str = SHA256_KEY) -> Path:
    """Download a source distribution or a wheel with pip itself, so pip's configured index is used.

    The pinned hash goes to pip (``--require-hashes``), which checks the archive before any of
    its code runs (pip prepares an sdist's metadata with the package's own build backend).
    ``key`` names the pin in errors.
    """
    what, only = PIP_DISTRIBUTIONS[kind]
    requirement = into / "requirement.txt"
    requirement.write_text(f"{package}=={version} --hash=sha256:{sha256}\n")
    downloads = into / what
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", only, ":all:",
               "--require-hashes", "-r", str(requirement), "--dest", str(downloads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        if got := re.search(r"Got\s+([0-9a-f]{64})", result.stderr):
            raise mismatch(f"{package}=={version}", sha256, got.group(1), key)
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TunelabError(f"pip could not download the {what} of {package}=={version}: {detail}")
    found = sorted(downloads.iterdir())
    if len(found) != 1:
        raise TunelabError(f"expected one {what} of {package}=={version}, pip wrote {[p.name for p in found]}")
    return found[0]
