"""The sweep's report: every run's variants side by side, from ``dvc exp show --json``.

Prompting baselines do not depend on the swept training keys, so they are computed once and
listed once; each run contributes its trained and deployable variants (its eval.headline result).
"""

from dataclasses import dataclass
from pathlib import Path

from tunelab.config.load import to_section
from tunelab.config.schema import EvalConfig
from tunelab.io.atomic import write_json, write_text
from tunelab.layout import LAYOUT
from tunelab.reporting.plots import save_tradeoff_figures
from tunelab.reporting.tables import cell, headline_metric, score_cell, with_score
from tunelab.sweeps.queue import DONE, StageCounts

EVAL_METRICS = str(LAYOUT.eval_summary)
PARAMS = "params.yaml"


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
        """(prompting method, scoring) of the run's headline figure: its eval.headline."""
        return to_section(EvalConfig, "eval", self.params.get("eval")).headline_result()


def experiments(show: list[dict], names: set[str]) -> dict[str, dict]:
    """``{name: {"params": params.yaml, "metrics": metrics/eval.json, "outputs": {path: hash}}}``
    of each named experiment in ``dvc exp show --json`` output."""
    found = {}
    for baseline in show:
        for group in baseline.get("experiments") or []:
            rev = group["revs"][0]
            if rev.get("name") in names:
                data = rev.get("data") or {}
                found[rev["name"]] = {"params": (data.get("params") or {}).get(PARAMS, {}).get("data", {}),
                                      "metrics": (data.get("metrics") or {}).get(EVAL_METRICS, {}).get("data", {}),
                                      "outputs": {path: out["hash"] for path, out in (data.get("outs") or {}).items()
                                                  if out.get("hash")}}
    return found


def _split(key: str) -> tuple[str, str, str]:
    variant, prompting, scoring = key.split("/")
    return variant, prompting, scoring


def _row(run: str, overrides: str, key: str, figures: dict) -> dict:
    variant, prompting, scoring = _split(key)
    return with_score({"run": run, "overrides": overrides, "variant": variant, "prompting": prompting, "scoring": scoring,
                       "label": f"{variant} · {overrides}" if overrides else f"{variant}/{prompting}", **figures})


def table_rows(runs: list[SweepRun]) -> tuple[list[dict], list[dict]]:
    """(prompting baselines, from the first run that has them; each run's adapted variants)."""
    baselines, adapted = [], []
    for run in runs:
        overrides = " ".join(run.overrides)
        headline = run.headline if run.metrics else None
        for key, figures in run.metrics.items():
            variant, prompting, scoring = _split(key)
            if variant == "base" and not baselines:
                baselines = [_row(run.name, "", k, f) for k, f in run.metrics.items() if k.startswith("base/")]
            elif variant != "base" and (prompting, scoring) == headline:
                adapted.append(_row(run.name, overrides, key, figures))
    return baselines, adapted


def markdown(rows: list[dict], with_run: bool) -> str:
    header = (("| run | overrides " if with_run else "| prompting | scoring ")
              + f"| variant | {headline_metric(rows)} [95% CI] | train s | tokens/s | latency p50 ms | size MB |\n"
              + "|---" * 8 + "|\n")
    lines = []
    for r in rows:
        first = f"| {r['run']} | {r['overrides']} " if with_run else f"| {r['prompting']} | {r['scoring']} "
        lines.append(first + f"| {r['variant']} | {score_cell(r)} | {cell(r.get('train_seconds'), '{:.0f}')} "
                     f"| {cell(r.get('tokens_per_second'))} | {cell(r.get('token_latency_p50_ms'))} "
                     f"| {cell(r.get('size_mb'))} |")
    return header + "\n".join(lines) + "\n"


def stages_line(runs: list[SweepRun]) -> str:
    counted = [run.stages for run in runs if run.stages]
    if not counted:
        return ""
    executed = sum(c.executed for c in counted)
    skipped, restored = sum(c.skipped for c in counted), sum(c.restored for c in counted)
    total = executed + skipped + restored
    return (f"Stage executions: {executed} of {total} ran; caching saved {skipped + restored} "
            f"({skipped} unchanged since the baseline, {restored} restored from DVC's run cache).\n")


def write_report(folder: Path, sweep: str, command: str, runs: list[SweepRun], wall_seconds: float | None) -> Path:
    """sweeps/<name>/report.md, results.json and the two trade-off plots; returns report.md's path."""
    baselines, adapted = table_rows(runs)
    failed = [run.name for run in runs if run.status == "Failed"]
    unfinished = [run.name for run in runs if run.status not in DONE]
    figures = save_tradeoff_figures(baselines + adapted, folder, f"sweep {sweep}")
    text = (f"# Sweep {sweep}\n\n`{command}`\n\n{len(runs)} runs"
            + (f", {len(failed)} failed: {', '.join(failed)}" if failed else "")
            + (f", {len(unfinished)} not finished yet: {', '.join(unfinished)}" if unfinished else "")
            + (f"; wall time {wall_seconds / 60:.1f} min" if wall_seconds is not None else "") + ".\n"
            + stages_line(runs)
            + "\n## Adapted variants, one block per run\n\n" + markdown(adapted, with_run=True)
            + "\n## Prompting baselines (shared by every run, computed once)\n\n" + markdown(baselines, with_run=False)
            + "\n" + "".join(f"![{p.stem.replace('_', ' ')}]({p.name})\n" for p in figures))
    write_json(folder / "results.json", {"sweep": sweep, "command": command, "wall_seconds": wall_seconds,
                                         "runs": [{"name": r.name, "overrides": r.overrides, "status": r.status,
                                                   "stages": r.stages and r.stages.__dict__, "metrics": r.metrics,
                                                   "outputs": r.outputs}
                                                  for r in runs]})
    write_text(folder / "report.md", text)
    return folder / "report.md"
