"""The rows alignment learns from, out of the format stage's train rows, and the preference pairs.

Every row is the exact text the SFT model read before its answer in training (``prompt``, chat
template included), the answer it was trained to write (``answer``, with its end-of-turn token),
and what the task scores an answer against (``references``, ``choices``). Pairs built from the
task put that gold answer against the SFT model's own wrong sample (on-policy negatives: the
mistakes this model makes, not someone else's); prompts the model always answered right are
counted and skipped. Rows come from the train split only, and a pair whose prompt or id is a
test row's is refused (:func:`check_no_test_rows`). A file (align.preferences.source=file) gives
pairs, or KTO's unpaired rows: an answer labelled desirable or not.
"""

from collections.abc import Iterator
from pathlib import Path

from tunelab.config.schema import PreferencesConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.tasks import Task, answer_of
from tunelab.io.files import sha256_of
from tunelab.io.jsonl import check_fields, numbered_rows

PAIR_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("prompt", "completion", "label")  # KTO's: label true where the answer is desirable
SAMPLING_BATCH = 8  # prompts per generate call (each with its `samples` answers)


def alignment_row(row: dict, tokenizer) -> dict:
    """A formatted train row as alignment sees it. A chat (generative task) is the turns before its
    last answer through the chat template; a classification row keeps the prompt it was trained on."""
    if "messages" in row:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        return {"id": row["id"], "prompt": prompt, "answer": row["target"] + tokenizer.eos_token,
                "target": row["target"], "references": row["references"], "choices": []}
    return {"id": row["id"], "prompt": row["prompt"], "answer": row["completion"], "target": row["target"],
            "references": [row["target"]], "choices": row["choices"]}


def alignment_rows(formatted_train: list[dict], tokenizer) -> list[dict]:
    return [alignment_row(row, tokenizer) for row in formatted_train]


def sampled_answers(model, tokenizer, rows: list[dict], settings: PreferencesConfig, seed: int) -> Iterator[list[str]]:
    """``settings.samples`` answers per row from the model, seeded, batched."""
    import torch

    from tunelab.evaluation.generation import Sampling, generate

    torch.manual_seed(seed)
    sampling = Sampling(samples=settings.samples, temperature=settings.temperature, top_k=50)
    for start in range(0, len(rows), SAMPLING_BATCH):
        batch = rows[start:start + SAMPLING_BATCH]
        ids = [tokenizer(row["prompt"])["input_ids"] for row in batch]
        yield from generate(model, tokenizer, ids, settings.max_new_tokens, sampling)


def pairs_from_samples(task: Task, row: dict, samples: list[str], settings: PreferencesConfig, eos: str) -> list[dict]:
    """The gold answer against each distinct wrong sample (up to ``pairs_per_prompt``, first sampled first)."""
    wrong = []
    for text in samples:
        score = task.score_answer(answer_of(task, text, row["choices"]), row["references"])
        if score < settings.correct_at and text.strip() and text not in wrong:
            wrong.append(text)
    return [{"id": row["id"], "prompt": row["prompt"], "chosen": row["answer"], "rejected": text + eos}
            for text in wrong[:settings.pairs_per_prompt]]


def pairs_from_task(model, tokenizer, task: Task, rows: list[dict], settings: PreferencesConfig, seed: int,
                    progress=lambda done: None) -> tuple[list[dict], dict]:
    """On-policy pairs for the first ``settings.prompts`` rows, and counts of what was skipped."""
    chosen_rows = rows[:settings.prompts]
    pairs, always_right = [], 0
    for done, (row, samples) in enumerate(zip(chosen_rows, sampled_answers(model, tokenizer, chosen_rows, settings, seed)),
                                          start=1):
        made = pairs_from_samples(task, row, samples, settings, tokenizer.eos_token)
        always_right += not made
        pairs += made
        progress(done)
    stats = {"source": "task", "prompts": len(chosen_rows), "samples_per_prompt": settings.samples, "pairs": len(pairs),
             "prompts_always_right": always_right, "always_right_share": round(always_right / max(1, len(chosen_rows)), 4)}
    return pairs, stats


def preference_fingerprint(settings: PreferencesConfig) -> dict:
    """What the preferences stage will read, for the check stage to write where that stage depends on
    it: a file outside the repository is invisible to DVC, so its sha256 reruns the stage when it changes."""
    if settings.source != "file":
        return {"source": settings.source}
    path = Path(settings.path)
    if not path.is_file():
        raise TunelabError(f"align.preferences.path: no file at {path}")
    return {"source": "file", "path": str(path.resolve()), "sha256": sha256_of(path)}


