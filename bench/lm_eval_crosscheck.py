"""tunelab's choice scoring cross-checked against lm-evaluation-harness, row by row.

    make crosscheck                                   # after `make run`: base, trained and merged
    python bench/lm_eval_crosscheck.py --variants base merged --method zero_shot

The test split, rendered with the method's template exactly as the evaluate stage renders it,
becomes an lm-eval task (bench/results/lm_eval/tunelab_test.{yaml,jsonl}, not committed: its yaml names
the data file by absolute path, as lm-eval needs; also yours to run with
`lm_eval --include_path bench/results/lm_eval --tasks tunelab_test`). lm-eval's HF backend
scores it on each variant's model, and its answer on every row is compared with the evaluate
stage's choice prediction (data/predictions/VARIANT/METHOD.jsonl). Classification only: the
generative tasks have no answer choices. Results: bench/results/lm_eval_crosscheck.json.
"""

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tunelab.config.load import read_params, to_section  # noqa: E402
from tunelab.config.schema import DataConfig, EvalConfig, PromptConfig  # noqa: E402
from tunelab.errors import TunelabError  # noqa: E402
from tunelab.evaluation.lm_eval_task import agreement, export_task, run_lm_eval  # noqa: E402
from tunelab.evaluation.prompting import method_template  # noqa: E402
from tunelab.evaluation.tasks import TASKS  # noqa: E402
from tunelab.io.atomic import write_json  # noqa: E402
from tunelab.io.jsonl import read_jsonl  # noqa: E402
from tunelab.paths import BASE, TRAINED, Paths  # noqa: E402
from tunelab.prompts.formatting import load_tokenizer  # noqa: E402
from tunelab.stage import run_stage  # noqa: E402


def model_args(variant: str, paths: Paths) -> dict:
    """What lm-eval's HF backend loads for a variant: a float model folder, or the base and an adapter."""
    if variant == BASE:
        return {"pretrained": str(paths.base_model)}
    if variant == TRAINED:
        if not (paths.trained_model / "adapter_config.json").is_file():
            return {"pretrained": str(paths.trained_model), "tokenizer": str(paths.base_model)}
        return {"pretrained": str(paths.base_model), "peft": str(paths.trained_model)}
    recipe = paths.model(variant) / "tunelab_deploy.json"
    loader = json.loads(recipe.read_text()).get("loader") if recipe.is_file() else None
    if loader != "float":
        raise TunelabError(f"variant {variant!r}: lm-eval's HF backend loads float model folders, and {recipe} says "
                           f"loader {loader!r} (the quantized variants load through tunelab's own loaders)")
    return {"pretrained": str(paths.model(variant) / "model")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=[BASE, TRAINED, "merged"])
    parser.add_argument("--method", default="zero_shot", help="a prompting method without demonstrations")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--root", type=Path, default=REPO, help="the project (tests use a copy)")
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the task's data is a local file: never ask a hub
    paths = Paths(args.root)
    params = read_params(args.root / "params.yaml", check_current=False)
    data = to_section(DataConfig, "data", params.get("data"))
    settings = to_section(EvalConfig, "eval", params.get("eval"))
    if not data.classifies:
        raise TunelabError(f"data.task: {data.task} has no answer choices to score; the cross-check is for classification")
    prompting = settings.prompting.get(args.method)
    if prompting is None or prompting.shots or "choice" not in prompting.scoring:
        raise TunelabError(f"--method {args.method}: choose a method of eval.prompting scored by choice, without shots")
    template = method_template(to_section(PromptConfig, "prompt", params.get("prompt")), prompting, TASKS[data.task])
    test = read_jsonl(paths.split(paths.prepared, "test"), required=("id", "text", "label"))
    out = args.root / "bench/results"
    task = export_task(test, template, data.labels, load_tokenizer(paths.base_model), out / "lm_eval", "tunelab_test")
    report = {"task": task.name, "method": args.method, "template": template.name, "rows": task.rows, "variants": {}}
    for variant in args.variants:
        predictions = read_jsonl(paths.eval_outputs(variant)[1] / f"{args.method}.jsonl")
        chosen = run_lm_eval(task, model_args(variant, paths), args.batch_size)
        report["variants"][variant] = agreement(chosen, predictions, data.labels)
        figures = report["variants"][variant]
        print(f"{variant}: lm-eval agrees with tunelab on {figures['agreement']:.1%} of {figures['rows']} rows; "
              f"accuracy {figures['lm_eval_accuracy']:.3f} (lm-eval) vs {figures['tunelab_accuracy']:.3f} (tunelab)")
    write_json(out / "lm_eval_crosscheck.json", report)


if __name__ == "__main__":
    run_stage(main)
