"""Deployable variants on a tiny trained model: made, saved, reloaded in a fresh process.

Where a method reloads exactly (merged, int8_dynamic, bitsandbytes int8, torchao int8 weight-
only) the fresh process must give the same logits and greedy tokens as the model made in
memory; bitsandbytes NF4 repacks its 4-bit weights for the CPU on load, so its logits are
held to 0.05 (the tiny model's logits are of order 1) and not to identical tokens.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from configs import conf_section
from training_helpers import strategy_from_conf
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.deploy.methods import METHODS, make_variant, quantization_config, unavailable_reason
from tunelab.models.loading import int8_dynamic, load_trained, merged_model
from tunelab.paths import PATHS, Paths
from tunelab.training.strategies import save_trained

PROBE = [[1, 5, 9, 20, 33, 7, 12, 40]]
SETTINGS = conf_section("quantize")
KEEP_FLOAT = SETTINGS.int8_dynamic_keep_float
FRESH_PROCESS = """
import sys, torch
from tunelab.models.loading import load_deployed
model = load_deployed(__import__("pathlib").Path(sys.argv[1]))
ids = torch.tensor({probe})
with torch.no_grad():
    logits = model(input_ids=ids).logits
    tokens = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
torch.save({{"logits": logits, "tokens": tokens}}, sys.argv[2])
""".format(probe=PROBE)


def trained_folder(base_dir: Path, folder: Path, strategy_name: str) -> Path:
    """A trained artifact as the train stage saves it, with non-zero adapter weights so merging matters."""
    from tunelab.training.strategies import trainable_model

    strategy = strategy_from_conf(strategy_name)
    model = trainable_model(base_dir, strategy, gradient_checkpointing=False)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    save_trained(model, AutoTokenizer.from_pretrained(base_dir), strategy, folder)
    return folder


@pytest.fixture(scope="module")
def lora_setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    trained = trained_folder(tiny_model_dir, root / "trained", "lora")
    merged_dir = root / "merged"
    merged_model(trained, tiny_model_dir).save_pretrained(merged_dir)
    return tiny_model_dir, trained, merged_dir, root


def outputs(model) -> dict:
    ids = torch.tensor(PROBE)
    with torch.no_grad():
        return {"logits": model(input_ids=ids).logits,
                "tokens": model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)}


def fresh_process_outputs(folder: Path, tmp: Path) -> dict:
    result_file = tmp / f"{folder.name}.pt"
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(folder), str(result_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return torch.load(result_file)


def test_merging_the_adapter_keeps_the_outputs(lora_setup):
    base_dir, trained, merged_dir, _ = lora_setup
    adapter = outputs(load_trained(trained, base_dir).eval())
    merged = outputs(AutoModelForCausalLM.from_pretrained(merged_dir).eval())
    assert torch.allclose(adapter["logits"], merged["logits"], atol=1e-4)
    assert torch.equal(adapter["tokens"], merged["tokens"])
    plain_base = outputs(AutoModelForCausalLM.from_pretrained(base_dir).eval())
    assert not torch.allclose(plain_base["logits"], merged["logits"], atol=1e-3)  # the adapter did something


def in_memory(method: str, merged_dir: Path):
    if method == "merged":
        return AutoModelForCausalLM.from_pretrained(merged_dir)
    if method == "int8_dynamic":
        return int8_dynamic(AutoModelForCausalLM.from_pretrained(merged_dir), KEEP_FLOAT)
    return AutoModelForCausalLM.from_pretrained(merged_dir, quantization_config=quantization_config(method),
                                                device_map={"": "cpu"})


# every registered method that applies to a LoRA model on this machine (bf16/fp16 need CUDA, qat strategy=qat), but
# the GGUF exports: llama.cpp's converter knows BPE tokenizers by the hash of their output, and the tiny model's is
# made in the fixture (the GGUF tests below give their model a sentencepiece tokenizer)
ROUND_TRIP = [m for m in METHODS.names() if unavailable_reason(m, "lora", cuda=torch.cuda.is_available()) is None
              and METHODS[m].loader != "gguf" and not m.startswith("wanda")]  # wanda: its own tests below
TOLERANCE = {"nf4": 0.05}  # the others reload exactly


@pytest.mark.parametrize("method", ROUND_TRIP)
def test_variant_round_trip_in_a_fresh_process(lora_setup, method):
    tolerance = TOLERANCE.get(method, 0.0)
    base_dir, trained, merged_dir, root = lora_setup
    folder = root / method
    make_variant(method, merged_dir, trained, folder, AutoTokenizer.from_pretrained(base_dir), SETTINGS, PATHS)
    expected = outputs(in_memory(method, merged_dir).eval())
    reloaded = fresh_process_outputs(folder, root)
    assert (reloaded["logits"] - expected["logits"]).abs().max().item() <= tolerance + 1e-6
    if tolerance == 0.0:
        assert torch.equal(reloaded["tokens"], expected["tokens"])
    reference = outputs(AutoModelForCausalLM.from_pretrained(merged_dir).eval())["logits"]
    if method != "merged":  # quantized: close to the float model, not equal
        assert 0 < (reloaded["logits"] - reference).abs().max().item() < 0.5


@pytest.mark.parametrize("method", ["merged", "int8_dynamic"])
def test_prompt_tuning_keeps_its_adapter_beside_the_quantized_base(tiny_model_dir, tmp_path, method):
    trained = trained_folder(tiny_model_dir, tmp_path / "trained", "prompt_tuning")
    merged_dir = tmp_path / "merged"
    merged_model(trained, tiny_model_dir).save_pretrained(merged_dir)
    make_variant(method, merged_dir, trained, tmp_path / "pt", AutoTokenizer.from_pretrained(tiny_model_dir),
                 SETTINGS, PATHS)
    assert (tmp_path / "pt/adapter/adapter_config.json").is_file()
    expected = load_trained(trained, tiny_model_dir).eval()
    if method == "int8_dynamic":  # PEFT cannot load onto quantized modules: found by a sweep
        int8_dynamic(expected.get_base_model(), KEEP_FLOAT, inplace=True)
    with torch.no_grad():
        logits = expected(input_ids=torch.tensor(PROBE)).logits
    assert torch.allclose(fresh_process_outputs(tmp_path / "pt", tmp_path)["logits"], logits, atol=1e-5)


def test_int8_dynamic_leaves_the_named_layers_in_float(lora_setup):
    _, _, merged_dir, _ = lora_setup
    model = int8_dynamic(AutoModelForCausalLM.from_pretrained(merged_dir), KEEP_FLOAT)
    kinds = {name.rsplit(".", 1)[-1]: type(module) for name, module in model.named_modules()
             if name.endswith(("q_proj", "down_proj", "lm_head"))}
    assert kinds["down_proj"] is torch.nn.Linear and kinds["lm_head"] is torch.nn.Linear
    assert kinds["q_proj"] is torch.ao.nn.quantized.dynamic.Linear


def test_variants_that_do_not_apply_say_why():
    assert "CUDA GPU only" in unavailable_reason("bf16", "lora", cuda=False)
    assert unavailable_reason("bf16", "lora", cuda=True) is None
    assert "applies to strategy=qat, this model was trained with lora" in unavailable_reason("qat", "lora", cuda=False)
    assert unavailable_reason("qat", "qat", cuda=False) is None
    assert unavailable_reason("int8_dynamic", "lora", cuda=False) is None


def sentencepiece_llama(folder: Path) -> Path:
    """A tiny random Llama with a sentencepiece tokenizer.model, which llama.cpp's converter reads as it is."""
    import sentencepiece
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(f"review {i}: the film was {'good' if i % 2 else 'bad'}, said reviewer {i % 7}.\n"
                              for i in range(300)))
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=120,
                                             model_type="bpe", minloglevel=2)
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text('{"eos_token": "</s>", "tokenizer_class": "LlamaTokenizer"}')
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(("method", "tolerance"), [("gguf_f16", 0.01), ("gguf_q8_0", 0.05)])
def test_a_gguf_export_by_llama_cpps_converter_reloads_close_to_the_float_model(tmp_path, method, tolerance):
    """The converter comes from the pinned llama-cpp-python sdist through pip; the GGUF is loaded back by
    transformers' GGUF loader, as the evaluate stage loads it. Logits of order 1: f16 within 0.01, q8_0 0.05."""
    from tunelab.models.loading import LOADERS

    merged_dir = sentencepiece_llama(tmp_path / "merged")
    method_entry = METHODS[method]
    recipe = {"method": method, "loader": method_entry.loader, "strategy": "lora", "gguf_file": "model.gguf"}
    method_entry.make(merged_dir, tmp_path / method / "model", recipe)
    assert (tmp_path / method / "model/Modelfile").read_text().splitlines()[1:] == ["FROM ./model.gguf",
                                                                                 'PARAMETER stop "</s>"']
    reloaded = outputs(LOADERS["gguf"](tmp_path / method, recipe).eval())["logits"]
    reference = outputs(AutoModelForCausalLM.from_pretrained(merged_dir).eval())["logits"]
    assert 0 < (reloaded - reference).abs().max().item() <= tolerance
    float_size = (merged_dir / "model.safetensors").stat().st_size
    assert (tmp_path / method / "model/model.gguf").stat().st_size < float_size * (0.6 if method == "gguf_f16" else 0.4)


