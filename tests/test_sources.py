import io
import tarfile

import pytest

from tunelab.config.schema import SourceConfig
from tunelab.data.sources import extract_member_chain, fetch, sha256_of
from tunelab.errors import TunelabError


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_nested_members_are_read_like_the_vader_sdist(tmp_path):
    inner = tar_bytes({"hutto/movies.txt": b"1\t2.0\tGood\r\n", "hutto/other.pdf": b"%PDF"})
    sdist = tmp_path / "pkg-1.0.tar.gz"
    sdist.write_bytes(tar_bytes({"pkg-1.0/additional/hutto.tar.gz": inner, "pkg-1.0/setup.py": b""}))
    assert extract_member_chain(sdist, ["pkg-1.0/additional/hutto.tar.gz", "hutto/movies.txt"]) == b"1\t2.0\tGood\r\n"
    with pytest.raises(TunelabError, match="has no file member 'hutto/absent.txt'"):
        extract_member_chain(sdist, ["pkg-1.0/additional/hutto.tar.gz", "hutto/absent.txt"])


def test_local_file_is_copied_with_its_checksum(tmp_path):
    origin = tmp_path / "reviews.jsonl"
    origin.write_text('{"text": "good", "label": "positive"}\n')
    raw = tmp_path / "raw"
    raw.mkdir()
    provenance = fetch(SourceConfig(kind="local_file", path=str(origin), sha256=sha256_of(origin)), raw)
    assert provenance == {"kind": "local_file", "file": "reviews.jsonl", "sha256": sha256_of(origin)}
    assert (raw / "reviews.jsonl").read_bytes() == origin.read_bytes()


def test_checksum_mismatch_names_the_file_and_the_key(tmp_path):
    origin = tmp_path / "reviews.jsonl"
    origin.write_text("{}\n")
    with pytest.raises(TunelabError, match=r"reviews.jsonl: sha256 mismatch: expected 00+ \(data.source.sha256\)"):
        fetch(SourceConfig(kind="local_file", path=str(origin), sha256="0" * 64), tmp_path)


def test_missing_source_path_is_named(tmp_path):
    with pytest.raises(TunelabError, match=r"data.source.path: .*nowhere.jsonl does not exist"):
        fetch(SourceConfig(kind="local_file", path=str(tmp_path / "nowhere.jsonl")), tmp_path)
