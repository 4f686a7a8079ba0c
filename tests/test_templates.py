import pytest
from configs import conf_section
from tiny_model import build_tokenizer

from tunelab.config.schema import FormatConfig, PromptConfig
from tunelab.errors import TunelabError
from tunelab.prompts.chat import model_completion, model_prompt
from tunelab.prompts.formatting import format_example
from tunelab.prompts.templates import PromptTemplate

LABELS = ["negative", "positive"]
EXAMPLE = {"id": "7", "text": "A wonderful film.", "label": "positive", "label_index": 1}


def template(source: str, choices: str | None = "negative ||| positive", **kwargs) -> PromptTemplate:
    return PromptTemplate(PromptConfig(name="t", template=source, answer_choices=choices, **kwargs))


def test_separator_splits_prompt_from_target_and_choices_follow_label_order():
    rendered = template("Review: {{ text }}\nSentiment? ||| {{ answer_choices[label_index] }}").render(EXAMPLE, "7")
    assert rendered.prompt == "Review: A wonderful film.\nSentiment?"
    assert rendered.target == "positive"
    assert rendered.choices == ["negative", "positive"]


def test_answer_choices_are_jinja_too():
    rendered = template("{{ text }} ||| {{ answer_choices[label_index] }}", "{{ 'bad' }} ||| {{ 'good' }}").render(EXAMPLE, "7")
    assert rendered.choices == ["bad", "good"] and rendered.target == "good"


def test_template_without_separator_has_no_target():
    assert template("Just {{ text }}").render(EXAMPLE, "7").target is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% if false %}x{% endif %} ||| positive", "renders an empty prompt on row 7"),
        ("{{ text }} ||| {{ '' }}", "renders an empty target"),
        ("{{ text }} ||| a ||| b", "2 '|||' separators"),
        ("{{ review }} ||| x", "'review' is undefined"),
    ],
)
def test_bad_templates_name_the_problem_and_row(source, message):
    with pytest.raises(TunelabError, match=message) as raised:
        template(source).render(EXAMPLE, "7")
    assert "prompt 't'" in str(raised.value)


def test_syntax_error_names_the_key_and_line():
    with pytest.raises(TunelabError, match=r"prompt.template line 2"):
        template("ok\n{{ text ||| x")


def test_templates_are_sandboxed():
    with pytest.raises(TunelabError, match="unsafe"):
        template("{{ text.__class__.__mro__[1].__subclasses__() }} ||| x").render(EXAMPLE, "7")


def test_chat_template_wraps_the_prompt_as_a_user_turn(tiny_tokenizer):
    text = model_prompt(tiny_tokenizer, "Classify: great", system="You are a critic.", use_chat_template=True)
    assert text == (
        "<|im_start|>system\nYou are a critic.<|im_end|>\n"
        "<|im_start|>user\nClassify: great<|im_end|>\n<|im_start|>assistant\n"
    )
    assert model_completion(tiny_tokenizer, "positive", use_chat_template=True) == "positive<|im_end|>"


def test_plain_prompt_bypasses_the_chat_template(tiny_tokenizer):
    assert model_prompt(tiny_tokenizer, "Sentiment:", system=None, use_chat_template=False) == "Sentiment:"
    assert model_completion(tiny_tokenizer, "positive", use_chat_template=False) == " positive<|im_end|>"


def test_missing_chat_template_is_a_clear_error():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(TunelabError, match="no chat template"):
        model_prompt(tokenizer, "x", system=None, use_chat_template=True)


def test_formatted_row_carries_text_tokens_and_a_loss_mask_on_the_completion(tiny_tokenizer):
    prompt = PromptConfig(name="t", template="Review: {{ text }} ||| {{ answer_choices[label_index] }}",
                          answer_choices="negative ||| positive")
    example = {"id": "7", "text": "A wonderful film.", "label": "positive"}
    row, tokens = format_example(example, LABELS, PromptTemplate(prompt), prompt, FormatConfig(max_length=128), tiny_tokenizer)
    assert row["prompt"].endswith("<|im_start|>assistant\n") and row["completion"] == "positive<|im_end|>"
    completion_ids = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
    assert tiny_tokenizer.decode(completion_ids) == "positive<|im_end|>"
    assert tiny_tokenizer.decode(row["input_ids"]) == row["prompt"] + row["completion"]
    assert row["input_ids"][-1] == tiny_tokenizer.eos_token_id and not tokens.truncated


def test_label_outside_the_configured_labels_is_named(tiny_tokenizer):
    prompt = PromptConfig(name="t", template="{{ text }} ||| x")
    with pytest.raises(TunelabError, match="row 9: label 'neutral'"):
        format_example({"id": "9", "text": "meh", "label": "neutral"}, LABELS, PromptTemplate(prompt), prompt,
                       conf_section("format"), tiny_tokenizer)
