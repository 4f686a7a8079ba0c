import copy
import json

import pytest
from configs import conf_section

from tunelab.config.schema import DataConfig
from tunelab.data.cleaning import clean, normalize_text, text_id
from tunelab.data.readers import RawRecord, read_records
from tunelab.errors import TunelabError


def rating_config(**overrides) -> DataConfig:
    """The default data config (VADER: ids, signed ratings), with a local source."""
    return conf_section("data", source={"kind": "local_file", "path": "unused"}, **overrides)


def records(*rows: dict) -> list[RawRecord]:
    return [RawRecord(row, f"raw.txt:{n}") for n, row in enumerate(rows, start=1)]


def test_normalisation_folds_unicode_forms_and_whitespace():
    assert normalize_text("  ﬁne\u00a0\u00a0ｆｉｌｍ\t\n ") == "fine film"


def test_labels_by_sign_and_drops_near_neutral_empty_and_duplicates():
    rows = records(
        {"id": "1", "rating": 2.3, "text": "Great  film"},
        {"id": "2", "rating": -1.0, "text": "Awful"},
        {"id": "3", "rating": 0.2, "text": "Fine I guess"},
        {"id": "4", "rating": 1.1, "text": "   "},
        {"id": "5", "rating": 3.0, "text": "GREAT film"},
    )
    examples, report = clean(rows, rating_config())
    assert [(e["id"], e["text"], e["label"]) for e in examples] == [("1", "Great film", "positive"), ("2", "Awful", "negative")]
    assert report.raw_rows == 5
    assert dict(report.dropped) == {"near_neutral": 1, "empty_text": 1, "duplicate_text": 1}


def test_margin_is_configurable():
    rows = records({"id": "1", "rating": 0.7, "text": "ok"})
    assert clean(rows, rating_config(rating_margin=0.5))[0]
    assert not clean(rows, rating_config(rating_margin=1.0))[0]


def test_label_field_must_hold_a_configured_label():
    config = rating_config(rating_field=None, label_field="label", id_field=None)
    examples, _ = clean(records({"label": "positive", "text": "good"}), config)
    assert examples[0]["id"] == text_id("good")
    with pytest.raises(TunelabError, match=r"raw.txt:1: label 'neutral' is not one of"):
        clean(records({"label": "neutral", "text": "meh"}), config)


def test_missing_field_names_file_line_and_present_fields():
    with pytest.raises(TunelabError, match=r"raw.txt:2: missing field 'text' \(fields present: \['id', 'rating'\]\)"):
        clean(records({"id": "1", "rating": 1.0, "text": "a"}, {"id": "2", "rating": 1.0}), rating_config())


def test_duplicate_ids_are_refused_with_both_locations():
    with pytest.raises(TunelabError, match=r"raw.txt:2: id '1' already used at raw.txt:1"):
        clean(records({"id": "1", "rating": 1.0, "text": "a"}, {"id": "1", "rating": 1.0, "text": "b"}), rating_config())


def test_text_ids_are_stable_and_normalised():
    assert text_id("Great film") == text_id("  great   FILM ")
    assert text_id("Great film") != text_id("Great films")
    assert len(text_id("x")) == 16


def test_vader_reader_parses_crlf_lines_and_names_malformed_rows(tmp_path):
    raw = tmp_path / "truth.txt"
    raw.write_bytes(b"1\t2.5\tGood one\r\n2\t-3\tBad\r\n")
    assert [r.fields for r in read_records(tmp_path, "truth.txt", "vader_tsv")] == [
        {"id": "1", "rating": 2.5, "text": "Good one"}, {"id": "2", "rating": -3.0, "text": "Bad"}]
    raw.write_bytes(b"1\t2.5\tGood one\r\n2\tBad\r\n")
    with pytest.raises(TunelabError, match=r"truth.txt:2: expected 3 tab-separated fields .* got 2"):
        read_records(tmp_path, "truth.txt", "vader_tsv")
    raw.write_bytes(b"1\tgood\tGood one\r\n")
    with pytest.raises(TunelabError, match=r"truth.txt:1: rating 'good' is not a number"):
        read_records(tmp_path, "truth.txt", "vader_tsv")


def test_hf_dataset_dir_splits_are_pooled(tmp_path):
    import datasets

    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"text": "a", "label": "positive"}]),
        "test": datasets.Dataset.from_list([{"text": "b", "label": "negative"}]),
    }).save_to_disk(str(tmp_path / "dataset"))
    rows = read_records(tmp_path, "dataset", "hf_dataset_dir")
    assert sorted(r.fields["text"] for r in rows) == ["a", "b"]