def is_unpaired(rows: list[dict]) -> bool:
    """KTO's unpaired rows (an answer marked desirable or not), not pairs."""
    return bool(rows) and "label" in rows[0]


def rows_from_file(path: Path, fields: dict[str, str]) -> tuple[list[dict], dict]:
    """TRL's preference rows from a JSONL, renamed by ``fields`` (TRL's name → the file's): pairs
    (prompt/chosen/rejected) or, for KTO, unpaired rows (prompt/completion/label); the first row's
    fields say which. Text or lists of chat turns."""
    numbered = numbered_rows(path)  # the data files' reader rules: UTF-8, no BOM, blank lines skipped
    first = numbered[0][1] if numbered else {}
    kinds = {"pairs": PAIR_FIELDS, "unpaired": UNPAIRED_FIELDS}
    kind = next((kind for kind, names in kinds.items() if all(fields.get(f, f) in first for f in names)), None)
    if kind is None:
        at = numbered[0][0] if numbered else 1
        raise TunelabError(f"{path}:{at}: neither a pair ({', '.join(PAIR_FIELDS)}) nor an unpaired row "
                           f"({', '.join(UNPAIRED_FIELDS)}); name the file's fields with align.preferences.fields")
    names = {field: fields.get(field, field) for field in kinds[kind]}
    rows = []
    for line, row in numbered:
        check_fields(row, tuple(names.values()), f"{path}:{line}")
        renamed = {field: row[name] for field, name in names.items()}
        renamed["id"] = str(row.get("id", f"{path.name}:{line}"))
        rows.append(renamed)
    return rows, {"source": "file", "path": str(path), kind: len(rows)}


def check_preference_rows(rows: list[dict], where: str) -> None:
    """A pair that teaches nothing or cannot be trained is refused, naming its row; so is an unpaired
    row without a true/false label, and unpaired rows of one label only (KTO weighs the two)."""
    if not rows:
        raise TunelabError(f"{where}: no preference pairs (the SFT model answered every sampled prompt right, or the "
                           "file is empty); raise align.preferences.prompts or .samples, or lower .correct_at")
    unpaired_rows = is_unpaired(rows)
    texts = ("prompt", "completion") if unpaired_rows else PAIR_FIELDS
    for number, row in enumerate(rows, start=1):
        for field in texts:
            if not row[field]:
                raise TunelabError(f"{where}:{number}: empty {field!r}")
        if unpaired_rows and not isinstance(row["label"], bool):
            raise TunelabError(f"{where}:{number}: label must be true (desirable) or false, not {row['label']!r}")
        if not unpaired_rows and row["chosen"] == row["rejected"]:
            raise TunelabError(f"{where}:{number}: chosen equals rejected, so the pair prefers nothing")
    if unpaired_rows and len({row["label"] for row in rows}) < 2:
        raise TunelabError(f"{where}: every row is labelled {rows[0]['label']}; KTO needs desirable and undesirable "
                           "answers")


def check_no_test_rows(pairs: list[dict], test_rows: list[dict], tokenizer) -> None:
    """No pair's id or prompt may be a test row's: the test split stays unseen by every training phase."""
    test_ids = {str(row["id"]) for row in test_rows}
    test_prompts = {alignment_row(row, tokenizer)["prompt"] for row in test_rows}
    for pair in pairs:
        if str(pair["id"]) in test_ids or rendered_prompt(pair["prompt"], tokenizer) in test_prompts:
            raise TunelabError(f"preference pair {pair['id']}: its prompt is a test row's; the test split must never "
                               "be trained on")


def rendered_prompt(prompt: str | list[dict], tokenizer) -> str:
    """A pair's prompt as the model reads it: chat turns through the chat template up to the
    answer, as a chat row's prompt is (alignment_row), so the two compare as text."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def unpaired(rows: list[dict]) -> list[dict]:
    """KTO's rows: a file's unpaired rows as they are, or each pair's chosen answer as desirable and its
    rejected one as not (the Trainer's sampler, seeded by align.seed, mixes them into batches)."""
    if is_unpaired(rows):
        return [{field: row[field] for field in UNPAIRED_FIELDS} for row in rows]
    return [{"prompt": pair["prompt"], "completion": pair[key], "label": key == "chosen"}
            for pair in rows for key in ("chosen", "rejected")]
