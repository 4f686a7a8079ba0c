import random

import pytest

from tunelab.data.split import check_no_leakage, label_counts, split_overlaps, stratified_split, with_train_from
from tunelab.errors import TunelabError


def examples(n: int = 200, positive_share: float = 0.3) -> list[dict]:
    return [
        {"id": f"{i:04d}", "text": f"review {i}", "label": "positive" if i < n * positive_share else "negative"}
        for i in range(n)
    ]


def ids(splits):
    return {name: [e["id"] for e in rows] for name, rows in splits.items()}


def test_split_is_deterministic_for_a_seed_and_independent_of_row_order():
    data = examples()
    shuffled = random.Random(1).sample(data, len(data))
    first = stratified_split(data, test_size=40, val_size=20, train_size=None, seed=7)
    assert ids(first) == ids(stratified_split(shuffled, 40, 20, None, seed=7))
    assert ids(first) != ids(stratified_split(data, 40, 20, None, seed=8))


def test_sizes_and_label_proportions():
    splits = stratified_split(examples(), test_size=40, val_size=20, train_size=100, seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 100, "val": 20, "test": 40}
    assert label_counts(splits) == {
        "train": {"negative": 70, "positive": 30},
        "val": {"negative": 14, "positive": 6},
        "test": {"negative": 28, "positive": 12},
    }


def test_no_example_is_in_two_splits():
    splits = stratified_split(examples(), 40, 20, None, seed=3)
    assert check_no_leakage(splits) == {"train/val": 0, "train/test": 0, "val/test": 0}
    assert sum(len(rows) for rows in splits.values()) == 200


def test_leakage_by_id_or_normalised_text_is_caught():
    splits = {
        "train": [{"id": "a", "text": "Great film"}, {"id": "b", "text": "x"}],
        "val": [{"id": "c", "text": "great   FILM"}],
        "test": [{"id": "b", "text": "other"}],
    }
    assert split_overlaps(splits) == {"train/val": 1, "train/test": 1, "val/test": 0}
    with pytest.raises(TunelabError, match="split leakage"):
        check_no_leakage(splits)


def test_asking_for_more_than_there_is_names_the_key():
    with pytest.raises(TunelabError, match=r"data.test_size: 500 is more than the 200 examples"):
        stratified_split(examples(), test_size=500, val_size=20, train_size=None, seed=0)
    with pytest.raises(TunelabError, match=r"data.train_size: 150 is more than"):
        stratified_split(examples(), test_size=40, val_size=20, train_size=150, seed=0)


def test_a_grouped_split_keeps_every_article_in_one_split():
    from tunelab.data.split import grouped_split

    examples = [{"id": f"q{i:02d}", "title": f"article-{i // 3}", "text": f"question {i}"} for i in range(30)]
    splits = grouped_split(examples, "title", test_size=7, val_size=5, train_size=None, seed=0)
    assert (len(splits["test"]), len(splits["val"])) == (7, 5)
    titles = {name: {e["title"] for e in rows} for name, rows in splits.items()}
    assert all(not (titles[a] & titles[b]) for a, b in (("test", "val"), ("test", "train"), ("val", "train")))
    assert len(splits["train"]) + 12 <= 30 and len(splits["train"]) >= 30 - 12 - 4  # at most 2 trimmed groups' leftovers unused
    assert grouped_split(list(reversed(examples)), "title", 7, 5, None, 0) == splits  # row order does not matter
    assert grouped_split(examples, "title", 7, 5, None, 1) != splits
    assert len(grouped_split(examples, "title", 7, 5, 6, 0)["train"]) == 6
    with pytest.raises(TunelabError, match=r"data.train_size: 20 is more than the 1[0-9] examples the 10 groups of 'title'"):
        grouped_split(examples, "title", 7, 5, 20, 0)


def test_generative_examples_are_split_plainly_or_by_group_as_the_data_config_says():
    from configs import conf_section

    from tunelab.data.split import split_examples

    prompts = [{"id": f"{i:03d}", "question": f"q {i}", "title": f"t{i // 5}", "references": ["a"]} for i in range(60)]
    plain = split_examples(prompts, conf_section("data", ("data=gsm8k",), test_size=10, val_size=5))
    assert {k: len(v) for k, v in plain.items()} == {"train": 45, "val": 5, "test": 10}
    assert check_no_leakage(plain) == {"train/val": 0, "train/test": 0, "val/test": 0}
    grouped = split_examples(prompts, conf_section("data", ("data=squad_v1",), test_size=10, val_size=5, train_size=None))
    assert [len({e["title"] for e in grouped[name]}) for name in ("test", "val")] == [2, 1]  # whole articles
    assert not {e["title"] for e in grouped["train"]} & {e["title"] for e in grouped["test"]}
    same_question = [{"id": "x", "question": "Q 1", "references": ["b"]}, {"id": "y", "question": "q  1", "references": ["a"]}]
    assert split_overlaps({"train": same_question[:1], "test": same_question[1:]}) == {"train/test": 1}


def test_a_train_source_replaces_train_less_what_val_or_test_asks():
    splits = stratified_split(examples(), test_size=40, val_size=20, train_size=None, seed=0, by_label=False)
    held_out = splits["test"][:3] + splits["val"][:2]
    generated = [{"id": f"g{i}", "text": f"new review {i}", "label": "positive"} for i in range(30)]
    respaced = [{"id": f"copy{i}", "text": e["text"].upper().replace(" ", "  "), "label": e["label"]}
                for i, e in enumerate(held_out)]
    same_id = [{"id": splits["test"][5]["id"], "text": "another text", "label": "negative"}]
    replaced, overlapping = with_train_from(splits, generated + respaced + same_id, None, seed=0)
    assert overlapping == 6 and sorted(e["id"] for e in replaced["train"]) == sorted(e["id"] for e in generated)
    assert replaced["val"] == splits["val"] and replaced["test"] == splits["test"]
    assert check_no_leakage(replaced) == {"train/val": 0, "train/test": 0, "val/test": 0}
    ten, _ = with_train_from(splits, generated, 10, seed=3)
    assert len(ten["train"]) == 10 and ten == with_train_from(splits, list(reversed(generated)), 10, seed=3)[0]
    with pytest.raises(TunelabError, match=r"data.train_size: 31 is more than the 30 examples data.train_source gives"):
        with_train_from(splits, generated + respaced, 31, seed=0)
