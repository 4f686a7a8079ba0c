"""Stage report: every evaluated variant × prompting method with what it cost, regenerated from metrics.

    dvc exp run                 # runs last; prints the tables into the log, writes metrics/report.md
    dvc metrics show            # the same figures from metrics/eval.json (accuracy, train time, speed, size)
    dvc exp show / dvc metrics diff / dvc plots diff   # the same across experiments (a sweep)

The headline metric is the task's (accuracy for classification and math, exact match for
extractive QA, ROUGE-L for generation). Proportions (accuracy, exact match) carry Wilson 95%
score intervals; means of per-example scores and macro-F1 percentile-bootstrap intervals.
Every row is compared with the best one on the same test rows (a paired interval of the
difference: McNemar's exact conditional one for proportions, a paired bootstrap for means,
Bonferroni-corrected across the table), and a cheaper row is recommended only when it is
non-inferior within eval.recommend.margin (tunelab.reporting.significance).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import EvalConfig
from tunelab.io.atomic import write_csv, write_json, write_text
from tunelab.paths import ALIGNED, BASE, PATHS, TRAINED, Paths
from tunelab.records import (
    AlignRecord,
    BaseRecord,
    BenchRecord,
    PromptSearchRecord,
    QuantizeRecord,
    ServeRecord,
    TrainRecord,
    read_optional,
)
from tunelab.reporting.agreement import MERGED, agreement, agreement_table, by_id
from tunelab.reporting.plots import save_tradeoff_figures
from tunelab.reporting.significance import compare_with_best, row_scores
from tunelab.reporting.tables import (
    comparisons_table,
    deployment_table,
    eval_rows,
    frontier_line,
    headline_metric,
    markdown_table,
    metrics_by_key,
    native_skipped_lines,
    pipeline_summary,
    recommendation,
    recommendation_tags,
    row_key,
    search_table,
    serve_table,
    skipped_lines,
    table_metrics,
    tradeoff_rows,
    variants_table,
    with_comparisons,
    with_costs,
    with_frontier,
)
from tunelab.stage import run_stage
from tunelab.tracking.lineage import LOCK_FILE, pipeline_output_hashes
from tunelab.tracking.mlflow_run import StageRun, stage_run

VARIANTS_CSV = "variants.csv"  # in the figures folder
TRADEOFFS_CSV = "tradeoffs.csv"
TITLE = "# tunelab report\n\n"
INTRO = ("Every model variant × prompting method on the same frozen test split, with what it cost. "
         "The task's headline metric with its 95% interval (Wilson for proportions, percentile bootstrap for means); "
         "`choice` scores answer-choice log-likelihood, `generate` reads the answer out of generated text "
         "(unparseable answers count as wrong). Train time: seconds from the base model to the variant (training, plus "
         "quantization for a deployable variant); tokens/s and latency: batch 1 decoding, from the benchmark.\n\n")
PLOTTED = ("metric", "score", "score_ci_low", "score_ci_high", "train_seconds", "token_latency_p50_ms", "tokens_per_second",
           "size_mb")
"""The columns of metrics/report/variants.csv (DVC plots): the headline as ``score``, whatever the task."""


def eval_files(paths: Paths, quantized: list[str]) -> list[Path]:
    """base, trained, aligned, then the quantized variants in conf/quantize's order."""
    order = [BASE, TRAINED, ALIGNED, *quantized]
    files = [paths.eval_outputs(name)[0] for name in order]
    return [path for path in files if path.is_file()]


def measured_on(bench: BenchRecord | None) -> str:
    """The machine beside the recommendation: int8 kernels, hence int8 accuracy and every speed,
    depend on the instruction set, so a recommendation holds for a CPU like this one."""
    if bench is None:
        return ""
    env = bench.environment
    if env.get("gpu"):
        return f"Measured on {env['gpu']}.\n"
    isa = ", ".join(env.get("cpu_isa") or []) or "no AVX2"
    return (f"Measured on {env['cpu']} ({isa}; PyTorch quantized engine {env.get('quantized_engine', '?')}): speeds "
            "and the int8 variants' scores differ on another instruction set.\n")


def deployment_section(paths: Paths, rows: list[dict], headline: tuple[str, str], bench: BenchRecord | None) -> str:
    if bench is None:
        return ""
    env = bench.environment
    where = env.get("gpu") or f"{env['cpu']}, {env['torch_threads']} threads"
    native = native_skipped_lines(bench.variants)
    return (f"\n## Deployable variants\n\nMeasured on {where}, torch {env['torch']}; batch 1 latency, "
            f"{bench.settings['new_tokens']} new tokens per sequence, median of {bench.settings['repeats']}; "
            f"{headline_metric(rows)} of {'/'.join(headline)}, Δ against the unquantized trained model.\n\n"
            + deployment_table(bench.variants, rows, headline) + ("\n" + "\n".join(native) + "\n" if native else "")
            + agreement_section(paths, rows, headline[0]))


def agreement_section(paths: Paths, rows: list[dict], prompting: str) -> str:
    """Each evaluated variant against the merged float model (or the trained one), row by row."""
    evaluated = list(dict.fromkeys(r["variant"] for r in rows if r["prompting"] == prompting))
    reference = MERGED if MERGED in evaluated else TRAINED
    compared = [name for name in evaluated if name not in (BASE, reference)]
    if reference not in evaluated or not compared:
        return ""
    predictions = {name: by_id(paths.eval_outputs(name)[1] / f"{prompting}.jsonl") for name in (reference, *compared)}
    agreements = {name: agreement(predictions[reference], predictions[name]) for name in compared}
    return (f"\n### Row by row against {reference}\n\nThe same {prompting} test rows: how often each variant "
            f"predicts what {reference} predicts, and how far its answer choices' log-probabilities moved.\n\n"
            + agreement_table(agreements, reference))


