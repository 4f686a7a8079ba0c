"""``prepare``, part two: a seeded train/val/test split (stratified by label, grouped, or plain) with a leakage check."""

import random
from collections import Counter
from itertools import combinations

from tunelab.config.schema import DataConfig
from tunelab.data.cleaning import input_key
from tunelab.errors import TunelabError

SPLITS = ("train", "val", "test")


def split_examples(examples: list[dict], config: DataConfig) -> dict[str, list[dict]]:
    """The split the data asks for: stratified by label (classification), one group per split
    (``data.group_field``), else a plain seeded split."""
    sizes = (config.test_size, config.val_size, config.train_size, config.seed)
    if config.group_field is not None:
        return grouped_split(examples, config.group_field, *sizes)
    return stratified_split(examples, *sizes, by_label=config.classifies)


def _carve(examples: list[dict], size: int, seed: int, name: str, by_label: bool) -> tuple[list[dict], list[dict]]:
    """Take ``size`` examples out of ``examples``, keeping label proportions if ``by_label``."""
    # imported here: scikit-learn costs ~1 s to import, and the stages that import this package for
    # other things (format reads SPLITS) never split
    from sklearn.model_selection import train_test_split

    if size > len(examples) - 1:
        raise TunelabError(f"data.{name}_size: {size} is more than the {len(examples)} examples left for it")
    try:
        rest, carved = train_test_split(
            examples, test_size=size, random_state=seed, stratify=[e["label"] for e in examples] if by_label else None
        )
    except ValueError as error:  # e.g. a label with a single example cannot be stratified
        raise TunelabError(f"data.{name}_size: cannot stratify {size} of {len(examples)} examples: {error}") from None
    return rest, carved


def stratified_split(
    examples: list[dict], test_size: int, val_size: int, train_size: int | None, seed: int, by_label: bool = True
) -> dict[str, list[dict]]:
    """Test first (so its content depends on the seed and the data only), then val, then train,
    each keeping the label proportions (``by_label``; examples without labels are split plainly).

    Examples are sorted by id first, so the split does not depend on the raw file's row order.
    """
    ordered = sorted(examples, key=lambda example: example["id"])
    rest, test = _carve(ordered, test_size, seed, "test", by_label)
    rest, val = _carve(rest, val_size, seed, "val", by_label)
    if train_size is None or train_size == len(rest):
        train = rest
    else:
        train = _carve(rest, train_size, seed, "train", by_label)[1]
    return {"train": train, "val": val, "test": test}


def without_overlap(examples: list[dict], others: list[dict], by_id: bool) -> list[dict]:
    """``examples`` in id order, less those whose normalised input (or, ``by_id``, id) one of ``others`` has."""
    ids, inputs = ({e["id"] for e in others} if by_id else set()), {input_key(e) for e in others}
    return [e for e in sorted(examples, key=lambda e: e["id"]) if e["id"] not in ids and input_key(e) not in inputs]


def with_test_from(examples: list[dict], test_examples: list[dict], config: DataConfig) -> dict[str, list[dict]]:
    """Your own test split as it is (data.test_source), and ``examples`` split into val and train
    around it. A test row whose normalised input a source row has is refused: the test split would
    be trained on, and its rows are not ours to drop."""
    inputs = {input_key(example) for example in examples}
    shared = [example for example in test_examples if input_key(example) in inputs]
    if shared:
        raise TunelabError(f"data.test_source: {len(shared)} of its {len(test_examples)} rows are also in data.source, "
                           f"which gives train and val (first: row {shared[0]['id']}); remove them from one of the "
                           "files: a test row that is trained on measures nothing")
    rest, val = _carve(sorted(examples, key=lambda example: example["id"]), config.val_size, config.seed, "val",
                       config.classifies)
    train = rest if config.train_size in (None, len(rest)) else _carve(rest, config.train_size, config.seed, "train",
                                                                       config.classifies)[1]
    return {"train": train, "val": val, "test": test_examples}


