"""The sweep's report: every run's variants side by side, from ``dvc exp show --json``.

Prompting baselines do not depend on the swept training keys, so they are computed once and
listed once for the runs that share them (the same base-model predictions); a sweep over data or
prompts has a set per run. Each run contributes its trained and deployable variants (its
eval.headline result). Runs of different tasks compare different headlines: the tables say
which beside each figure.
"""

import functools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dvc.exceptions import DvcException
from dvc_data.index.index import DataIndexError

from tunelab.config.load import to_section
from tunelab.config.schema import EvalConfig, RecommendConfig
from tunelab.io.atomic import write_json, write_text
from tunelab.paths import BASE, PATHS
from tunelab.reporting.markdown import pipe_table
from tunelab.reporting.plots import save_tradeoff_figures
from tunelab.reporting.significance import compare_with_best
from tunelab.reporting.tables import cell, headline_metric, recommended, score_cell, versus_cell, with_comparisons, with_score
from tunelab.sweeps.queue import DONE, StageCounts

EVAL_METRICS = str(PATHS.eval_summary)
TRAIN_METRICS = str(PATHS.train_metrics)
BASE_PREDICTIONS = str(PATHS.eval_outputs(BASE)[1])
PARAMS = "params.yaml"


EVAL_KEYS_ADDED_SINCE = {
    "extra_test_sets": {},
    "recommend": {"margin": 0.02, "level": 0.05},
    "prompt_search": {"shots": [0], "selection": ["balanced"], "calibrate": [False], "rows": 1, "templates": {}},
}
"""eval keys that older runs' params lack, with values that change nothing of what they ran."""


@dataclass(frozen=True)
class SweepRun:
    """One experiment of the sweep, as DVC recorded it."""

    name: str
    overrides: list[str]
    status: str
    params: dict  # params.yaml
    metrics: dict  # metrics/eval.json: {"variant/prompting/scoring": {...}}
    outputs: dict  # dvc.lock hash of each output: {path: md5}
    stages: StageCounts | None

    @property
    def headline(self) -> tuple[str, str]:
        """(prompting method, scoring) of the run's headline figure: its eval.headline. A run made
        before a key of eval existed lacks it (its params are what its commit composed)."""
        return self.eval_settings.headline_result()

    @property
    def eval_settings(self) -> EvalConfig:
        """The run's eval section; keys added since an older run was made read as what it ran."""
        return to_section(EvalConfig, "eval", {**EVAL_KEYS_ADDED_SINCE, **self.params.get("eval", {})})


def experiments(show: list[dict], names: set[str]) -> dict[str, dict]:
    """``{name: {"params": params.yaml, "metrics": metrics/eval.json, "train": metrics/train.json,
    "outputs": {path: hash}}}`` of each named experiment in ``dvc exp show --json`` output."""
    found = {}
    for baseline in show:
        for group in baseline.get("experiments") or []:
            rev = group["revs"][0]
            if rev.get("name") in names:
                data = rev.get("data") or {}
                found[rev["name"]] = {"params": (data.get("params") or {}).get(PARAMS, {}).get("data", {}),
                                      "metrics": (data.get("metrics") or {}).get(EVAL_METRICS, {}).get("data", {}),
                                      "train": (data.get("metrics") or {}).get(TRAIN_METRICS, {}).get("data", {}),
                                      "outputs": {path: out["hash"] for path, out in (data.get("outs") or {}).items()
                                                  if out.get("hash")}}
    return found


def _split(key: str) -> tuple[str, str, str]:
    variant, prompting, scoring = key.split("/")
    return variant, prompting, scoring


def _row(run: str, overrides: str, key: str, figures: dict, label: str) -> dict:
    variant, prompting, scoring = _split(key)
    return with_score({"run": run, "overrides": overrides, "variant": variant, "prompting": prompting, "scoring": scoring,
                       "label": label, **figures})


def table_rows(runs: list[SweepRun]) -> tuple[list[dict], list[dict]]:
    """(prompting baselines, once per set of base-model predictions the runs share (by their
    dvc.lock hash; runs that do not say share one set); each run's adapted variants)."""
    baselines, adapted, shared = [], [], {}
    for run in runs:
        base = {key: figures for key, figures in run.metrics.items() if key.startswith(f"{BASE}/")}
        if base and run.outputs.get(BASE_PREDICTIONS) not in shared:
            shared[run.outputs.get(BASE_PREDICTIONS)] = run
            baselines += [(run, key, figures) for key, figures in base.items()]
    several = len(shared) > 1
    baselines = [_row(run.name, " ".join(run.overrides) if several else "", key, figures,
                      f"{_split(key)[0]}/{_split(key)[1]}" + (f" · {' '.join(run.overrides)}" if several else ""))
                 for run, key, figures in baselines]
    for run in runs:
        overrides = " ".join(run.overrides)
        headline = run.headline if run.metrics else None
        for key, figures in run.metrics.items():
            variant, prompting, scoring = _split(key)
            if variant != BASE and (prompting, scoring) == headline:
                label = f"{variant} · {overrides}" if overrides else f"{variant}/{prompting}"
                adapted.append(_row(run.name, overrides, key, figures, label))
    return baselines, adapted


