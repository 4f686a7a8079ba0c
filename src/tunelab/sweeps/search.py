"""``tunelab tune``: Optuna searches a space written in Hydra's sweep syntax; each trial a DVC experiment.

    tunelab tune 'train.learning_rate=tag(log, interval(1e-5, 1e-3))' 'strategy.lora.r=choice(4,8,16)' --trials 8

``interval(a, b)`` is a float range, ``tag(int, interval(a, b))`` an int range (as in Hydra's
Optuna sweeper), ``tag(log, ...)`` samples on a log scale, ``choice(...)``, ``range(...)`` and
``a,b`` are categorical, a plain ``key=value`` is fixed for every trial. A configuration asked twice
is restored from DVC's run cache, not trained again. Optuna (TPE by default) asks, DVC runs: each trial is an experiment of
the pipeline up to the train stage (``dvc exp run --queue train``), so it is cached and
reproducible like any sweep run, and its objective is what the train stage measures on the val
split, never on test: ``val_loss_after`` in metrics/train.json, lower is better. The train stage
reports each evaluation's val loss to the trial, and Optuna's MedianPruner stops a trial whose loss
is worse than the median of the completed trials at the same step (:mod:`tunelab.training.pruning`).
The study lives in ``--storage`` (an SQLAlchemy URL: the tracking server's PostgreSQL for a team;
by default a sqlite file in sweeps/NAME/), which workers on other machines share. ``--executor ray``
runs each trial as a Ray task (tunelab.sweeps.ray_cluster), as ``tunelab -m`` does; its nodes must
reach the storage (a sqlite file only where every node is this machine).
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from tunelab.errors import TunelabError
from tunelab.training.pruning import PRUNED_AT, median_pruner

OBJECTIVE = ("metrics/train.json", "val_loss_after")
TARGET_STAGE = "train"


@dataclass(frozen=True)
class Space:
    """The search space: a distribution per searched key, and the overrides every trial shares."""

    distributions: dict = field(default_factory=dict)  # key -> optuna distribution
    fixed: list[str] = field(default_factory=list)


def parse_space(overrides: list[str]) -> Space:
    """Hydra's sweep syntax → Optuna's distributions, read by Hydra's public override parser."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise TunelabError(f"tune: {error}") from None
    space = Space()
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            space.fixed.append(f"{key}={override.get_value_element_as_str()}")
            continue
        sweep = override.value()
        if isinstance(sweep, IntervalSweep):
            low, high = sweep.start, sweep.end
            if not low < high:
                raise TunelabError(f"tune: {key}: interval({low}, {high}) is empty; give interval(low, high) with low < high")
            log = "log" in sweep.tags
            if log and low <= 0:
                raise TunelabError(f"tune: {key}: a log-scale interval needs low > 0, not {low}")
            space.distributions[key] = (IntDistribution(int(low), int(high), log=log) if "int" in sweep.tags
                                        else FloatDistribution(float(low), float(high), log=log))
        elif isinstance(sweep, (ChoiceSweep, RangeSweep)):
            space.distributions[key] = CategoricalDistribution(list(override.sweep_string_iterator()))
        else:
            raise TunelabError(f"tune: {key}: {type(sweep).__name__} is no search space")
    if not space.distributions:
        raise TunelabError("tune: nothing to search; give at least one interval(...), choice(...) or a,b")
    return space


def corners(space: Space) -> list[list[str]]:
    """The space's two extremes as runs (every low end, every high end): checked against conf/ and
    the schema before a trial starts, so a key that does not exist or a value out of range is one line."""
    def end(distribution, last: bool) -> str:
        if hasattr(distribution, "choices"):
            return str(distribution.choices[-1 if last else 0])
        return str(distribution.high if last else distribution.low)

    return [[*space.fixed, *(f"{key}={end(d, last)}" for key, d in space.distributions.items())] for last in (False, True)]


def overrides_of(space: Space, params: dict) -> list[str]:
    return [*space.fixed, *(f"{key}={value}" for key, value in params.items())]


def open_study(name: str, storage: str, seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines repeat the progress bar
    try:
        return optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                   sampler=optuna.samplers.TPESampler(seed=seed),
                                   pruner=median_pruner())
    except optuna.exceptions.DuplicatedStudyError:
        raise TunelabError(f"tune: a study named {name} exists in {storage}; choose another --name") from None


@dataclass(frozen=True)
class TrialOutcome:
    name: str
    number: int
    params: dict
    state: str  # COMPLETE, PRUNED or FAIL, as Optuna says
    value: float | None


