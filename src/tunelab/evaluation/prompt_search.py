"""The prompt search: which prompting of the base model is strongest, decided on val, never on test.

A candidate is a template (the training prompt, the templates of eval.prompting's zero_shot and
few_shot methods, eval.prompt_search.templates), a number of demonstrations, how they are chosen
(balanced, nearest) and, for choice scoring, contextual calibration on or off. Each is scored
on the first eval.prompt_search.rows val rows by the same Scorer that scores test; the best
(ties: fewer demonstrations, then grid order) is the ``optimized`` prompting method, which
evaluate@base scores once on test beside the fixed baselines.
"""

import dataclasses
import random
from dataclasses import dataclass, replace

from tunelab.config.schema import GENERATIVE_METHODS, EvalConfig, PromptConfig, PromptingConfig
from tunelab.errors import TunelabError
from tunelab.evaluation.prompting import method_template
from tunelab.evaluation.tasks import Task


@dataclass(frozen=True)
class Candidate:
    template: PromptConfig
    prompting: PromptingConfig

    @property
    def name(self) -> str:
        p = self.prompting
        shots = f"{p.shots} {p.selection}" if p.shots else "0 shots"
        return f"{self.template.name}, {shots}" + (", calibrated" if p.calibrate else "")

    def to_json(self) -> dict:
        p = self.prompting
        return {"name": self.name, "template": dataclasses.asdict(self.template), "shots": p.shots,
                "selection": p.selection if p.shots else None, "calibrate": p.calibrate}


def optimized_method(settings: EvalConfig) -> str | None:
    """The name of eval.prompting's optimized method, if there is one."""
    return next((name for name, p in settings.prompting.items() if p.method == "optimized"), None)


def searched_templates(training: PromptConfig, settings: EvalConfig, task: Task) -> list[PromptConfig]:
    """The training prompt, then each distinct template the answer-only methods read, then the extra ones."""
    templates = [training] + [method_template(training, p, task) for p in settings.prompting.values()
                              if p.method not in (*GENERATIVE_METHODS, "optimized")]
    templates += list(settings.prompt_search.templates.values())
    unique = {}
    for template in templates:
        unique.setdefault(template.name, template)
    return list(unique.values())


def candidate_grid(templates: list[PromptConfig], settings: EvalConfig, optimized: PromptingConfig) -> list[Candidate]:
    """Every candidate in grid order, sampled down to eval.prompt_search.candidates (by eval.seed;
    the zero-shot candidates are always kept, so the search can never do worse on val than zero-shot)."""
    search = settings.prompt_search
    calibrations = search.calibrate if optimized.scoring == ["choice"] else [False]
    grid = []
    for template in templates:
        for shots in search.shots:
            for selection in (search.selection if shots else ["balanced"]):
                for calibrate in calibrations:
                    prompting = replace(optimized, method="few_shot" if shots else "zero_shot", shots=shots,
                                        selection=selection, calibrate=calibrate)
                    grid.append(Candidate(template, prompting))
    if search.candidates is None or len(grid) <= search.candidates:
        return grid
    kept = [i for i, c in enumerate(grid) if not c.prompting.shots and not c.prompting.calibrate]
    if len(kept) > search.candidates:
        raise TunelabError(f"eval.prompt_search.candidates: {search.candidates} is fewer than the {len(kept)} "
                           "zero-shot candidates (one per template); raise it or search fewer templates")
    others = [i for i in range(len(grid)) if i not in kept]
    chosen = set(kept) | set(random.Random(settings.seed).sample(others, search.candidates - len(kept)))
    return [c for i, c in enumerate(grid) if i in chosen]


def best(table: list[dict]) -> dict:
    """The highest val score; ties go to fewer demonstrations, then to the earlier candidate."""
    return max(enumerate(table), key=lambda item: (item[1]["score"], -item[1]["shots"], -item[0]))[1]


def winner_prompting(winner: dict, optimized: PromptingConfig) -> tuple[PromptConfig, PromptingConfig]:
    """The search's winner (metrics/prompt_search.json) as the template and prompting evaluate scores."""
    shots = winner["shots"]
    return PromptConfig(**winner["template"]), replace(
        optimized, method="few_shot" if shots else "zero_shot", shots=shots,
        selection=winner["selection"] or "balanced", calibrate=winner["calibrate"])
