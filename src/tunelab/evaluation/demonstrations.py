"""Which solved train examples a few-shot prompt shows before each row.

- balanced: one seeded set for every row, as balanced across labels as the count allows
  (prompting.pick_demonstrations); every prompt then shares them, and the scorer runs them once;
- nearest: each row's own, the train rows most like it (Liu et al., 2022, "What makes good
  in-context examples for GPT-3?"). Likeness is the cosine of the prompted model's own mean-pooled
  last hidden states over each rendered prompt, so no second model is needed; the nearest
  demonstration comes last, next to the row.

Hand-written: no library picks in-context examples for a causal LM from its own hidden states
(sentence-transformers would add a second model and its weights to fetch).
"""

from collections.abc import Sequence

import torch
from tqdm import tqdm

from tunelab.config.schema import PromptConfig, PromptingConfig
from tunelab.evaluation.batching import batches, left_pad, pad_id
from tunelab.evaluation.prompting import Demonstrations, pick_demonstrations
from tunelab.prompts.formatting import template_fields
from tunelab.prompts.templates import PromptTemplate


@torch.no_grad()
def embed(model, tokenizer, texts: list[str], batch_size: int) -> torch.Tensor:
    """Unit vectors [texts, hidden]: each text's last hidden states, averaged over its tokens.

    Batched by length (shortest first; the vectors come back in the texts' order): a batch padded to
    its longest text wastes little, 20% of the time here on the default train pool. A progress bar:
    the pool and the rows take a minute of a default run on 2 cores."""
    ids = [tokenizer(text)["input_ids"] for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    vectors = torch.empty(len(texts), model.config.hidden_size)
    with tqdm(total=len(texts), desc="embedding for nearest demonstrations", unit="ex") as progress:
        for batch in batches(order, batch_size):
            padded, mask = left_pad([ids[i] for i in batch], pad_id(tokenizer))
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            output = model(input_ids=padded.to(model.device), attention_mask=mask.to(model.device),
                           position_ids=positions.to(model.device), output_hidden_states=True, logits_to_keep=1)
            hidden = output.hidden_states[-1].float().cpu()
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            vectors[batch] = torch.nn.functional.normalize(pooled, dim=-1)
            progress.update(len(batch))
    return vectors


def nearest(query: torch.Tensor, pool: torch.Tensor, count: int) -> list[list[int]]:
    """Per query vector, the indices of its ``count`` most similar pool vectors, the most similar last."""
    similar = (query @ pool.T).topk(min(count, pool.shape[0]), dim=1).indices
    return [list(reversed(row)) for row in similar.tolist()]


def rendered_inputs(rows: Sequence[dict], template: PromptConfig, labels: list[str]) -> list[str]:
    """What each row asks, as the template renders it (no chat template, no target)."""
    renderer = PromptTemplate(template)
    return [renderer.render(template_fields(row, labels), row=str(row["id"])).prompt for row in rows]


def choose_demonstrations(prompting: PromptingConfig, template: PromptConfig, train: list[dict], rows: list[dict],
                          labels: list[str], seed: int, model, tokenizer, batch_size: int,
                          embedded: dict | None = None) -> Demonstrations:
    """The demonstrations ``prompting`` asks for, for each of ``rows``. ``embedded``: the vectors of
    texts embedded before, by the whole list (the prompt search asks for the same pool and rows with
    1, 2, 4 and 8 demonstrations; the same batches give bitwise the same vectors)."""
    if not prompting.shots:
        return ()
    if prompting.selection == "balanced":
        return pick_demonstrations(train, labels, prompting.shots, seed)
    pool = train[: prompting.pool]
    texts = tuple(rendered_inputs(pool + rows, template, labels))
    embedded = {} if embedded is None else embedded
    if texts not in embedded:
        embedded[texts] = embed(model, tokenizer, list(texts), batch_size)
    vectors = embedded[texts]
    picks = nearest(vectors[len(pool):], vectors[: len(pool)], prompting.shots)
    by_id = {str(row["id"]): [pool[i] for i in picked] for row, picked in zip(rows, picks)}
    return lambda row: by_id[str(row["id"])]
