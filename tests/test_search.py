"""tunelab tune: Optuna over a space in Hydra's sweep syntax, each trial a DVC experiment of the
train stage, pruned on its val loss, the best reproducible from its experiment."""

import json

import pytest
from conftest import REPO_ROOT
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pipeline_project import run

from tunelab.errors import TunelabError
from tunelab.sweeps.overrides import check_runs
from tunelab.sweeps.search import corners, parse_space

CONF = REPO_ROOT / "conf"


def test_hydra_sweep_syntax_becomes_optunas_distributions():
    space = parse_space(["train.learning_rate=tag(log, interval(1e-5, 1e-3))", "strategy.lora.r=choice(4,8,16)",
                         "train.max_steps=tag(int, interval(10, 50))", "train.warmup_ratio=interval(0.0, 0.1)",
                         "train.seed=7"])
    assert space.distributions == {
        "train.learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
        "strategy.lora.r": CategoricalDistribution(["4", "8", "16"]),
        "train.max_steps": IntDistribution(10, 50),
        "train.warmup_ratio": FloatDistribution(0.0, 0.1)}
    assert space.fixed == ["train.seed=7"]
    assert corners(space) == [
        ["train.seed=7", "train.learning_rate=1e-05", "strategy.lora.r=4", "train.max_steps=10", "train.warmup_ratio=0.0"],
        ["train.seed=7", "train.learning_rate=0.001", "strategy.lora.r=16", "train.max_steps=50", "train.warmup_ratio=0.1"]]


@pytest.mark.parametrize("space, message", [
    (["train.learning_rate=interval(1e-3, 1e-5)"], "tune: train.learning_rate: interval(0.001, 1e-05) is empty"),
    (["train.learning_rate=tag(log, interval(0, 1e-3))"], "a log-scale interval needs low > 0"),
    (["train.seed=7"], "tune: nothing to search"),
    (["train.learning_rate=interval(1e-5"], "tune: "),
])
def test_a_bad_search_space_is_one_line(space, message):
    with pytest.raises(TunelabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_space(space)


def test_an_unknown_key_in_the_space_is_refused_before_any_trial():
    with pytest.raises(TunelabError, match="train.lr"):
        check_runs(corners(parse_space(["train.lr=interval(1e-5, 1e-3)"])), CONF)
    with pytest.raises(TunelabError, match="train.learning_rate"):  # an end out of range: checked, not only the key
        check_runs(corners(parse_space(["train.learning_rate=interval(-1.0, 1e-3)"])), CONF)


def test_cluster_keys_without_the_ray_executor_are_one_line(capsys):
    from tunelab.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["tune", "train.learning_rate=choice(0.01,0.1)", "cluster.address=10.0.0.5:6379"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: cluster.address=10.0.0.5:6379: the cluster section configures --executor ray only\n"


@pytest.mark.slow
def test_four_trials_one_pruned_and_the_best_reproduced_from_its_experiment(baseline_copy):
    project = baseline_copy
    # one learning rate that learns and three that cannot; seed 6 asks 0.01 first, then 1e-8, 3e-8, 3e-8: each
    # loser is pruned at its first evaluation, its val loss above the median of the completed trials there
    # (distinct rates: a repeated configuration would be restored from DVC's run cache, not trained)
    result = run(project, "tunelab", "tune", "train.learning_rate=choice(0.01,0.00000001,0.00000002,0.00000003)",
                 "--trials", "4", "--name", "search", "--seed", "6")
    record = json.loads((project / "sweeps/search/tune.json").read_text())
    states = [(t["params"]["train.learning_rate"], t["state"]) for t in record["trials"]]
    assert states == [("0.01", "COMPLETE"), ("1e-08", "PRUNED"), ("3e-08", "PRUNED"), ("3e-08", "PRUNED")], states
    best = next(t for t in record["trials"] if t["name"] == record["best"])
    assert best["params"] == {"train.learning_rate": "0.01"}
    report = (project / "sweeps/search/tune.md").read_text()
    assert f"**Best: `{best['name']}`**" in report and "| search-1 |" in report
    assert (project / "sweeps/search/optimization_history.png").stat().st_size > 10_000
    assert "PRUNED" in result.stdout

    run(project, "dvc", "exp", "apply", best["name"])
    # --no-hydra: with Hydra on, a plain `dvc exp run` composes params.yaml from conf/ again, dropping what apply set
    run(project, "dvc", "exp", "run", "--no-hydra", "--force", "--single-item", "train")  # trained again, not restored
    again = json.loads((project / "metrics/train.json").read_text())["val_loss_after"]
    assert again == pytest.approx(best["value"], rel=1e-3)
