"""Stage evaluate: one model variant × its prompting methods on the frozen test split.

    dvc exp run                                       # evaluate@base and evaluate@trained (dvc.yaml foreach)
    python stages/evaluate.py base                    # one variant by hand (after `dvc exp run` composed params.yaml)
    dvc exp run -S eval.limit=100 -S eval.prompting.few_shot.shots=8

The base model is scored with every prompting method in eval.prompting (the prompting baselines);
the trained variant with eval.fine_tuned_prompting; each method on the test split, then on each
of eval.extra_test_sets. Each variant is its own DVC stage, so
retraining re-scores only the trained model. The task (data.task) decides how: classification
by answer-choice likelihood and parsed generations against labels, the generative tasks by
generated text that the task reads and scores against each row's references.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import DataConfig, EvalConfig, PromptConfig, PromptingConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.plots import confusion_figure, write_confusion_csv
from tunelab.evaluation.prompt_search import winner_prompting
from tunelab.evaluation.prompting import method_template
from tunelab.evaluation.tasks import TASKS, Task
from tunelab.io.atomic import atomic_dir, write_jsonl
from tunelab.io.jsonl import read_jsonl
from tunelab.models.loading import continues_a_cache, load_variant
from tunelab.paths import ALIGNED, BASE, PATHS, SKIPPED, Paths, is_quantized
from tunelab.prompts.formatting import load_tokenizer
from tunelab.prompts.special_tokens import DataText
from tunelab.records import PromptSearchRecord, QuantizeRecord, prepared_data, read_optional, read_record
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run


def prompting_names(variant: str, settings: EvalConfig) -> list[str]:
    return list(settings.prompting) if variant == BASE else list(settings.fine_tuned_prompting)


def rows_to_score(test: list[dict], *limits: int | None) -> list[dict]:
    """The first N rows (the split is stored in id order, which is a shuffle of the data)."""
    set_limits = [limit for limit in limits if limit is not None]
    return test[: min(set_limits)] if set_limits else test


def extra_test_rows(paths: Paths, settings: EvalConfig, required: tuple[str, ...]) -> dict[str, list[dict]]:
    """data/prepared/extra_test.jsonl's rows by their test set (eval.extra_test_sets), in file order."""
    if not settings.extra_test_sets:
        return {}
    sets: dict[str, list[dict]] = {name: [] for name in settings.extra_test_sets}
    for row in read_jsonl(paths.extra_test, required=(*required, "test_set")):
        if (name := row.pop("test_set")) in sets:
            sets[name].append(row)
    if empty := [name for name, rows in sets.items() if not rows]:
        raise TunelabError(f"{paths.extra_test}: no rows of eval.extra_test_sets.{empty[0]}; run the prepare stage "
                           "(dvc exp run) after adding a set")
    return sets


def resolved(paths: Paths, prompting: PromptingConfig, training: PromptConfig,
             task: Task) -> tuple[PromptConfig, PromptingConfig, dict]:
    """The template and prompting a method scores with (for ``optimized``, the search's winner on
    val), and how it was prompted, for the report."""
    searched = prompting.method == "optimized"
    if searched:
        search = read_record(PromptSearchRecord, paths.prompt_search, "search_prompt")
        if search.winner is None:
            raise TunelabError(f"{paths.prompt_search}: no winner ({search.skipped}); rerun the search_prompt stage")
        template, prompting = winner_prompting(search.winner, prompting)
    else:
        template = method_template(training, prompting, task)
    described = {"method": "optimized" if searched else prompting.method,
                 "template": search.winner["name"] if searched else template.name,
                 "shots": prompting.shots, "samples": prompting.samples,
                 **({"selection": prompting.selection} if prompting.shots else {}),
                 **({"calibrate": True} if prompting.calibrate else {})}
    return template, prompting, described


