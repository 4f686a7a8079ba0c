"""Stage evaluate: one model variant × its prompting methods on the frozen test split.

    dvc exp run                                       # evaluate@base and evaluate@trained (dvc.yaml foreach)
    python stages/evaluate.py base                    # one variant by hand (after `dvc exp run` composed params.yaml)
    dvc exp run -S eval.limit=100 -S eval.prompting.few_shot.shots=8

The base model is scored with every prompting method in eval.prompting (the prompting baselines);
the trained variant with eval.fine_tuned_prompting. Each variant is its own DVC stage, so
retraining re-scores only the trained model.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import DataConfig, EvalConfig, PromptConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.evaluator import EvalSettings, evaluate_prompting
from tunelab.evaluation.plots import confusion_figure, write_confusion_csv
from tunelab.evaluation.prompting import build_prompts, method_template, pick_demonstrations
from tunelab.io.atomic import atomic_dir, write_jsonl
from tunelab.io.jsonl import read_jsonl
from tunelab.layout import BASE, LAYOUT, TRAINED
from tunelab.models.loading import continues_a_cache, load_variant
from tunelab.prompts.formatting import load_tokenizer
from tunelab.records import QuantizeRecord, read_optional
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import stage_run


def prompting_names(variant: str, settings: EvalConfig) -> list[str]:
    return list(settings.prompting) if variant == BASE else list(settings.fine_tuned_prompting)


def rows_to_score(test: list[dict], *limits: int | None) -> list[dict]:
    """The first N rows (the split is stored in id order, which is a shuffle of the data)."""
    set_limits = [limit for limit in limits if limit is not None]
    return test[: min(set_limits)] if set_limits else test


def main() -> None:
    if len(sys.argv) != 2:
        raise TunelabError("usage: python stages/evaluate.py VARIANT (base, trained, or a quantize variant)")
    variant = sys.argv[1]
    params = read_params()
    settings = to_section(EvalConfig, "eval", params.get("eval"))
    training_prompt = to_section(PromptConfig, "prompt", params.get("prompt"))
    labels = to_section(DataConfig, "data", params.get("data")).labels
    deployed = variant not in (BASE, TRAINED)
    stage = "evaluate_deployed" if deployed else "evaluate"  # its name in dvc.yaml
    with stage_run(f"{stage}@{variant}", params, sections=("eval", "prompt")) as run:
        quantized = read_optional(QuantizeRecord, LAYOUT.quantize_metrics, "quantize") if deployed else None
        if quantized and (reason := quantized.skipped_reason(variant)):
            write_skipped(run, variant, reason)
            run.set_tag("tunelab.skipped", reason)
            return
        test = read_jsonl(LAYOUT.split(LAYOUT.prepared, "test"), required=("id", "text", "label"))
        train = read_jsonl(LAYOUT.split(LAYOUT.prepared, "train"), required=("id", "text", "label"))
        tokenizer = load_tokenizer(LAYOUT.base_model)
        model = load_variant(variant)
        run_settings = EvalSettings(settings.batch_size, settings.length_normalize, settings.seed, continues_a_cache(model))
        metrics_file, predictions_dir, confusion_dir = LAYOUT.eval_outputs(variant)
        with atomic_dir(predictions_dir) as predictions_tmp, atomic_dir(confusion_dir) as confusion_tmp:
            results = {}
            for name in prompting_names(variant, settings):
                prompting = settings.prompting[name]
                template = method_template(training_prompt, prompting)
                shots = pick_demonstrations(train, labels, prompting.shots, settings.seed) if prompting.shots else []
                prompts = build_prompts(rows_to_score(test, settings.limit, prompting.limit), template, labels,
                                        tokenizer, shots)
                result = evaluate_prompting(model, tokenizer, prompts, prompting, template.name,
                                           template.use_chat_template, labels, run_settings, f"{variant}/{name}")
                write_jsonl(predictions_tmp / f"{name}.jsonl", result.predictions)
                for scoring, report in result.metrics.items():
                    write_confusion_csv(confusion_tmp / f"{name}-{scoring}.csv", result.predictions, scoring)
                    log_scoring(run, variant, name, scoring, report)
                results[name] = {"method": prompting.method, "template": template.name, "shots": prompting.shots,
                                 "samples": prompting.samples, "scoring": result.metrics}
        run.write_metrics(metrics_file, {"variant": variant, "labels": labels, "prompting": results})
        run.log_artifact(metrics_file)
        run.log_artifacts(predictions_dir, "predictions")


def write_skipped(run, variant: str, reason: str) -> None:
    """A variant the quantize stage skipped still gets its outputs, saying why, for the report."""
    metrics_file, predictions_dir, confusion_dir = LAYOUT.eval_outputs(variant)
    with atomic_dir(predictions_dir) as temp:
        (temp / "SKIPPED.txt").write_text(reason + "\n")
    with atomic_dir(confusion_dir) as temp:
        # a plot with no rows: DVC can neither plot nor restore (in a queued experiment) an empty folder
        (temp / "skipped.csv").write_text("actual,predicted\n")
    run.write_metrics(metrics_file, {"variant": variant, "skipped": reason, "prompting": {}})
    print(f"evaluate: {variant}: skipped: {reason}")


def log_scoring(run, variant: str, name: str, scoring: str, report: dict) -> None:
    keys = ("accuracy", "macro_f1", "examples_per_second", "unparseable_share", "mean_vote_share")
    run.log_metrics({f"{name}.{scoring}.{key}": report[key] for key in keys if key in report})
    low, high = report["accuracy_ci95"]
    print(f"evaluate: {variant}/{name}/{scoring}: accuracy {report['accuracy']:.3f} [{low:.3f}, {high:.3f}] "
          f"on {report['examples']} rows, {report['examples_per_second']} examples/s")
    if run.run:
        import matplotlib.pyplot as plt

        figure = confusion_figure(report, f"{variant} / {name} / {scoring}")
        run.log_figure(figure, f"confusion/{name}-{scoring}.png")
        plt.close(figure)


if __name__ == "__main__":
    run_stage(main)
