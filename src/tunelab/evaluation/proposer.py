"""OPRO-style instruction proposals (Yang et al., 2023, "Large language models as optimizers"):
an OpenAI-compatible endpoint (a larger model, e.g. served by `transformers serve`) reads the
instructions tried so far with their val scores, worst first, and writes new ones. It samples as
its model's generation config allows (an instruct model's samples; a greedy one repeats itself,
and repeated proposals are dropped).

An instruction is the system message of the search's winning template; each proposal is scored
on val like every other candidate and the next round's meta-prompt holds it too. Optional and
off by default (eval.prompt_search.proposer: null): the search never needs a server.
Hand-written: OPRO's own code is a research script bound to its models, not a library.
"""

import os

from tunelab.config.schema import ProposerConfig
from tunelab.errors import TunelabError

META_PROMPT = """You write the instruction (system message) that a small language model reads before each \
example of a task. Each example is shown to it with this template (fields in double braces):

{template}

Instructions tried so far, with their {metric} on held-out examples, worst first:

{tried}

Write one new instruction that differs from all of the above and would score higher. \
Reply with the instruction text only."""


def client(config: ProposerConfig):
    from openai import OpenAI

    return OpenAI(base_url=config.base_url, api_key=os.environ.get(config.api_key_env) or "none",
                  timeout=config.timeout, max_retries=1)


def check_endpoint(config: ProposerConfig) -> None:
    """Before any model loads: the endpoint answers a one-token chat request for ``config.model``."""
    import openai

    try:
        client(config).chat.completions.create(model=config.model, messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=1)
    except openai.APIConnectionError as error:
        raise TunelabError(f"eval.prompt_search.proposer.base_url: no OpenAI-compatible server answered at "
                           f"{config.base_url} ({type(error).__name__}); start one (e.g. `transformers serve`) "
                           "or set eval.prompt_search.proposer=null") from None
    except openai.APIError as error:
        raise TunelabError(f"eval.prompt_search.proposer: {config.base_url} refused a chat request for model "
                           f"{config.model!r} ({type(error).__name__}: {error})") from None


def meta_prompt(template: str, tried: list[tuple[str, float]], metric: str) -> str:
    lines = [f"Instruction: {text or '(none)'}\n{metric}: {score:.3f}" for text, score in sorted(tried, key=lambda t: t[1])]
    return META_PROMPT.format(template=template, tried="\n\n".join(lines), metric=metric)


def propose(config: ProposerConfig, template: str, tried: list[tuple[str, float]], metric: str,
            seed: int) -> list[str]:
    """``config.proposals`` new instructions (stripped; empty or repeated ones dropped)."""
    import openai

    prompt = meta_prompt(template, tried, metric)
    known = {text for text, _ in tried}
    proposals = []
    for number in range(config.proposals):
        try:
            response = client(config).chat.completions.create(
                model=config.model, messages=[{"role": "user", "content": prompt}], temperature=config.temperature,
                max_tokens=config.max_tokens, seed=seed + number)
        except openai.APIError as error:
            raise TunelabError(f"eval.prompt_search.proposer: {config.base_url} failed a request "
                               f"({type(error).__name__}: {error})") from None
        text = (response.choices[0].message.content or "").strip()
        if text and text not in known:
            known.add(text)
            proposals.append(text)
    return proposals
