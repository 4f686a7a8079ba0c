"""A tiny random Llama with a real byte-level BPE tokenizer and a ChatML chat template.

Built from a config in seconds, so tests exercise real transformers code paths without a hub.
The tokenizer mirrors SmolLM2's conventions: eos = pad = ``<|im_end|>``, no BOS added.
"""

from pathlib import Path

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Is the sentiment of this movie review positive or negative? Answer with one word.",
    "Review: a moving, funny and wonderful film. positive",
    "Review: a dull, tedious and awful mess. negative",
    "system user assistant You are a helpful assistant.",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_model(tokenizer, seed: int = 0, **config_changes):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**dict(
        vocab_size=len(tokenizer),
        hidden_size=64,  # bitsandbytes 4-bit blocks hold 64 weights: narrower layers fail on CPU
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    ), **config_changes})
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def save_tiny_model(folder: Path) -> Path:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