def markdown(rows: list[dict], with_run: bool) -> str:
    metric = headline_metric(rows)  # "score" when the runs' tasks differ: each cell then names its metric
    lines = []
    for r in rows:
        first = [r["run"], r["overrides"]] if with_run else [r["prompting"], r["scoring"]]
        score = score_cell(r) if metric != "score" else f"{r['metric']} {score_cell(r)}"
        # the baselines of runs on other data share one table: each row names its prompting method
        variant = f"{r['variant']} · {r['prompting']}/{r['scoring']}" if with_run and r["variant"] == BASE else r["variant"]
        lines.append([*first, variant, score, cell(r.get("train_seconds"), "{:.0f}"), cell(r.get("tokens_per_second")),
                      cell(r.get("token_latency_p50_ms")), cell(r.get("size_mb"))])
    return pipe_table([*(["run", "overrides"] if with_run else ["prompting", "scoring"]), "variant",
                       f"{metric} [95% CI]", "train s", "tokens/s", "latency p50 ms", "size MB"], lines)


SEED_KEY = "train.seed="


def across_seeds(adapted: list[dict]) -> list[dict]:
    """The runs that differ only in ``train.seed``, aggregated per variant: the headline's mean,
    standard deviation and 95% t-interval across seeds (training noise), beside the mean half-width
    of the runs' own test-set intervals (test-set noise)."""
    from scipy.stats import t

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in adapted:
        others = " ".join(o for o in r["overrides"].split() if not o.startswith(SEED_KEY))
        groups.setdefault((others, r["variant"]), []).append(r)
    aggregated = []
    for (others, variant), rows in groups.items():
        if len(rows) < 2 or not all(SEED_KEY in r["overrides"] for r in rows):
            continue
        scores = np.asarray([r["score"] for r in rows])
        mean, sd = float(scores.mean()), float(scores.std(ddof=1))
        half = float(t.ppf(0.975, len(rows) - 1)) * sd / math.sqrt(len(rows))
        test_half = [(r["score_ci_high"] - r["score_ci_low"]) / 2 for r in rows if r.get("score_ci_low") is not None]
        aggregated.append({"overrides": others, "variant": variant, "metric": rows[0]["metric"], "seeds": len(rows),
                           "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half,
                           "test_half_width": float(np.mean(test_half)) if test_half else None})
    return aggregated


def seeds_section(aggregated: list[dict]) -> str:
    if not aggregated:
        return ""
    table = pipe_table(["other overrides", "variant", "seeds", f"{aggregated[0]['metric']} mean ± sd",
                        "95% across seeds", "test-set ±"],
                       ([a["overrides"] or "—", a["variant"], a["seeds"], f"{a['mean']:.3f} ± {a['sd']:.3f}",
                         f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}]", f"±{cell(a['test_half_width'], '{:.3f}')}"]
                        for a in aggregated))
    return ("\n## Across seeds\n\nRuns that differ only in `train.seed`: the headline's mean ± standard deviation "
            "and its 95% t-interval across seeds (training noise), beside the mean half-width of each run's own "
            "test-set interval (test-set noise).\n\n" + table)


def seed_metrics(aggregated: list[dict]) -> dict[str, float]:
    """The across-seeds figures as MLflow metrics of the sweep's run (names keep MLflow's characters)."""
    figures = {}
    for a in aggregated:
        prefix = re.sub(r"[^\w./ -]", "_", f"seeds.{a['overrides'] or 'all'}.{a['variant']}.{a['metric']}")
        figures |= {f"{prefix}.mean": a["mean"], f"{prefix}.sd": a["sd"], f"{prefix}.seeds": a["seeds"]}
    return figures


TEST_SPLIT = str(PATHS.split(PATHS.prepared, "test"))


def sweep_key(row: dict) -> str:
    return f"{row['run']}:{row['variant']}/{row['prompting']}/{row['scoring']}"


def experiment_scores(row: dict) -> dict[str, float]:
    """A sweep row's per-test-row scores, from its experiment's predictions: in DVC's cache, or
    fetched from the workspace's remote (an experiment pulled from a teammate, perhaps made before
    the remote was named in its own commit's config)."""
    import dvc.api

    path = PATHS.eval_outputs(row["variant"])[1] / f"{row['prompting']}.jsonl"
    with dvc.api.open(str(path), rev=row["run"], config=workspace_remotes()) as lines:
        return {str(item["id"]): item[row["scoring"]]["score"] for item in map(json.loads, filter(str.strip, lines))}


