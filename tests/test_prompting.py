"""Prompting methods rendered through the format machinery: few-shot demonstrations, choices, errors."""

import pytest
from transformers import AutoModelForCausalLM

from tunelab.config.schema import PromptConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.evaluator import tokenize_prompts
from tunelab.evaluation.prompting import build_prompts, pick_demonstrations

LABELS = ["negative", "positive"]
INSTRUCTION = PromptConfig(name="instruction", template="Sentiment of: {{ text }} ||| {{ answer_choices[label_index] }}",
                           answer_choices="negative ||| positive")
TRAIN = [{"id": f"t{i}", "text": f"train review {i}", "label": LABELS[i % 3 == 0]} for i in range(30)]
TEST = [{"id": "a", "text": "a moving film", "label": "positive"}, {"id": "b", "text": "dull", "label": "negative"}]


@pytest.mark.parametrize("shots", [1, 2, 4, 5])
def test_demonstrations_are_balanced_across_labels_and_seeded(shots):
    picked = pick_demonstrations(TRAIN, LABELS, shots, seed=3)
    counts = [sum(row["label"] == label for row in picked) for label in LABELS]
    assert sum(counts) == shots and max(counts) - min(counts) <= 1  # 10 of the 30 are positive
    assert len({row["id"] for row in picked}) == shots
    assert picked == pick_demonstrations(TRAIN, LABELS, shots, seed=3)
    ids = {seed: [r["id"] for r in pick_demonstrations(TRAIN, LABELS, 4, seed=seed)] for seed in (3, 4)}
    assert ids[3] != ids[4]


def test_too_few_rows_of_a_label_is_named():
    with pytest.raises(TunelabError, match="more train rows labelled 'positive' than the 10 there are"):
        pick_demonstrations(TRAIN, LABELS, 22, seed=0)


def test_few_shot_demonstrations_are_earlier_chat_turns_shared_by_every_row(tiny_tokenizer):
    demos = pick_demonstrations(TRAIN, LABELS, 2, seed=0)
    prompts = build_prompts(TEST, INSTRUCTION, LABELS, tiny_tokenizer, demos)
    first, second = (p.text for p in prompts)
    solved = "".join(f"<|im_start|>user\nSentiment of: {d['text']}<|im_end|>\n<|im_start|>assistant\n{d['label']}<|im_end|>\n"
                     for d in demos)
    assert first == f"{solved}<|im_start|>user\nSentiment of: a moving film<|im_end|>\n<|im_start|>assistant\n"
    assert second.startswith(solved) and second.endswith("Sentiment of: dull<|im_end|>\n<|im_start|>assistant\n")
    assert prompts[0].choices == LABELS and prompts[0].label == "positive"


def test_without_a_chat_template_demonstrations_are_solved_blocks(tiny_tokenizer):
    plain = PromptConfig(name="plain", template="Review: {{ text }}\nSentiment: ||| {{ answer_choices[label_index] }}",
                         answer_choices="negative ||| positive", use_chat_template=False, system="Classify reviews.")
    prompt = build_prompts(TEST[:1], plain, LABELS, tiny_tokenizer, [TRAIN[0]])[0]
    assert prompt.text == "Classify reviews.\n\nReview: train review 0\nSentiment: positive\n\nReview: a moving film\nSentiment:"


def test_a_template_without_answer_choices_is_refused(tiny_tokenizer):
    bare = PromptConfig(name="bare", template="Sentiment of: {{ text }} ||| {{ label }}")
    with pytest.raises(TunelabError, match=r"prompt 'bare': no answer_choices; scoring needs one choice per label"):
        build_prompts(TEST, bare, LABELS, tiny_tokenizer)


def test_labels_without_a_choice_are_named_with_the_row(tiny_tokenizer):
    short = PromptConfig(name="short", template="{{ text }} ||| x", answer_choices="bad")
    with pytest.raises(TunelabError, match=r"prompt 'short': answer_choices gives 1 choices \['bad'\] on test row a, "
                                           r"but data.labels has 2"):
        build_prompts(TEST, short, LABELS, tiny_tokenizer)
    with pytest.raises(TunelabError, match=r"row c: label 'neutral' is not in data.labels"):
        build_prompts([{"id": "c", "text": "meh", "label": "neutral"}], INSTRUCTION, LABELS, tiny_tokenizer)


def test_a_prompt_longer_than_the_context_is_named(tiny_model_dir, tiny_tokenizer):
    context = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.max_position_embeddings
    long_row = {"id": "long", "text": "word " * context, "label": "negative"}
    prompts = build_prompts([TEST[0], long_row], INSTRUCTION, LABELS, tiny_tokenizer)
    with pytest.raises(TunelabError, match=rf"prompt 'instruction': test row long needs \d+ prompt tokens \+ 4 for "
                                           rf"the answer, more than the model's context of {context}"):
        tokenize_prompts(prompts, tiny_tokenizer, False, 4, context, "instruction")
    assert len(tokenize_prompts(prompts[:1], tiny_tokenizer, False, 4, context, "instruction")) == 1