def objective_values(names: set[str]) -> dict[str, float]:
    """Each finished experiment's objective, from DVC's record of it."""
    import json

    from tunelab.sweeps.queue import dvc
    from tunelab.sweeps.summary import experiments

    recorded = experiments(json.loads(dvc("exp", "show", "--json")), names)
    return {name: data["train"][OBJECTIVE[1]] for name, data in recorded.items() if OBJECTIVE[1] in data["train"]}


Execute = Callable[[dict[str, list[str]]], dict[str, str]]
"""Runs a batch of trials (experiment name → overrides) up to TARGET_STAGE, tagged with the search's
sweep: each one's status, as DVC's queue says it (Success, Failed, ...), with the successes'
experiments in this repository."""


def on_queue(name: str, jobs: int) -> Execute:
    """Trials of search ``name`` as queued DVC experiments, ``jobs`` workers."""
    from tunelab.sweeps import queue

    def execute(trials: dict[str, list[str]]) -> dict[str, str]:
        for run_name, overrides in trials.items():
            queue.queue(run_name, [*overrides, f"tracking.sweep={name}"], (TARGET_STAGE,))
        queue.start_workers(jobs)
        return queue.wait(list(trials), lambda *_: None, poll_seconds=2)

    return execute


def run_trials(study, space: Space, name: str, trials: int, jobs: int, on_done, execute: Execute) -> list[TrialOutcome]:
    """Ask, run and tell, ``jobs`` trials at a time: each batch sampled from what the earlier ones scored."""
    from optuna.trial import TrialState

    outcomes: list[TrialOutcome] = []
    while len(outcomes) < trials:
        asked = {f"{name}-{trial.number + 1}": trial
                 for trial in (study.ask(space.distributions) for _ in range(min(jobs, trials - len(outcomes))))}
        statuses = execute({run_name: [*overrides_of(space, trial.params), f"tracking.trial={trial.number}"]
                            for run_name, trial in asked.items()})
        values = objective_values(set(asked))
        stored = study.get_trials(deepcopy=False)  # what the train stages wrote into the study: pruned or not
        for run_name, trial in asked.items():
            if statuses[run_name] == "Success" and run_name in values:
                study.tell(trial, values[run_name])
                outcome = TrialOutcome(run_name, trial.number, trial.params, "COMPLETE", values[run_name])
            elif PRUNED_AT in stored[trial.number].user_attrs:
                study.tell(trial, state=TrialState.PRUNED)
                outcome = TrialOutcome(run_name, trial.number, trial.params, "PRUNED", None)
            else:
                study.tell(trial, state=TrialState.FAIL)
                outcome = TrialOutcome(run_name, trial.number, trial.params, "FAIL", None)
            outcomes.append(outcome)
            on_done(outcome)
    return outcomes


def write_report(folder, study, outcomes: list[TrialOutcome], command: str):
    """sweeps/NAME/tune.md and tune.json: the best trial, every trial, the optimisation history and
    the parameters' importances (Optuna's own matplotlib plots)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    from tunelab.io.atomic import write_json, write_text
    from tunelab.reporting.markdown import pipe_table

    complete = [o for o in outcomes if o.state == "COMPLETE"]
    best = min(complete, key=lambda o: o.value) if complete else None
    rows = [[o.name, o.state, " ".join(f"{k}={v}" for k, v in o.params.items()),
             "—" if o.value is None else f"{o.value:.4f}"] for o in outcomes]
    lines = [f"# Search {study.study_name}", "", f"`{command}`", "",
             f"{len(outcomes)} trials: {len(complete)} complete, {sum(o.state == 'PRUNED' for o in outcomes)} pruned, "
             f"{sum(o.state == 'FAIL' for o in outcomes)} failed. Objective: val loss after training (lower is better).", ""]
    if best:
        lines += [f"**Best: `{best.name}`** ({' '.join(f'{k}={v}' for k, v in best.params.items())}): val loss "
                  f"{best.value:.4f}. The whole pipeline on it: `dvc exp apply {best.name} && dvc exp run --no-hydra` "
                  "(without --no-hydra, DVC composes params.yaml from conf/ again and drops the applied values).", ""]
    lines += [pipe_table(["trial", "state", "params", "val loss"], rows)]
    plots = {"optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history,
             "param_importances.png": optuna.visualization.matplotlib.plot_param_importances}
    for file, plot in plots.items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as error:  # importances need two complete trials that differ
            lines.append(f"({file}: not drawn, {error})")
            continue
        axes.figure.savefig(folder / file, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        lines.append(f"![{file.removesuffix('.png').replace('_', ' ')}]({file})")
    write_text(folder / "tune.md", "\n".join(lines) + "\n")
    write_json(folder / "tune.json", {"study": study.study_name, "command": command,
                                      "best": best.name if best else None,
                                      "trials": [asdict(o) for o in outcomes]})
    return folder / "tune.md"