@functools.cache
def workspace_remotes() -> dict | None:
    """The workspace's default DVC remote, as a config to read other revisions with; None (each
    revision's own config) where the workspace names none."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        default = repo.config["core"].get("remote")
        return {"remote": {default: dict(repo.config["remote"][default])}, "core": {"remote": default}} if default else None


def recommendation_section(rows: list[dict], runs: list[SweepRun], read_scores) -> tuple[str, dict | None]:
    """The sweep's one recommendation across its runs, by the report's own rule (tables.recommended):
    every row against the best, paired on the test rows, non-inferior within the first run's
    eval.recommend.margin. ``read_scores(row)`` gives a row's per-test-row scores (an experiment's
    predictions). Runs scored on different test splits cannot be paired: then there is none.
    Returns the section and the recommended row."""
    finished = [run for run in runs if run.metrics]
    if not rows or not finished:
        return "", None
    if len({run.outputs.get(TEST_SPLIT) for run in finished}) > 1:
        return ("\n## Recommendation\n\nNone across runs: they were scored on different test splits (each run's own "
                "metrics/report.md recommends within it).\n"), None
    recommend: RecommendConfig = finished[0].eval_settings.recommend
    try:
        scores = {sweep_key(r): read_scores(r) for r in rows}
    except (OSError, DvcException, DataIndexError) as missing:  # not in this workspace's cache, nor pulled
        return (f"\n## Recommendation\n\nNone: a run's predictions could not be read ({missing}); `dvc exp pull` "
                "the runs with their data, or read each run's own metrics/report.md.\n"), None
    judged = with_comparisons(rows, compare_with_best(scores, recommend.margin, recommend.level), sweep_key)
    if (pick := recommended(judged)) is None:
        return "", None
    table = pipe_table(["row", f"{headline_metric(judged)} [95% CI]", "vs best: Δ [interval]"],
                       ([r["label"], score_cell(r), versus_cell(r)] for r in judged))
    return (f"\n## Recommendation\n\n**`{pick['label']}`** ({pick['variant']}/{pick['prompting']}/{pick['scoring']} of "
            f"{pick['run']}): the cheapest row that is the best or non-inferior to it within a margin of "
            f"{recommend.margin:g} (eval.recommend; the pipeline report's rule).\n\n" + table), pick


def baselines_section(baselines: list[dict]) -> str:
    if len({r["run"] for r in baselines}) > 1:  # the runs changed the data or the prompts: a set each
        return "\n## Prompting baselines (one set per run whose data or prompts differ)\n\n" + markdown(baselines, True)
    return "\n## Prompting baselines (shared by every run, computed once)\n\n" + markdown(baselines, with_run=False)


def stages_line(runs: list[SweepRun]) -> str:
    counted = [run.stages for run in runs if run.stages]
    if not counted:
        return ""
    executed = sum(c.executed for c in counted)
    skipped, restored = sum(c.skipped for c in counted), sum(c.restored for c in counted)
    total = executed + skipped + restored
    return (f"Stage executions: {executed} of {total} ran; caching saved {skipped + restored} "
            f"({skipped} unchanged since the baseline, {restored} restored from DVC's run cache).\n")


def write_report(folder: Path, sweep: str, command: str, runs: list[SweepRun], wall_seconds: float | None,
                 read_scores=None) -> Path:
    """sweeps/<name>/report.md, results.json and the two trade-off plots; returns report.md's path.
    ``read_scores(row)``: a row's per-test-row scores, for the recommendation (none without it)."""
    baselines, adapted = table_rows(runs)
    advice, pick = recommendation_section(baselines + adapted, runs, read_scores) if read_scores else ("", None)
    failed = [run.name for run in runs if run.status == "Failed"]
    unfinished = [run.name for run in runs if run.status not in DONE]
    figures = save_tradeoff_figures(baselines + adapted, folder, f"sweep {sweep}")
    text = (f"# Sweep {sweep}\n\n`{command}`\n\n{len(runs)} runs"
            + (f", {len(failed)} failed: {', '.join(failed)}" if failed else "")
            + (f", {len(unfinished)} not finished yet: {', '.join(unfinished)}" if unfinished else "")
            + (f"; wall time {wall_seconds / 60:.1f} min" if wall_seconds is not None else "") + ".\n"
            + stages_line(runs)
            + "\n## Adapted variants, one block per run\n\n" + markdown(adapted, with_run=True)
            + advice
            + seeds_section(across_seeds(adapted)) + baselines_section(baselines)
            + "\n" + "".join(f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in figures))
    write_json(folder / "results.json", {"sweep": sweep, "command": command, "wall_seconds": wall_seconds,
                                         "recommended": sweep_key(pick) if pick else None,
                                         "runs": [{"name": r.name, "overrides": r.overrides, "status": r.status,
                                                   "stages": r.stages and r.stages.__dict__, "metrics": r.metrics,
                                                   "outputs": r.outputs}
                                                  for r in runs]})
    write_text(folder / "report.md", text)
    return folder / "report.md"
