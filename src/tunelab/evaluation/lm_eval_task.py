"""tunelab's classification test split as an lm-evaluation-harness task, and the cross-check.

lm-eval is the evaluator the field trusts; if its HF backend, given the same prompts and the
same answer choices, picks other answers than tunelab's choice scoring, one of them is wrong.
The export renders each test row exactly as the evaluate stage does (template, chat template,
system message) into a local JSONL file and a task YAML that reads it (``dataset_path: json``,
no hub), so a user can also run ``lm_eval --include_path`` on it for checks of their own.

Only what no library does is written here: the export (lm-eval knows no tunelab templates) and
the row-by-row comparison (lm-eval reports an accuracy, not agreement with another evaluator).
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

from tunelab.config.schema import PromptConfig
from tunelab.evaluation.prompting import build_prompts
from tunelab.io.atomic import write_jsonl, write_text
from tunelab.prompts.chat import model_completion


@dataclass(frozen=True)
class ExportedTask:
    name: str
    folder: Path
    """Holds ``<name>.yaml`` and ``<name>.jsonl``: pass it to lm-eval as ``--include_path``."""
    rows: int


def export_task(rows: list[dict], prompt: PromptConfig, labels: list[str], tokenizer, folder: Path,
                name: str) -> ExportedTask:
    """Every row as lm-eval's multiple-choice document: the prompt text the model reads, each
    choice as the text that follows it (tunelab scores the choice without its EOS), the label's
    index as the target. ``target_delimiter`` is empty: the choices carry their own separator."""
    prompts = build_prompts(rows, prompt, labels, tokenizer)
    documents = [{"id": p.id, "prompt": p.text, "gold": labels.index(p.label),
                  "choices": [model_completion(tokenizer, choice, prompt.use_chat_template).removesuffix(tokenizer.eos_token)
                              for choice in p.choices]} for p in prompts]
    data_file = folder / f"{name}.jsonl"
    write_jsonl(data_file, documents)
    task = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    write_text(folder / f"{name}.yaml", yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return ExportedTask(name, folder, len(documents))


def run_lm_eval(task: ExportedTask, model_args: dict, batch_size: int) -> dict[str, int]:
    """lm-eval's HF backend on the exported task: each row's chosen answer (argmax of the choices'
    log-likelihoods, lm-eval's ``acc``), by row id. ``model_args`` are its HFLM's (pretrained,
    tokenizer, peft for an adapter)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(
        model="hf", model_args={**model_args, "dtype": "float32", "device": "cpu"},
        tasks=[task.name], task_manager=TaskManager(include_path=str(task.folder)), batch_size=batch_size,
        log_samples=True)
    chosen = {}
    for sample in results["samples"][task.name]:
        scores = [loglikelihood for loglikelihood, _greedy in sample["filtered_resps"]]
        chosen[sample["doc"]["id"]] = max(range(len(scores)), key=scores.__getitem__)
    return chosen


def agreement(lm_eval_choices: dict[str, int], predictions: list[dict], labels: list[str]) -> dict:
    """tunelab's choice predictions (an evaluate stage's ``predictions/<variant>/<method>.jsonl``)
    against lm-eval's, row by row: the share that agree, both accuracies, and each row where
    they differ with tunelab's log-probability margin between the two answers."""
    by_id = {str(p["id"]): p for p in predictions}
    tunelab_choices = {row: labels.index(p["choice"]["prediction"]) for row, p in by_id.items()}
    gold = {row: labels.index(p["label"]) for row, p in by_id.items()}
    shared = sorted(set(tunelab_choices) & set(lm_eval_choices))
    differing = []
    for row in (r for r in shared if tunelab_choices[r] != lm_eval_choices[r]):
        logprobs = by_id[row]["choice"]["logprobs"]
        ours, theirs = labels[tunelab_choices[row]], labels[lm_eval_choices[row]]
        differing.append({"id": row, "tunelab": ours, "lm_eval": theirs,
                          "tunelab_margin": round(logprobs[ours] - logprobs[theirs], 6)})

    def share(hits: int) -> float | None:
        return round(hits / len(shared), 6) if shared else None

    return {
        "rows": len(shared),
        "agreement": share(len(shared) - len(differing)),
        "tunelab_accuracy": share(sum(tunelab_choices[r] == gold[r] for r in shared)),
        "lm_eval_accuracy": share(sum(lm_eval_choices[r] == gold[r] for r in shared)),
        "differing_rows": differing,
    }