def test_a_gguf_export_of_prompt_tuning_says_why_not():
    assert "virtual tokens cannot be merged" in unavailable_reason("gguf_q8_0", "prompt_tuning", cuda=False)
    assert unavailable_reason("gguf_q8_0", "lora", cuda=False) is None


@pytest.fixture(scope="module")
def calibration(lora_setup) -> dict:
    """A recipe's calibration: formatted train rows (token ids), as the quantize stage points Wanda to."""
    import json

    _, _, _, root = lora_setup
    torch.manual_seed(1)
    rows = [{"input_ids": torch.randint(3, 300, (24,)).tolist()} for _ in range(6)]
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"file": str(path), "rows": 4}


def input_norms(model, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Each Linear's input channels' summed squared activations over the rows: Wanda's ‖X‖² (torchao's), computed here."""
    norms, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            def observe(module, inputs, output, name=name):
                x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
                norms[name] = norms.get(name, 0) + (x ** 2).sum(dim=0)
            hooks.append(module.register_forward_hook(observe))
    with torch.no_grad():
        for ids in rows:
            model(input_ids=torch.tensor([ids]))
    for hook in hooks:
        hook.remove()
    return norms


def test_wanda_zeroes_the_weights_with_the_least_weight_times_activation(lora_setup, calibration):
    from tunelab.deploy.pruning import calibration_rows, wanda_export

    _, _, merged_dir, root = lora_setup
    wanda_export(None)(merged_dir, root / "wanda", {"sparsity": 0.3, "calibration": calibration})
    dense = AutoModelForCausalLM.from_pretrained(merged_dir)
    pruned_model = AutoModelForCausalLM.from_pretrained(root / "wanda")
    pruned = dict(pruned_model.named_parameters())
    norms = input_norms(dense, calibration_rows({"calibration": calibration}))
    assert len(norms) == 14  # 7 Linears in each of the 2 decoder layers
    for name, norm in norms.items():
        weight, kept = dense.get_submodule(name).weight.detach(), pruned[f"{name}.weight"].detach() != 0
        assert kept.float().mean().item() == pytest.approx(0.7, abs=1 / weight.numel())
        metric = weight.abs() * norm
        assert metric[kept].min() >= metric[~kept].max() - 1e-6  # the kept ones outrank every pruned one
        assert torch.equal(pruned[f"{name}.weight"][kept], weight[kept])  # and are not changed
    magnitude_kept = dense.model.layers[0].mlp.down_proj.weight.abs() >= dense.model.layers[0].mlp.down_proj.weight.abs(
    ).flatten().kthvalue(int(0.3 * 64 * 128)).values
    assert not torch.equal(magnitude_kept, pruned["model.layers.0.mlp.down_proj.weight"] != 0)  # activations mattered
    assert torch.equal(pruned_model.lm_head.weight, dense.lm_head.weight)  # the head (tied embeddings) is whole


def test_wanda_2_4_keeps_two_of_every_four_consecutive_input_weights(lora_setup, calibration):
    from tunelab.deploy.pruning import SEMI_STRUCTURED_BLOCK, wanda_export

    _, _, merged_dir, root = lora_setup
    wanda_export(SEMI_STRUCTURED_BLOCK)(merged_dir, root / "wanda_2_4", {"sparsity": 0.5, "calibration": calibration})
    pruned = AutoModelForCausalLM.from_pretrained(root / "wanda_2_4")
    for layer in pruned.model.layers:
        for weight in (layer.self_attn.q_proj.weight, layer.mlp.up_proj.weight, layer.mlp.down_proj.weight):
            groups = (weight.detach() != 0).reshape(weight.shape[0], -1, 4).sum(dim=-1)
            assert torch.equal(groups, torch.full_like(groups, 2))


def test_wanda_records_its_sparsity_and_calibration_and_refuses_prompt_learning(tmp_path):
    assert METHODS["wanda"].options(SETTINGS, PATHS) == {"sparsity": SETTINGS.wanda_sparsity, "calibration": {
        "file": "data/formatted/train.jsonl", "rows": SETTINGS.wanda_calibration_rows}}
    elsewhere = METHODS["wanda"].options(SETTINGS, Paths(tmp_path))  # a stage run on another project's paths
    assert elsewhere["calibration"]["file"] == str(tmp_path / "data/formatted/train.jsonl")
    assert METHODS["wanda_2_4"].options(SETTINGS, PATHS)["sparsity"] == 0.5
    assert unavailable_reason("wanda", "lora", cuda=False) is None
    assert "virtual tokens cannot be merged" in unavailable_reason("wanda_2_4", "prefix_tuning", cuda=False)


@pytest.mark.slow
def test_a_gguf_runs_natively_on_llama_cpp_and_decodes_what_transformers_decodes_from_it(tmp_path):
    """Where llama-cpp-python is installed (the optional extra): the benchmark's native decoding of an
    f16 GGUF gives transformers' greedy tokens from the same file, and its costs are measured."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[llama]')")
    from tunelab.benchmarking.native_gguf import greedy_token_times, load, measure_native
    from tunelab.models.loading import LOADERS

    merged_dir = sentencepiece_llama(tmp_path / "merged")
    with torch.no_grad():  # decisive logits, so f16 and fp32 kernels cannot flip a near-tie
        for parameter in (model := AutoModelForCausalLM.from_pretrained(merged_dir)).parameters():
            parameter.mul_(4)
    model.save_pretrained(merged_dir)
    recipe = {"method": "gguf_f16", "loader": "gguf", "strategy": "lora", "gguf_file": "model.gguf"}
    METHODS["gguf_f16"].make(merged_dir, tmp_path / "gguf_f16" / "model", recipe)
    gguf = tmp_path / "gguf_f16" / "model" / "model.gguf"
    expected = outputs(LOADERS["gguf"](tmp_path / "gguf_f16", recipe).eval())["tokens"][0, len(PROBE[0]):].tolist()
    tokens, _, times = greedy_token_times(load(gguf, 32, threads=1), PROBE[0], 6)
    assert tokens == expected and len(times) == 6
    costs = measure_native(gguf, PROBE[0], new_tokens=5, repeats=2, threads=1)
    assert costs["token_latency_ms"]["samples"] == 2 * 4 and costs["tokens_per_second"]["1"] > 0
    assert costs["ttft_ms"] > 0 and costs["engine"].startswith("llama.cpp (llama-cpp-python 0.3.36)")


def test_without_llama_cpp_the_benchmark_says_how_to_install_it(tmp_path):
    from tunelab.benchmarking.native_gguf import measure_native

    if importlib.util.find_spec("llama_cpp") is not None:
        pytest.skip("llama-cpp-python is installed here: the native test above runs instead")
    skipped = measure_native(tmp_path / "model.gguf", [1, 2, 3], new_tokens=4, repeats=1, threads=1)
    assert list(skipped) == ["skipped"]
    assert skipped["skipped"].startswith("llama-cpp-python is not installed: pip install -e '.[llama]'")


def test_a_llama_cpp_that_dies_of_an_illegal_instruction_costs_its_figure_with_how_to_rebuild():
    import signal

    from tunelab.benchmarking.native_gguf import WITHOUT_AMX, death

    assert death(signal.SIGILL).startswith("llama.cpp died of SIGILL: its build uses an instruction this machine refuses")
    assert death(signal.SIGILL).endswith(WITHOUT_AMX) and "-DGGML_NATIVE=OFF" in WITHOUT_AMX
    assert death(signal.SIGSEGV) == "llama.cpp died of SIGSEGV"
