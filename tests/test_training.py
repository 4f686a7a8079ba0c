"""Every strategy trains the tiny model: loss falls, exactly the intended parameters change,
the trainable count is the strategy's formula, and the saved artifact reloads the same."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from training_helpers import formatted_rows, snapshot, strategy_from_conf, tiny_train_config, train_tiny
from transformers import TrainerCallback

from tunelab.errors import TunelabError
from tunelab.models.qat import qat_convert
from tunelab.training.run import build_trainer, collator, keeps_loss_logits_only, loss_at_kept_positions, packs, token_dataset
from tunelab.training.strategies import STRATEGIES, save_trained, trainable_model

LEARNING_RATES = {"full": 3e-3, "qat": 3e-3, "lora": 1e-2, "qlora": 1e-2, "prompt_tuning": 3e-2,
                  "prefix_tuning": 3e-2, "ia3": 3e-2}


def linear(model, suffix):
    return [m for n, m in model.named_modules() if n.endswith(suffix) and hasattr(m, "in_features")]


def expected_trainable(strategy, base) -> int:
    """Each strategy's parameter formula, computed from the base model's shapes."""
    config = base.config
    if strategy.name in ("full", "qat"):
        return sum(p.numel() for p in base.parameters())
    if strategy.name in ("lora", "qlora"):
        return sum(strategy.lora.r * (m.in_features + m.out_features)
                   for target in strategy.lora.target_modules for m in linear(base, f".{target}"))
    if strategy.name == "ia3":
        return sum(m.in_features if target in strategy.ia3.feedforward_modules else m.out_features
                   for target in strategy.ia3.target_modules for m in linear(base, f".{target}"))
    if strategy.name == "prompt_tuning":
        return strategy.prompt_tuning.num_virtual_tokens * config.hidden_size
    kv_width = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    return strategy.prefix_tuning.num_virtual_tokens * config.num_hidden_layers * 2 * kv_width


def probe_logits(model, tokenizer):
    model.eval()
    with torch.no_grad():
        return model(**tokenizer("Review: a funny film\nSentiment?", return_tensors="pt")).logits


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_trains_exactly_its_parameters_and_reloads(name, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    strategy = strategy_from_conf(name)
    rows = formatted_rows(AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer, tokenizer = train_tiny(tiny_model_dir, tmp_path / "ckpt", strategy, rows,
                                    tiny_train_config(learning_rate=LEARNING_RATES.get(name, 1e-2)))
    loss_before = trainer.evaluate()["eval_loss"]
    before = snapshot(trainer.model)
    trainer.train()
    loss_after = trainer.evaluate()["eval_loss"]
    assert math.isfinite(loss_after) and loss_after < loss_before

    model = trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) == expected_trainable(strategy, base)
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed == trainable, f"changed but frozen: {changed - trainable}; trainable but unchanged: {trainable - changed}"

    save_trained(model, tokenizer, strategy, tmp_path / "trained")
    if name == "qat":
        qat_convert(model, strategy.qat)  # what the saved artifact must reload as
    expected = probe_logits(model, tokenizer)
    saved = {p.name for p in (tmp_path / "trained").iterdir()}
    assert not any(s.endswith((".bin", ".pt", ".pth")) for s in saved)
    full_weights = name in ("full", "qat")
    assert ("model.safetensors" if full_weights else "adapter_model.safetensors") in saved
    if full_weights:  # the Trainer turns the KV cache off; the saved model generates with it
        assert json.loads((tmp_path / "trained/config.json").read_text())["use_cache"] is True
    script = (
        "import sys, torch; from pathlib import Path; from transformers import AutoTokenizer\n"
        "from tunelab.models.loading import load_trained\n"
        f"m = load_trained(Path({str(tmp_path / 'trained')!r}), Path({str(tiny_model_dir)!r})).eval()\n"
        f"t = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r})\n"
        "with torch.no_grad(): torch.save(m(**t('Review: a funny film\\nSentiment?', return_tensors='pt')).logits, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "logits.pt")], check=True, capture_output=True)
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), expected, atol=reload_tolerance(name))


def reload_tolerance(name: str) -> float:
    """Exact but for QLoRA on CPU: the model that trained keeps bitsandbytes' training layout
    (tunelab.training.strategies.adapt_qlora), while the reloaded one, only evaluated, is repacked
    on CPUs with AVX-512 BF16 into the inference layout, its scales rounded to bf16: ~2e-3 apart."""
    return 1e-2 if name == "qlora" and not torch.cuda.is_available() else 1e-5


def test_gradient_accumulation_matches_the_larger_batch(tiny_model_dir, tmp_path):
    """Loss is normalised over all completion tokens of the accumulated batch, not averaged per
    micro-batch (the HF pitfall): 1 step of 4×2 must equal 1 step of 8×1."""
    from transformers import AutoTokenizer

    from tunelab.prompts.tokenization import tokenize_example

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    completions = ["positive<|im_end|>", "a moving film, funny and warm<|im_end|>", "negative<|im_end|>",
                   "dull<|im_end|>", "tedious from start to end, limp<|im_end|>", "sharp<|im_end|>",
                   "wonderful acting<|im_end|>", "awful<|im_end|>"]
    rows = []
    for i, completion in enumerate(completions):
        tokens = tokenize_example(tokenizer, f"Review {i}:\n", completion, 64, add_special_tokens=False)
        rows.append({"input_ids": tokens.input_ids, "completion_mask": tokens.completion_mask})
    assert len({sum(r["completion_mask"]) for r in rows}) > 3  # unequal token counts make the pitfall bite

    strategy = strategy_from_conf("full")
    results = []
    for batch, accumulation in ((8, 1), (4, 2)):
        train = tiny_train_config(max_steps=1, batch_size=batch, gradient_accumulation_steps=accumulation,
                                  max_grad_norm=0.0)
        gradients = CaptureGradients()
        trainer, _ = train_tiny(tiny_model_dir, tmp_path / f"b{batch}", strategy, rows, train, [gradients])
        results.append((trainer.train().training_loss, gradients.captured))
    (loss_big, gradients_big), (loss_accumulated, gradients_accumulated) = results
    assert loss_accumulated == pytest.approx(loss_big, rel=1e-5)
    for name, gradient in gradients_big.items():
        assert torch.allclose(gradient, gradients_accumulated[name], rtol=1e-4, atol=1e-8), name


class CaptureGradients(TrainerCallback):
    """The accumulated gradients, just before the optimizer uses them."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.captured = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_target_modules_that_match_nothing_are_named(tiny_model_dir):
    from dataclasses import replace

    lora = strategy_from_conf("lora")
    broken = replace(lora, lora=replace(lora.lora, target_modules=["q_proj", "query_key_value"]))
    with pytest.raises(TunelabError, match=r"strategy.lora.target_modules: \['query_key_value'\] match no linear layer"):
        trainable_model(tiny_model_dir, broken, gradient_checkpointing=False)