def with_train_from(splits: dict[str, list[dict]], train_examples: list[dict], train_size: int | None,
                    seed: int) -> tuple[dict[str, list[dict]], int]:
    """``splits`` with its train split replaced by ``train_examples`` (data.train_source), less
    any whose id or normalised input a val or test example has; then ``train_size`` of them,
    seeded. Returns the splits and how many train examples overlapped val or test."""
    kept = without_overlap(train_examples, splits["val"] + splits["test"], by_id=True)
    overlapping = len(train_examples) - len(kept)
    if train_size is not None:
        if train_size > len(kept):
            raise TunelabError(f"data.train_size: {train_size} is more than the {len(kept)} examples "
                               "data.train_source gives (after dropping those a val or test example shares)")
        kept = random.Random(seed).sample(kept, train_size)
    return {**splits, "train": kept}, overlapping


def held_out_rows(examples: list[dict], splits: dict[str, list[dict]], size: int | None, seed: int,
                  key: str) -> tuple[list[dict], int]:
    """An extra test set's rows (eval.extra_test_sets): those whose normalised input no train or
    val example has, ``size`` of them (all if None) in a seeded order. Ids are not compared: the
    set comes from another source, whose ids can repeat the main data's by chance. Returns the
    rows and how many overlapped train or val."""
    kept = without_overlap(examples, splits["train"] + splits["val"], by_id=False)
    if size is not None and size > len(kept):
        raise TunelabError(f"{key}.size: {size} is more than the {len(kept)} rows the set has that train and val do not")
    return random.Random(seed).sample(kept, size or len(kept)), len(examples) - len(kept)


def split_overlaps(splits: dict[str, list[dict]]) -> dict[str, int]:
    """Examples shared by two splits, by id or by normalised input (text, or prompt); every value must be 0."""
    overlaps = {}
    for first, second in combinations(splits, 2):
        kept = without_overlap(splits[second], splits[first], by_id=True)
        overlaps[f"{first}/{second}"] = len(splits[second]) - len(kept)
    return overlaps


def check_no_leakage(splits: dict[str, list[dict]]) -> dict[str, int]:
    overlaps = split_overlaps(splits)
    leaking = {pair: count for pair, count in overlaps.items() if count}
    if leaking:
        raise TunelabError(f"split leakage: examples shared between splits {leaking}")
    return overlaps


def label_counts(splits: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    return {name: dict(sorted(Counter(e["label"] for e in rows).items())) for name, rows in splits.items()}


def group_counts(splits: dict[str, list[dict]], group_field: str) -> dict[str, int]:
    """How many groups (e.g. SQuAD articles) each split holds; no group is in two (grouped_split)."""
    return {name: len({str(e[group_field]) for e in rows}) for name, rows in splits.items()}


def grouped_split(examples: list[dict], group_field: str, test_size: int, val_size: int, train_size: int | None,
                  seed: int) -> dict[str, list[dict]]:
    """A seeded split that keeps each group (``group_field``: a SQuAD article, whose paragraphs
    several questions share) in one split, so no context is seen in training and tested on.

    Groups are shuffled, then dealt to test, val and train in turn until each has its size; the
    rest of the group that fills a split goes unused rather than into another split.
    """
    groups: dict[str, list[dict]] = {}
    for example in sorted(examples, key=lambda example: example["id"]):
        groups.setdefault(str(example[group_field]), []).append(example)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    splits: dict[str, list[dict]] = {"test": [], "val": [], "train": []}
    wanted = {"test": test_size, "val": val_size, "train": train_size}
    names = iter(("test", "val", "train"))
    name = next(names)
    for group in order:
        while name != "train" and len(splits[name]) >= wanted[name]:
            name = next(names)
        room = None if wanted[name] is None else wanted[name] - len(splits[name])
        if room == 0:
            break
        splits[name] += groups[group][:room]
    for name in ("test", "val", "train"):
        if wanted[name] is not None and len(splits[name]) < wanted[name]:
            raise TunelabError(f"data.{name}_size: {wanted[name]} is more than the {len(splits[name])} examples "
                               f"the {len(groups)} groups of {group_field!r} leave for it")
    return {"train": splits["train"], "val": splits["val"], "test": splits["test"]}
