"""Stage search_prompt: the strongest prompting of the base model, found on val (never test).

    dvc exp run                                                # runs before evaluate@base
    dvc exp run -S eval.prompt_search.rows=200 -S 'eval.prompt_search.shots=[0,4]'

Every candidate of eval.prompt_search (templates × demonstrations × how they are chosen ×
calibration; tunelab.evaluation.prompt_search) is scored on the first ``rows`` val rows by the
evaluator that scores test. The table (each candidate's val score with its 95% interval) and the
winner go to metrics/prompt_search.json; evaluate@base scores the winner once on test as the
prompting method ``optimized``. A candidate and its calibrated twin share one scoring pass: the
raw choice scores give the uncalibrated prediction.
"""

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import DataConfig, EvalConfig, PromptConfig, ProposerConfig
from tunelab.evaluation.evaluator import EvalSettings, PromptingResult, Scorer
from tunelab.evaluation.metrics import classification_report
from tunelab.evaluation.prompt_search import Candidate, best, candidate_grid, optimized_method, searched_templates
from tunelab.evaluation.proposer import check_endpoint, propose
from tunelab.evaluation.tasks import TASKS
from tunelab.io.jsonl import read_jsonl
from tunelab.models.loading import continues_a_cache, load_variant
from tunelab.paths import BASE, PATHS, Paths
from tunelab.prompts.formatting import load_tokenizer
from tunelab.prompts.special_tokens import DataText
from tunelab.records import prepared_data
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run


def uncalibrated_report(result: PromptingResult, labels: list[str], seed: int) -> dict:
    """A calibrated choice scoring's report as if uncalibrated: each row's likeliest raw choice."""
    predicted = [labels[max(range(len(labels)), key=list(p["choice"]["logprobs"].values()).__getitem__)]
                 for p in result.predictions]
    return classification_report([p["label"] for p in result.predictions], predicted, labels, seed=seed)


def scored_once(candidates: list[Candidate]) -> dict[str, Candidate]:
    """Each candidate's name → the candidate whose scoring pass gives its figures (its calibrated
    twin, where that is searched too)."""
    calibrated = {(c.template.name, c.prompting.shots, c.prompting.selection): c
                  for c in candidates if c.prompting.calibrate}
    return {c.name: calibrated.get((c.template.name, c.prompting.shots, c.prompting.selection), c) for c in candidates}


class Search:
    """Candidates scored on val, each once (a calibrated twin's pass serves its uncalibrated one too)."""

    def __init__(self, scorer: Scorer, val: list[dict], train: list[dict], scoring: str, seed: int):
        self.scorer, self.val, self.train, self.scoring, self.seed = scorer, val, train, scoring, seed
        self.passes: dict[str, PromptingResult] = {}
        self.table: list[dict] = []
        self.candidates: dict[str, Candidate] = {}

    def score(self, candidates: list[Candidate]) -> None:
        source = scored_once(candidates)
        for candidate in candidates:
            scored = source[candidate.name]
            if scored.name not in self.passes:
                self.passes[scored.name] = self.scorer.score(self.val, scored.template, scored.prompting, self.train,
                                                             f"search {len(self.table) + 1}")
            result = self.passes[scored.name]
            report = (result.metrics[self.scoring] if scored is candidate
                      else uncalibrated_report(result, self.scorer.labels, self.seed))
            headline = self.scorer.task.headline
            low, high = report[f"{headline}_ci95"]
            self.table.append({**candidate.to_json(), "score": report[headline], "ci95": [low, high],
                               "examples": report["examples"]})
            self.candidates[candidate.name] = candidate
            print(f"search_prompt: {candidate.name}: val {headline} {report[headline]:.3f} [{low:.3f}, {high:.3f}] "
                  f"on {report['examples']} rows")

    def winner(self) -> Candidate:
        return self.candidates[best(self.table)["name"]]


def refine(search: Search, proposer: ProposerConfig, seed: int) -> None:
    """OPRO rounds: the endpoint reads every instruction tried (the winning template's system
    message) with its best val score and proposes new ones, tried with the winner's settings."""
    for round_number in range(1, proposer.rounds + 1):
        winner = search.winner()
        tried: dict[str, float] = {}
        for entry in search.table:
            system = entry["template"]["system"] or ""
            tried[system] = max(tried.get(system, 0.0), entry["score"])
        proposals = propose(proposer, winner.template.template, list(tried.items()), search.scorer.task.headline,
                            seed + 100 * round_number)
        print(f"search_prompt: proposer round {round_number}: {len(proposals)} new instructions from {proposer.base_url}")
        search.score([Candidate(replace(winner.template, name=f"{winner.template.name}+proposed{round_number}.{i}",
                                        system=text), winner.prompting)
                      for i, text in enumerate(proposals, 1)])


def run(paths: Paths, settings: EvalConfig, training_prompt: PromptConfig, data: DataConfig,
        tracking: StageRun) -> None:
    """Score the candidate promptings of the optimized method on the first val rows under ``paths``
    with the base model; write the table and its winner to ``paths.prompt_search``."""
    task, labels = TASKS[data.task], data.labels
    name = optimized_method(settings)
    if name is None:
        reason = "eval.prompting has no optimized method"
        tracking.write_metrics(paths.prompt_search, {"skipped": reason})
        print(f"search_prompt: skipped: {reason}")
        return
    optimized, proposer = settings.prompting[name], settings.prompt_search.proposer
    if proposer:
        check_endpoint(proposer)
    candidates = candidate_grid(searched_templates(training_prompt, settings, task), settings, optimized)
    required = data.prepared_fields
    tokenizer = load_tokenizer(paths.base_model)
    data_text = DataText(tokenizer)  # as the format stage escapes them: control tokens in data are text
    val = data_text.rows(read_jsonl(paths.split(paths.prepared, "val"), required=required)[: settings.prompt_search.rows])
    train = data_text.rows(read_jsonl(paths.split(paths.prepared, "train"), required=required))
    model = load_variant(BASE, paths)
    scorer = Scorer(task, labels, model, tokenizer,
                    EvalSettings(settings.batch_size, settings.length_normalize, settings.seed, continues_a_cache(model),
                                 settings.generate_batch_size))
    search = Search(scorer, val, train, optimized.scoring[0], settings.seed)
    search.score(candidates)
    if proposer:
        refine(search, proposer, settings.seed)
    winner = best(search.table)
    tracking.write_metrics(paths.prompt_search, {"task": task.name, "metric": task.headline, "scoring": search.scoring,
                                                 "rows": len(val), "method": name, "candidates": search.table,
                                                 "winner": winner})
    tracking.log_metrics({"winner_val_score": winner["score"], "candidates": len(search.table)})
    tracking.set_tag("tunelab.prompt_search.winner", winner["name"])
    tracking.log_artifact(paths.prompt_search)
    print(f"search_prompt: winner: {winner['name']}: val {task.headline} {winner['score']:.3f}")


def main() -> None:
    params = read_params()
    settings = to_section(EvalConfig, "eval", params.get("eval"))
    training_prompt = to_section(PromptConfig, "prompt", params.get("prompt"))
    data = prepared_data(to_section(DataConfig, "data", params.get("data")))
    with stage_run("search_prompt", params, sections=("eval", "prompt")) as tracking:
        run(PATHS, settings, training_prompt, data, tracking)


if __name__ == "__main__":
    run_stage(main)
