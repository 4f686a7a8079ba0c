"""The prompt search's parts: its grid and budget, the winner, nearest-neighbour demonstrations
and contextual calibration (the stage itself: tests/test_evaluate_stage.py)."""

import dataclasses
import math

import pytest
import torch
from configs import conf_section
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.config.schema import PromptConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.demonstrations import choose_demonstrations, embed, nearest
from tunelab.evaluation.evaluator import EvalSettings, Scorer
from tunelab.evaluation.prompt_search import best, candidate_grid, optimized_method, searched_templates, winner_prompting
from tunelab.evaluation.scoring import calibrated, content_free_bias
from tunelab.evaluation.tasks import TASKS

LABELS = ["negative", "positive"]
CLASSIFY = TASKS["classification"]


def search_inputs(*overrides: str):
    settings = conf_section("eval", overrides)
    return settings, settings.prompting[optimized_method(settings)], conf_section("prompt", overrides)


def test_contextual_calibration_flips_a_prediction_that_the_prompts_bias_explains():
    """The row leans "negative" (0.6 : 0.4), but the prompt alone says "negative" 0.9 : 0.1: divided
    out, the row's evidence favours "positive" (0.4 / 0.1 > 0.6 / 0.9)."""
    row = torch.tensor([[math.log(0.6), math.log(0.4)]])
    content_free = torch.tensor([[math.log(0.9), math.log(0.1)], [math.log(0.45), math.log(0.05)]])  # unnormalised too
    bias = content_free_bias(content_free)
    assert bias.exp().tolist() == pytest.approx([0.9, 0.1])
    assert row.argmax(1).item() == 0 and calibrated(row, bias).argmax(1).item() == 1
    assert calibrated(row, torch.log(torch.tensor([0.5, 0.5]))).argmax(1).item() == 0  # no bias: no change


def test_the_grid_searches_both_templates_every_shot_count_both_selections_and_calibration():
    settings, optimized, training = search_inputs("eval.prompt_search.candidates=null")
    templates = searched_templates(training, settings, CLASSIFY)
    assert [t.name for t in templates] == ["sentiment_instruction", "sentiment_role"]
    grid = candidate_grid(templates, settings, optimized)
    assert len(grid) == 2 * (1 + 2 * 2) * 2
    assert {(c.prompting.method, c.prompting.shots) for c in grid} == {("zero_shot", 0)} | {
        ("few_shot", k) for k in (1, 2)}
    assert {c.prompting.selection for c in grid if c.prompting.shots} == {"balanced", "nearest"}
    assert len({c.name for c in grid}) == len(grid)
    assert grid[0].name == "sentiment_instruction, 0 shots" and grid[-1].name == "sentiment_role, 2 nearest, calibrated"
    # the default budget (sized for 2 CPU cores): 8 of the 20, each template's plain zero-shot prompt among them
    settings, _, _ = search_inputs()
    sampled = {c.name for c in candidate_grid(templates, settings, optimized)}
    assert len(sampled) == 8 and {"sentiment_instruction, 0 shots", "sentiment_role, 0 shots"} <= sampled


def test_a_budget_samples_the_grid_by_seed_and_keeps_every_zero_shot_candidate():
    settings, optimized, training = search_inputs("eval.prompt_search.candidates=7")
    templates = searched_templates(training, settings, CLASSIFY)
    grid = [c.name for c in candidate_grid(templates, settings, optimized)]
    assert len(grid) == 7 and {"sentiment_instruction, 0 shots", "sentiment_role, 0 shots"} <= set(grid)
    assert grid == [c.name for c in candidate_grid(templates, settings, optimized)]  # seeded
    other_seed = dataclasses.replace(settings, seed=1)
    assert grid != [c.name for c in candidate_grid(templates, other_seed, optimized)]
    too_small = dataclasses.replace(settings, prompt_search=dataclasses.replace(settings.prompt_search, candidates=1))
    with pytest.raises(TunelabError, match="candidates: 1 is fewer than the 2 zero-shot candidates"):
        candidate_grid(templates, too_small, optimized)