def run(paths: Paths, variant: str, settings: EvalConfig, training_prompt: PromptConfig, data: DataConfig,
        tracking: StageRun) -> None:
    """Score the variant's model under ``paths`` with each of its prompting methods on the test split
    (and each extra test set); write its metrics, predictions and confusion matrices."""
    task, labels = TASKS[data.task], data.labels
    required = data.prepared_fields
    deployed = is_quantized(variant)
    if reason := skipped_reason(paths, variant, deployed):
        write_skipped(paths, tracking, variant, reason)
        tracking.set_tag("tunelab.skipped", reason)
        return
    # imported here, not at the top: the scorer imports torch (~2 s of a stage's start), which a
    # skipped variant (align=none, a quantization that does not apply) never needs
    from tunelab.evaluation.evaluator import EvalSettings, Scorer

    tokenizer = load_tokenizer(paths.base_model)
    data_text = DataText(tokenizer)  # as the format stage escapes them: control tokens in data are text
    test = data_text.rows(read_jsonl(paths.split(paths.prepared, "test"), required=required))
    train = data_text.rows(read_jsonl(paths.split(paths.prepared, "train"), required=required))
    extra_sets = {name: data_text.rows(rows) for name, rows in extra_test_rows(paths, settings, required).items()}
    model = load_variant(variant, paths)
    scorer = Scorer(task, labels, model, tokenizer,
                    EvalSettings(settings.batch_size, settings.length_normalize, settings.seed, continues_a_cache(model),
                                 settings.generate_batch_size))
    metrics_file, predictions_dir, confusion_dir = paths.eval_outputs(variant)
    with atomic_dir(predictions_dir) as predictions_tmp, atomic_dir(confusion_dir) as confusion_tmp:
        results, extra_results = {}, {}
        for name in prompting_names(variant, settings):
            template, prompting, described = resolved(paths, settings.prompting[name], training_prompt, task)

            def score(rows: list[dict], test_set: str | None = None):
                where = f"{variant}/{name}" + (f"@{test_set}" if test_set else "")
                return scorer.score(rows_to_score(rows, settings.limit, prompting.limit), template, prompting, train,
                                    where)

            result = score(test)
            write_jsonl(predictions_tmp / f"{name}.jsonl", result.predictions)
            for scoring, report in result.metrics.items():
                write_plot_data(confusion_tmp / f"{name}-{scoring}.csv", result.predictions, scoring, labels)
                log_scoring(tracking, variant, name, scoring, report, task, labels)
            results[name] = {**described, "scoring": result.metrics}
            for test_set, rows in extra_sets.items():
                scored = score(rows, test_set)
                folder = predictions_tmp / paths.extra_predictions(variant, test_set).relative_to(predictions_dir)
                folder.mkdir(parents=True, exist_ok=True)
                write_jsonl(folder / f"{name}.jsonl", scored.predictions)
                for scoring, report in scored.metrics.items():
                    log_scoring(tracking, variant, f"{test_set}.{name}", scoring, report, task, labels=[])
                extra_results.setdefault(test_set, {})[name] = {"scoring": scored.metrics}
    tracking.write_metrics(metrics_file, {"variant": variant, "task": task.name, "metrics": list(task.table_metrics),
                                          **({"labels": labels} if labels else {}), "prompting": results,
                                          **({"extra_test_sets": extra_results} if extra_results else {})})
    tracking.log_artifact(metrics_file)
    tracking.log_artifacts(predictions_dir, "predictions")


def main() -> None:
    if len(sys.argv) != 2:
        raise TunelabError("usage: python stages/evaluate.py VARIANT (base, trained, or a quantize variant)")
    variant = sys.argv[1]
    params = read_params()
    settings = to_section(EvalConfig, "eval", params.get("eval"))
    training_prompt = to_section(PromptConfig, "prompt", params.get("prompt"))
    data = prepared_data(to_section(DataConfig, "data", params.get("data")))
    stage = "evaluate_deployed" if is_quantized(variant) else "evaluate"  # its name in dvc.yaml
    with stage_run(f"{stage}@{variant}", params, sections=("eval", "prompt")) as tracking:
        run(PATHS, variant, settings, training_prompt, data, tracking)


def skipped_reason(paths: Paths, variant: str, deployed: bool) -> str | None:
    """Why a variant was not made (the quantize stage skipped it, or align=none: the align stage's
    models/aligned says so), or None."""
    if deployed:
        quantized = read_optional(QuantizeRecord, paths.quantize_metrics, "quantize")
        return quantized.skipped_reason(variant) if quantized else None
    if variant == ALIGNED and (note := paths.aligned_model / SKIPPED).is_file():
        return note.read_text().strip()
    return None


def write_skipped(paths: Paths, tracking: StageRun, variant: str, reason: str) -> None:
    """A variant that was not made still gets its outputs, saying why, for the report."""
    metrics_file, predictions_dir, confusion_dir = paths.eval_outputs(variant)
    with atomic_dir(predictions_dir) as temp:
        (temp / SKIPPED).write_text(reason + "\n")
    with atomic_dir(confusion_dir) as temp:
        # a plot with no rows: DVC can neither plot nor restore (in a queued experiment) an empty folder
        (temp / "skipped.csv").write_text("actual,predicted\n")
    tracking.write_metrics(metrics_file, {"variant": variant, "skipped": reason, "prompting": {}})
    print(f"evaluate: {variant}: skipped: {reason}")


def write_plot_data(path: Path, predictions: list[dict], scoring: str, labels: list[str]) -> None:
    """The confusion matrix's rows (DVC plots); a generative task has no classes, so its file holds
    the header alone (DVC can neither plot nor restore an empty folder)."""
    if labels:
        write_confusion_csv(path, predictions, scoring)
    else:
        path.write_text("actual,predicted\n")


def log_scoring(tracking: StageRun, variant: str, name: str, scoring: str, report: dict, task: Task, labels: list[str]) -> None:
    keys = (*task.table_metrics, "examples_per_second", "unparseable_share", "mean_vote_share")
    tracking.log_metrics({f"{name}.{scoring}.{key}": report[key] for key in keys if key in report})
    low, high = report[f"{task.headline}_ci95"]
    print(f"evaluate: {variant}/{name}/{scoring}: {task.headline} {report[task.headline]:.3f} [{low:.3f}, {high:.3f}] "
          f"on {report['examples']} rows, {report['examples_per_second']} examples/s")
    if tracking.run and labels:
        import matplotlib.pyplot as plt

        figure = confusion_figure(report, f"{variant} / {name} / {scoring}")
        tracking.log_figure(figure, f"confusion/{name}-{scoring}.png")
        plt.close(figure)


if __name__ == "__main__":
    run_stage(main)
