"""Bad input reaches the user as one line naming file and line, exit 2, no traceback, nothing
written; an error that is not the input's still ends in one line that says what to do."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from tunelab.config.compose import compose_conf

PREPARE = REPO_ROOT / "stages" / "prepare.py"


def prepare_on(folder: Path, file_name: str, content: bytes, **data) -> subprocess.CompletedProcess:
    """The prepare stage on data/raw/main/<file_name> holding ``content``, configured like data=local_file."""
    (folder / "data/raw/main").mkdir(parents=True)
    (folder / "data/raw/main" / file_name).write_bytes(content)
    (folder / "data/raw/source.json").write_text(json.dumps({"file": file_name}))
    params = compose_conf(REPO_ROOT / "conf", ["data=local_file", "data.source.path=unused", "tracking.enabled=false"])
    params["data"].update(data)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, str(PREPARE)], cwd=folder, capture_output=True, text=True)


CASES = {
    "non-UTF-8 bytes": ("reviews.jsonl", b'{"text": "fine", "label": "positive"}\n{"text": "caf\xe9", "label": "negative"}\n',
                        {}, "reviews.jsonl:2: not UTF-8 (byte 0xe9); convert the file to UTF-8"),
    "a UTF-8 BOM": ("reviews.csv", b"\xef\xbb\xbftext,label\nfine,positive\n", {"format": "csv"},
                    "reviews.csv:1: starts with a UTF-8 byte-order mark (BOM)"),
    "a NaN rating": ("reviews.jsonl", b'{"text": "fine", "rating": 2.0}\n{"text": "odd", "rating": NaN}\n',
                     {"label_field": None, "rating_field": "rating", "rating_margin": 0.5},
                     "reviews.jsonl:2: rating is nan; a rating must be a finite number"),
    "an infinite rating": ("reviews.jsonl", b'{"text": "odd", "rating": -Infinity}\n',
                           {"label_field": None, "rating_field": "rating", "rating_margin": 0.5},
                           "reviews.jsonl:1: rating is -inf"),
    "a null label": ("reviews.jsonl", b'{"text": "fine", "label": "positive"}\n{"text": "odd", "label": null}\n', {},
                     "reviews.jsonl:2: field 'label' is empty (null); give every row a value"),
    "a short CSV row": ("reviews.csv", b"id,text,label\n1,fine,positive\n2,odd\n", {"format": "csv", "id_field": "id"},
                        "reviews.csv:3: 2 values, but the header has 3 columns"),
    "a CSV cell over csv's 128 KiB field limit": (
        "reviews.csv", b'text,label\nfine,positive\n"' + b"x" * 140_000 + b'",negative\n', {"format": "csv"},
        "reviews.csv:3: field larger than field limit (131072); for longer texts use data.format=jsonl"),
    "a repeated CSV header": ("reviews.csv", b"text,label,text\nfine,positive,again\n", {"format": "csv"},
                              "reviews.csv:1: column 'text' appears 2 times in the header; name every column once"),
    "a JSONL row nested 100,000 deep": (
        "reviews.jsonl", b'{"text": "fine", "label": "positive"}\n{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        {}, "reviews.jsonl:2: nested deeper than Python's JSON reader can follow"),
    "a JSON array nested 100,000 deep": ("reviews.json", b"[" * 100_000 + b"]" * 100_000, {"format": "json"},
                                         "reviews.json: nested deeper than Python's JSON reader can follow"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_one_line_naming_file_and_line_exit_2_and_nothing_written(tmp_path, case):
    file_name, content, data, message = CASES[case]
    result = prepare_on(tmp_path, file_name, content, **data)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"error: data/raw/main/{message}") and "\n" not in line  # one line, no traceback
    assert not (tmp_path / "data/prepared").exists()


FAILING_STAGE = """
import errno, sys
from tunelab.stage import run_stage

def main():
    kind = sys.argv[1]
    if kind == "disk":
        raise OSError(errno.ENOSPC, "No space left on device", "models/trained.tmp-1/model.safetensors")
    if kind == "memory":
        raise MemoryError()
    raise RuntimeError("something deep inside a library")

run_stage(main)
"""


@pytest.mark.parametrize(("kind", "line"), [
    ("disk", "error: disk full (models/trained.tmp-1/model.safetensors): free space, e.g. `dvc gc -w` and old "
             "checkpoints/, then run again; outputs are written atomically, so nothing half-written was kept"),
    ("memory", "error: out of memory: lower train.batch_size / eval.batch_size (or format.max_length), or use a "
               "smaller model or strategy=qlora"),
    ("bug", "error: RuntimeError: something deep inside a library (unexpected: this is likely a tunelab bug; rerun "
            "with TUNELAB_DEBUG=1 for the traceback and report it)"),
])
def test_an_error_that_is_not_the_inputs_is_one_line_saying_what_to_do(kind, line):
    result = subprocess.run([sys.executable, "-c", FAILING_STAGE, kind], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == line


def test_the_traceback_is_there_under_the_debug_flag():
    result = subprocess.run([sys.executable, "-c", FAILING_STAGE, "bug"], capture_output=True, text=True,
                            env={**__import__("os").environ, "TUNELAB_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "RuntimeError: something deep" in result.stderr
    assert result.stderr.strip().endswith("report it)")