def test_a_generative_task_searches_without_calibration():
    settings, optimized, training = search_inputs("data=gsm8k")
    grid = candidate_grid(searched_templates(training, settings, TASKS["math"]), settings, optimized)
    assert grid and not any(c.prompting.calibrate for c in grid)
    assert {c.prompting.shots for c in grid} == {0, 2} and all(c.prompting.scoring == ["generate"] for c in grid)


def test_the_winner_is_the_best_val_score_ties_going_to_fewer_demonstrations():
    table = [{"name": "a", "shots": 4, "score": 0.8}, {"name": "b", "shots": 0, "score": 0.8},
             {"name": "c", "shots": 0, "score": 0.7}, {"name": "d", "shots": 0, "score": 0.8}]
    assert best(table)["name"] == "b"
    settings, optimized, training = search_inputs()
    winner = candidate_grid(searched_templates(training, settings, CLASSIFY), settings, optimized)[-1]
    template, prompting = winner_prompting(winner.to_json(), optimized)
    assert template == winner.template and prompting == winner.prompting  # what evaluate scores is what won


def test_nearest_puts_the_most_similar_last():
    pool = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]), dim=-1)
    assert nearest(torch.tensor([[0.9, 0.1]]), pool, 2) == [[2, 0]]
    assert nearest(torch.tensor([[0.0, 1.0]]), pool, 5) == [[0, 2, 1]]  # fewer pool rows than asked: all of them


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


TEMPLATE = PromptConfig(name="t", template="Review: {{ text }} ||| {{ answer_choices[label_index] }}",
                        answer_choices="negative ||| positive")
TRAIN = [{"id": f"t{i}", "text": text, "label": LABELS[i % 2]} for i, text in enumerate(
    ["a dull and tedious film", "the cast is wonderful", "limp plot, awful jokes", "funny and sharp writing",
     "my dog chased the postman down the street", "tedious"])]


def test_a_texts_vector_does_not_depend_on_the_lengths_batched_with_it(tiny):
    """The pool is embedded in batches of similar length (no padding to a long neighbour), each text's
    vector returned in its own place and the same as embedded alone."""
    model, tokenizer = tiny
    texts = [row["text"] for row in TRAIN]  # 1 to 9 words, in no order of length
    together = embed(model, tokenizer, texts, batch_size=3)
    alone = torch.cat([embed(model, tokenizer, [text], batch_size=1) for text in texts])
    assert torch.allclose(together, alone, atol=1e-5)


def test_nearest_demonstrations_come_from_the_models_own_embedding(tiny, capsys):
    """A row that repeats a train row's text has that row as its nearest, last, demonstration."""
    model, tokenizer = tiny
    _, optimized, _ = search_inputs()
    prompting = dataclasses.replace(optimized, method="few_shot", shots=3, selection="nearest")
    rows = [{"id": "q0", "text": TRAIN[4]["text"], "label": "negative"},
            {"id": "q1", "text": TRAIN[1]["text"], "label": "positive"}]
    shots = choose_demonstrations(prompting, TEMPLATE, TRAIN, rows, LABELS, 0, model, tokenizer, batch_size=4)
    # the pool and the rows, embedded under a progress bar (a minute of the default run)
    progress = capsys.readouterr().err
    assert "embedding for nearest demonstrations: 100%|" in progress and "| 8/8 [" in progress
    assert [[shot["id"] for shot in shots(row)][-1] for row in rows] == ["t4", "t1"]
    assert all(len(shots(row)) == 3 for row in rows)
    few = choose_demonstrations(dataclasses.replace(prompting, pool=2), TEMPLATE, TRAIN, rows, LABELS, 0, model,
                                tokenizer, batch_size=4)
    assert {shot["id"] for row in rows for shot in few(row)} <= {"t0", "t1"}  # only the pool is searched
    # the search asks again with other counts: the same pool and rows are embedded once, to the same picks
    embedded = {}
    for count in (3, 1, 2):
        again = choose_demonstrations(dataclasses.replace(prompting, shots=count), TEMPLATE, TRAIN, rows, LABELS, 0,
                                      model, tokenizer, batch_size=4, embedded=embedded)
        assert [[s["id"] for s in again(row)] for row in rows] == [[s["id"] for s in shots(row)][-count:] for row in rows]
    assert len(embedded) == 1
    choose_demonstrations(dataclasses.replace(prompting, pool=2), TEMPLATE, TRAIN, rows, LABELS, 0, model, tokenizer,
                          batch_size=4, embedded=embedded)
    assert len(embedded) == 2, "another pool is other texts: embedded anew"