def serving_section(paths: Paths, serve: ServeRecord | None, bench: BenchRecord | None) -> str:
    if serve is None:
        return ""
    if serve.skipped:
        return f"\n## Served under load\n\nNot measured: {serve.skipped}.\n"
    figure = paths.serve_plots / "load_test.png"
    return ("\n## Served under load\n\n" + serve_table(serve, bench)
            + f"\n![load test]({figure.relative_to(paths.report.parent)})\n")


def paired_comparisons(paths: Paths, rows: list[dict], settings: EvalConfig) -> dict:
    """Every row against the best, row by row, from the evaluate stages' predictions."""
    if len(rows) < 2:
        return {}
    scores = {row_key(r): row_scores(paths.eval_outputs(r["variant"])[1] / f"{r['prompting']}.jsonl", r["scoring"])
              for r in rows}
    return compare_with_best(scores, settings.recommend.margin, settings.recommend.level, settings.seed,
                             proportions=rows[0]["ci_method"] == "wilson")


def extra_sets_line(extra_sets: list[str]) -> str:
    if not extra_sets:
        return ""
    return (f"The last column{'s' if len(extra_sets) > 1 else ''}: the same rows on the extra test "
            f"set{'s' if len(extra_sets) > 1 else ''} {', '.join(f'`{name}`' for name in extra_sets)} "
            "(eval.extra_test_sets; data/prepared/stats.json says how many rows each has): does the adaptation "
            "transfer, or only fit its own test split?\n\n")


def figures_section(paths: Paths, figures: list[Path]) -> str:
    return "\n" + "".join(f"![{p.stem.replace('_', ' ')}]({p.relative_to(paths.report.parent)})\n" for p in figures)


def run(paths: Paths, settings: EvalConfig, quantized: list[str], trained_as: str, tracking: StageRun) -> None:
    """The report of every evaluated variant under ``paths`` (``quantized``: quantize.variants, in
    their order; ``trained_as``: the training recipe, for the figures' titles)."""
    headline = settings.headline_result()
    files = eval_files(paths, quantized)
    bench = read_optional(BenchRecord, paths.bench_metrics, "benchmark")
    rows = with_costs(eval_rows(files), read_optional(BaseRecord, paths.base_metrics, "base"),
                      read_optional(TrainRecord, paths.train_metrics, "train"),
                      read_optional(QuantizeRecord, paths.quantize_metrics, "quantize"), bench,
                      read_optional(AlignRecord, paths.align_metrics, "align"))
    compared = paired_comparisons(paths, rows, settings)
    rows = with_frontier(with_comparisons(rows, compared))
    by_key = metrics_by_key(rows)
    write_json(paths.eval_summary, by_key)
    write_csv(paths.figures / VARIANTS_CSV, [{"variant": row_key(r), **{k: r[k] for k in PLOTTED}} for r in rows])
    write_csv(paths.figures / TRADEOFFS_CSV, tradeoff_rows(rows, headline))
    figures = save_tradeoff_figures(rows, paths.figures, trained_as)
    skipped = skipped_lines(files)
    verdict = recommendation(rows, settings.recommend.margin) + frontier_line(rows) + measured_on(bench)
    extra_sets = list(settings.extra_test_sets)
    text = TITLE + (verdict + "\n" if verdict else "") + INTRO + extra_sets_line(extra_sets)
    text += variants_table(rows, extra_sets)
    text += "\nNot evaluated here:\n\n" + "\n".join(skipped) + "\n" if skipped else ""
    text += figures_section(paths, figures)
    text += "\n## Against the best, row by row\n\n" + comparisons_table(rows, compared) if compared else ""
    search = read_optional(PromptSearchRecord, paths.prompt_search, "search_prompt")
    text += "\n## Prompt search on val\n\n" + search_table(search) if search and search.winner else ""
    text += "\n## Scores in detail\n\n" + markdown_table(rows, table_metrics(files))
    text += deployment_section(paths, rows, headline, bench)
    text += serving_section(paths, read_optional(ServeRecord, paths.serve_metrics, "load_test"), bench)
    write_text(paths.report, text)
    for path in (paths.report, paths.eval_summary, paths.figures / VARIANTS_CSV, paths.figures / TRADEOFFS_CSV,
                 *figures):
        tracking.log_artifact(path, "report" if path.parent == paths.figures else None)
    tracking.summarize_pipeline(pipeline_summary(by_key, headline),
                                {**pipeline_output_hashes(paths.root / LOCK_FILE),
                                 **recommendation_tags(rows, settings.recommend.margin)})
    print(text)


def main() -> None:
    params = read_params()
    settings = to_section(EvalConfig, "eval", params.get("eval"))
    quantized = params.get("quantize", {}).get("variants", [])
    trained_as = (f"{params.get('strategy', {}).get('name', '?')}, "
                  f"lr {params.get('train', {}).get('learning_rate', '?')}")
    with stage_run("report", params, sections=()) as tracking:
        run(PATHS, settings, quantized, trained_as, tracking)


if __name__ == "__main__":
    run_stage(main)