SQUAD = {"version": "1.1", "data": [
    {"title": "Super_Bowl_50", "paragraphs": [
        {"context": "Super Bowl 50 was played in Santa Clara.", "qas": [
            {"id": "q1", "question": "Where was Super Bowl 50 played?",
             "answers": [{"text": "Santa Clara", "answer_start": 28}, {"text": "Santa Clara.", "answer_start": 28}]},
            {"id": "q2", "question": "Which Super Bowl?", "answers": [{"text": "50", "answer_start": 11}]}]}]},
    {"title": "Normans", "paragraphs": [
        {"context": "The Normans were in Normandy.", "qas": [
            {"id": "q3", "question": "Where were the Normans?", "answers": [{"text": "Normandy", "answer_start": 20}]}]}]}]}


def test_squad_json_becomes_one_record_per_question_with_its_article_and_gold_answers(tmp_path):
    (tmp_path / "dev.json").write_text(json.dumps(SQUAD))
    records = read_records(tmp_path, "dev.json", "squad_json")
    assert [r.fields["id"] for r in records] == ["q1", "q2", "q3"]
    assert records[0].fields == {"id": "q1", "title": "Super_Bowl_50", "context": "Super Bowl 50 was played in Santa Clara.",
                                 "question": "Where was Super Bowl 50 played?", "answers": ["Santa Clara", "Santa Clara."]}
    assert records[2].where.endswith("dev.json: data[1].paragraphs[0].qas[0]")


def squad_without_answers() -> str:
    broken = copy.deepcopy(SQUAD)
    broken["data"][1]["paragraphs"][0]["qas"][0]["answers"] = []
    return json.dumps(broken)


@pytest.mark.parametrize(("name", "content", "raw_format", "message"), [
    ("a.jsonl", json.dumps({"text": "x"}) + "\n\n{broken\n", "jsonl", r"a.jsonl:3: not valid JSON"),
    ("a.csv", "text,label\nfine,positive\nbad,negative,extra\n", "csv", r"a.csv:3: more values than the 2 header columns"),
    ("dev.json", squad_without_answers(), "squad_json",
     r"dev.json: data\[1\].paragraphs\[0\].qas\[0\]: a question needs gold answers"),
    ("dev.json", "[1, 2]", "squad_json", r"dev.json: not SQuAD JSON"),
    ("a.xml", "<a/>", "xml", r"config key data.format: unknown value 'xml'; expected one of \['vader_tsv', 'jsonl'"),
])
def test_a_broken_raw_file_is_one_line_naming_where(tmp_path, name, content, raw_format, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(TunelabError, match=message):
        read_records(tmp_path, name, raw_format)


def generative_config(data: str, **changes) -> DataConfig:
    return conf_section("data", (f"data={data}",), **changes)


def test_a_layouts_chat_becomes_history_prompt_and_references_and_duplicate_prompts_are_dropped():
    config = generative_config("alpaca_demo")
    rows = records({"instruction": "Add", "input": "2 and 3", "output": "5"}, {"instruction": "Greet", "output": "Hello!"},
                   {"instruction": "Add", "input": "2 and 3", "output": "five"})
    examples, report = clean(rows, config)
    assert [(e["history"], e["prompt"], e["references"]) for e in examples] == [([], "Add\n\n2 and 3", ["5"]),
                                                                               ([], "Greet", ["Hello!"])]
    assert dict(report.dropped) == {"duplicate_prompt": 1} and len({e["id"] for e in examples}) == 2
    assert clean(rows[:1], config)[0][0]["id"] == examples[0]["id"]  # a stable id: the same prompt, the same id


def test_rows_with_their_own_fields_keep_them_for_the_template_and_their_answers_as_references():
    config = generative_config("squad_v1")
    row = {"id": "q1", "title": "T", "context": "In Paris.", "question": "Where?", "answers": ["Paris", "in Paris"]}
    [example], _ = clean(records(row), config)
    assert example == {"id": "q1", "title": "T", "context": "In Paris.", "question": "Where?",
                       "references": ["Paris", "in Paris"]}
    math = generative_config("gsm8k")
    [solved], _ = clean(records({"question": "1+1?", "answer": "1+1=2\n#### 2"}), math)
    assert solved["references"] == ["1+1=2\n#### 2"] and set(solved) == {"id", "question", "references"}
    with pytest.raises(TunelabError, match=r"raw.txt:1: answer has an empty reference"):
        clean(records({"question": "1+1?", "answer": " "}), math)
