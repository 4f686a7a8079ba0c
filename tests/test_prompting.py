"""Prompting methods rendered through the format machinery: few-shot demonstrations, choices, errors."""

import pytest
from transformers import AutoModelForCausalLM

from tunelab.config.schema import PromptConfig, PromptingConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.evaluator import tokenize_prompts
from tunelab.evaluation.parsing import parse_choice
from tunelab.evaluation.prompting import build_chat_prompts, build_prompts, method_template, pick_demonstrations
from tunelab.evaluation.tasks import TASKS

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


THREE = ["neg", "neu", "pos"]
MINE = PromptConfig(name="mine", template="Tone of: {{ text }}\n||| {{ answer_choices[label_index] }}",
                    answer_choices="neg ||| neu ||| pos")
ROW = [{"id": "a", "text": "an ok film", "label": "neu"}]
CLASSIFY = TASKS["classification"]


def method(name: str, **options) -> PromptingConfig:
    return PromptingConfig(method=name, max_new_tokens=8, scoring=["generate"] if "chain" in name else ["choice"], **options)


def test_a_method_given_a_template_reads_it_and_one_without_reads_the_training_prompt():
    assert method_template(MINE, method("zero_shot", template=INSTRUCTION), CLASSIFY) is INSTRUCTION
    assert method_template(MINE, method("few_shot", shots=2), CLASSIFY) is MINE
    assert method_template(MINE, method("zero_shot", template=INSTRUCTION, persona="Be terse."), CLASSIFY) is INSTRUCTION


def test_role_prompting_without_a_template_is_the_training_prompt_with_the_persona(tiny_tokenizer):
    role = method_template(MINE, method("zero_shot", persona="You judge the tone of film reviews."), CLASSIFY)
    assert (role.name, role.system, role.template) == ("mine+persona", "You judge the tone of film reviews.", MINE.template)
    [prompt] = build_prompts(ROW, role, THREE, tiny_tokenizer)
    assert prompt.text == ("<|im_start|>system\nYou judge the tone of film reviews.<|im_end|>\n"
                           "<|im_start|>user\nTone of: an ok film<|im_end|>\n<|im_start|>assistant\n")


def test_chain_of_thought_without_a_template_asks_for_reasoning_ending_with_the_parsed_marker(tiny_tokenizer):
    reasoning = method_template(MINE, method("chain_of_thought"), CLASSIFY)
    assert reasoning.name == "mine+reasoning"
    [prompt] = build_prompts(ROW, reasoning, THREE, tiny_tokenizer)
    assert prompt.text == ('<|im_start|>user\nTone of: an ok film\nThink it through in one or two short sentences, then '
                           'end with a line "Answer: <choice>", <choice> being one of: neg, neu, pos.<|im_end|>\n'
                           "<|im_start|>assistant\n")
    assert parse_choice("It is neither good nor bad; pos and neg balance.\nAnswer: neu", prompt.choices) == "neu"
    demonstration = [{"id": "d", "text": "awful", "label": "neg"}]
    [with_shot] = build_prompts(ROW, reasoning, THREE, tiny_tokenizer, demonstration)
    assert "<|im_start|>assistant\nAnswer: neg<|im_end|>" in with_shot.text  # its target ends with the marker too


GSM = PromptConfig(name="gsm", template="Q: {{ question }}\n||| {{ references[0] }}")
PROBLEMS = [{"id": f"p{i}", "question": f"{i} + 1?", "references": [f"{i} + 1 = {i + 1}\n#### {i + 1}"]} for i in range(6)]


def test_a_generative_prompt_is_the_rows_chat_after_the_demonstrations_and_its_reasoning_ends_with_the_marker(
        tiny_tokenizer):
    shots = pick_demonstrations(PROBLEMS[1:], [], 2, seed=5)  # no labels: a seeded sample
    assert shots == pick_demonstrations(PROBLEMS[1:], [], 2, seed=5) and len({row["id"] for row in shots}) == 2
    assert shots != pick_demonstrations(PROBLEMS[1:], [], 2, seed=6)
    reasoning = method_template(GSM, method("chain_of_thought"), TASKS["math"])
    [prompt] = build_chat_prompts(PROBLEMS[:1], reasoning, tiny_tokenizer, shots[:1])
    solved = shots[0]
    assert prompt.text == (f"<|im_start|>user\nQ: {solved['question']}\n{TASKS['math'].reasoning}<|im_end|>\n"
                           f"<|im_start|>assistant\nAnswer: {solved['references'][0]}<|im_end|>\n"
                           f"<|im_start|>user\nQ: 0 + 1?\n{TASKS['math'].reasoning}<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.references == ["0 + 1 = 1\n#### 1"]
    assert TASKS["math"].read_answer("0 + 1 makes one.\nAnswer: 1") == "1"
    with pytest.raises(TunelabError, match="few-shot: 9 demonstrations need more than the 5 train rows"):
        pick_demonstrations(PROBLEMS[1:], [], 9, seed=0)


def test_a_multi_turn_row_keeps_its_earlier_turns_and_its_own_system_message(tiny_tokenizer):
    chat = PromptConfig(name="chat", template="{{ prompt }}\n||| {{ references[0] }}", system="template system")
    row = {"id": "c", "history": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}], "prompt": "bye", "references": ["goodbye"]}
    [prompt] = build_chat_prompts([row], chat, tiny_tokenizer)
    assert prompt.text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                           "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nbye<|im_end|>\n<|im_start|>assistant\n")
    [plain] = build_chat_prompts([{**row, "history": row["history"][1:]}], chat, tiny_tokenizer)
    assert plain.text.startswith("<|im_start|>system\ntemplate system<|im_end|>\n<|im_start|>user\nhi")