def test_a_calibrated_scoring_predicts_the_likeliest_choice_once_the_content_free_bias_is_divided_out(tiny):
    model, tokenizer = tiny
    _, optimized, _ = search_inputs()
    scorer = Scorer(CLASSIFY, LABELS, model, tokenizer, EvalSettings(batch_size=4, length_normalize=False, seed=0))
    rows = [{"id": f"r{i}", "text": text, "label": LABELS[i % 2]} for i, text in enumerate(
        ["awful", "great fun", "so dull", "a delight", "boring"])]
    prompting = dataclasses.replace(optimized, method="few_shot", shots=2, calibrate=True)
    result = scorer.score(rows, TEMPLATE, prompting, TRAIN, "calibrated")
    bias = result.metrics["choice"]["calibration_bias"]
    assert list(bias) == LABELS and sum(bias.values()) == pytest.approx(1, abs=1e-3)
    for p in result.predictions:
        adjusted = {choice: p["choice"]["logprobs"][choice] - math.log(bias[choice]) for choice in LABELS}
        assert p["choice"]["prediction"] == max(adjusted, key=adjusted.get)
    plain = scorer.score(rows, TEMPLATE, dataclasses.replace(prompting, calibrate=False), TRAIN, "plain")
    assert [p["choice"]["logprobs"] for p in plain.predictions] == [p["choice"]["logprobs"] for p in result.predictions]
    assert "calibration_bias" not in plain.metrics["choice"]


def test_the_searchs_winner_when_it_is_the_zero_shot_prompt_reuses_its_scores_instead_of_running_the_model_again(tiny):
    model, tokenizer = tiny
    settings, optimized, _ = search_inputs()
    zero_shot = settings.prompting["zero_shot"]
    assert zero_shot.scoring == ["choice", "generate"]
    scorer = Scorer(CLASSIFY, LABELS, model, tokenizer, EvalSettings(batch_size=4, length_normalize=False, seed=0))
    rows = [{"id": f"r{i}", "text": text, "label": LABELS[i % 2]} for i, text in enumerate(["awful", "great fun", "dull"])]
    first = scorer.score(rows, TEMPLATE, zero_shot, TRAIN, "base/zero_shot")
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        winner = {"template": dataclasses.asdict(TEMPLATE), "shots": 0, "selection": None, "calibrate": False}
        template, prompting = winner_prompting(winner, optimized)
        again = scorer.score(rows, template, prompting, TRAIN, "base/optimized")
        assert not calls, "the same prompts: nothing runs the model again"
        assert again.metrics == {"choice": first.metrics["choice"]}
        assert again.predictions == [{k: v for k, v in p.items() if k != "generate"} for p in first.predictions]
        other = scorer.score(rows[:2], template, prompting, TRAIN, "base/optimized")  # other rows: scored
        assert calls and other.metrics["choice"]["examples"] == 2
    finally:
        hook.remove()


def test_the_proposers_meta_prompt_shows_the_template_and_every_instruction_worst_first():
    from tunelab.evaluation.proposer import meta_prompt

    text = meta_prompt("Review: {{ text }}", [("You are a critic.", 0.81), ("", 0.62), ("Be brief.", 0.9)], "accuracy")
    assert "Review: {{ text }}" in text
    assert text.index("(none)\naccuracy: 0.620") < text.index("You are a critic.\naccuracy: 0.810") \
        < text.index("Be brief.\naccuracy: 0.900")