def test_data_with_no_loss_tokens_is_refused_before_training():
    rows = [{"input_ids": [1, 2, 3], "completion_mask": [0, 0, 0]}]
    with pytest.raises(TunelabError, match="no token carries loss"):
        token_dataset(rows, "train")


def test_precision_that_needs_a_gpu_is_refused_on_cpu(tiny_model_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(TunelabError, match="train.precision: bf16 needs a CUDA GPU"):
        build_trainer(None, None, tiny_train_config(precision="bf16"), [], [], tmp_path, [])


def test_qlora_learns_after_an_evaluation_with_the_gradients_it_had_before_it(tiny_model_dir):
    """The train stage evaluates before it trains (val_loss_before). On CPUs with AVX-512 BF16,
    bitsandbytes repacks 4-bit weights for its inference kernel on the first no-grad forward, and
    that kernel has no backward: training after it lost the gradient through every frozen 4-bit
    layer (torch warned "silently incorrect behavior"). Elsewhere the two passes agree anyway."""
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29]])

    def gradients(evaluate_first: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = trainable_model(tiny_model_dir, strategy_from_conf("qlora"), False)
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                model(input_ids=ids)
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}

    fresh, after_evaluation = gradients(False), gradients(True)
    assert any(g.abs().sum() > 0 for g in fresh.values())
    for name, gradient in fresh.items():  # the evaluation changes nothing a gradient depends on
        torch.testing.assert_close(after_evaluation[name], gradient, msg=name)


def test_a_packed_batch_is_the_padded_batch_without_its_padding_and_has_its_loss(tiny_model_dir, tiny_tokenizer):
    """Eight rows of different lengths: the packed row holds exactly the padded batch's real tokens and
    labels, token by token (so the same tokens carry the loss), and the model's loss on it is the
    padded batch's: no example attends to another (it would change the logits)."""
    from transformers import AutoModelForCausalLM

    dataset = token_dataset(formatted_rows(tiny_tokenizer), "train")
    features = [dataset[i] for i in range(len(dataset))]
    padded, packed = collator(tiny_tokenizer, packed=False)(features), collator(tiny_tokenizer, packed=True)(features)
    assert len({len(feature["input_ids"]) for feature in features}) > 2  # a batch with padding to drop
    real = padded["attention_mask"].bool()
    assert packed["input_ids"].shape == (1, int(real.sum()))
    assert torch.equal(packed["input_ids"][0], padded["input_ids"][real])
    assert torch.equal(packed["labels"][0], padded["labels"][real])
    assert "attention_mask" not in packed
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()  # as the Trainer calls it; no dropout
    assert model.config.use_cache  # the case that needs the collator's use_cache=False
    with torch.no_grad():
        assert model(**packed).loss.item() == pytest.approx(model(**padded).loss.item(), rel=1e-5)
        crossing = {**packed, "position_ids": torch.arange(packed["input_ids"].shape[1])[None]}  # one long sequence
        assert model(**crossing).loss.item() != pytest.approx(model(**padded).loss.item(), rel=1e-5)


def test_prompt_learning_strategies_train_on_padded_batches(tiny_model_dir):
    packed_config = tiny_train_config(padding_free=True)
    assert packs(trainable_model(tiny_model_dir, strategy_from_conf("lora"), False), packed_config)
    assert not packs(trainable_model(tiny_model_dir, strategy_from_conf("prompt_tuning"), False), packed_config)
    assert not packs(trainable_model(tiny_model_dir, strategy_from_conf("lora"), False), tiny_train_config(padding_free=False))


def test_training_projects_only_the_loss_positions_with_the_models_own_loss_and_gradients(tiny_model_dir, tiny_tokenizer):
    """The padded batch as the train stage feeds it: only positions whose next token carries loss are
    projected onto the vocabulary, and the loss over them and every parameter's gradient are the ones the
    model computes over the whole batch (the same tokens carry the loss, counted the Trainer's way)."""
    from transformers import AutoModelForCausalLM

    dataset = token_dataset(formatted_rows(tiny_tokenizer), "train")
    features = [dataset[i] for i in range(len(dataset))]
    padded = collator(tiny_tokenizer, packed=False)(features)
    kept = collator(tiny_tokenizer, packed=False, loss_logits_only=True)(features)
    assert 0 < len(kept["logits_to_keep"]) < padded["input_ids"].shape[1] / 2
    assert int(kept["labels"][:, 1:].ne(-100).sum()) == int(padded["labels"][:, 1:].ne(-100).sum())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()

    def loss_and_gradients(compute):
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    def only_kept():
        outputs = model(**{k: v for k, v in kept.items() if k != "labels"})
        assert outputs.logits.shape[:2] == (len(features), len(kept["logits_to_keep"]))
        return loss_at_kept_positions(outputs, kept["labels"])

    full_loss, full_gradients = loss_and_gradients(lambda: model(**padded).loss)
    kept_loss, kept_gradients = loss_and_gradients(only_kept)
    assert kept_loss == pytest.approx(full_loss, rel=1e-5)
    assert full_gradients.keys() == kept_gradients.keys()
    for name, gradient in full_gradients.items():
        assert torch.allclose(kept_gradients[name], gradient, rtol=1e-4, atol=1e-7), name
    assert keeps_loss_logits_only(trainable_model(tiny_model_dir, strategy_from_conf("lora"), False), packed=False)
    assert not keeps_loss_logits_only(trainable_model(tiny_model_dir, strategy_from_conf("lora"), False), packed=True)
    assert not keeps_loss_logits_only(trainable_model(tiny_model_dir, strategy_from_conf("prompt_tuning"), False), False)


class CountEvaluations(TrainerCallback):
    def __init__(self):
        self.count = 0

    def on_evaluate(self, args, state, control, **kwargs):
        self.count += 1


@pytest.mark.parametrize("max_steps, patience, passes", [
    (6, 3, 0),  # early stopping loaded the best evaluated checkpoint: its loss is on record
    (6, None, 0),  # the final step was evaluated
    (5, None, 0),  # off the eval_steps grid: the Trainer evaluates the last step too
])
def test_the_kept_models_val_loss_is_the_one_the_trainer_recorded(tiny_model_dir, tmp_path, max_steps,
                                                                            patience, passes):
    from transformers import AutoTokenizer

    from tunelab.training.run import kept_val_loss

    counter = CountEvaluations()
    trainer, _ = train_tiny(tiny_model_dir, tmp_path / "ckpt", strategy_from_conf("lora"),
                            formatted_rows(AutoTokenizer.from_pretrained(tiny_model_dir)),
                            tiny_train_config(max_steps=max_steps, eval_steps=3, early_stopping_patience=patience),
                            [counter])
    trainer.train()
    before = counter.count
    kept = kept_val_loss(trainer)
    assert counter.count - before == passes
    assert kept == pytest.approx(trainer.evaluate()["eval_loss"], abs=1e-6)  # the model the stage saves


def test_profiling_a_few_steps_leaves_the_process_environment_as_it_was(tiny_model_dir, tmp_path, monkeypatch):
    """The train stage's work also runs in-process (tests, notebooks): its profiler may quiet kineto,
    but must not leave that setting to every later subprocess of the caller."""
    from transformers import AutoTokenizer

    from tunelab.training.callbacks import ProfileSteps

    monkeypatch.delenv("KINETO_LOG_LEVEL", raising=False)
    before = dict(os.environ)
    trace = tmp_path / "trace.json.gz"
    trainer, _ = train_tiny(tiny_model_dir, tmp_path / "ckpt", strategy_from_conf("lora"),
                            formatted_rows(AutoTokenizer.from_pretrained(tiny_model_dir)),
                            tiny_train_config(max_steps=4, eval_steps=4), [ProfileSteps(1, trace, first_step=1)])
    trainer.train()
    assert trace.is_file()  # it did profile
    assert dict(os.environ) == before
