"""tunelab's choice scoring against lm-evaluation-harness's HF backend on the same prompts, on the
tiny model: the evaluate stage, then bench/lm_eval_crosscheck.py, as processes."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT
from test_evaluate_stage import LABELS, run_stage, workdir  # noqa: F401 (workdir: the fixture)

from tunelab.evaluation.lm_eval_task import agreement


@pytest.mark.slow
def test_lm_eval_picks_the_answer_tunelab_picks_on_every_row_and_the_task_is_left_for_the_user(workdir):  # noqa: F811
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["eval"]["prompting"] = {"zero_shot": params["eval"]["prompting"]["zero_shot"]}  # the method checked, alone
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    evaluated = run_stage(workdir, str(REPO_ROOT / "stages/evaluate.py"), "base")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    checked = subprocess.run([sys.executable, str(REPO_ROOT / "bench/lm_eval_crosscheck.py"), "--root", str(workdir),
                              "--variants", "base", "--batch-size", "4"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr[-3000:]
    report = json.loads((workdir / "bench/results/lm_eval_crosscheck.json").read_text())
    base = report["variants"]["base"]
    assert (report["rows"], base["rows"], base["agreement"], base["differing_rows"]) == (7, 7, 1.0, [])
    ours = json.loads((workdir / "metrics/eval/base.json").read_text())["prompting"]["zero_shot"]["scoring"]["choice"]
    assert base["lm_eval_accuracy"] == base["tunelab_accuracy"] == round(ours["accuracy"], 6)
    task = (workdir / "bench/results/lm_eval/tunelab_test.yaml").read_text()
    assert "dataset_path: json" in task and str(workdir / "bench/results/lm_eval/tunelab_test.jsonl") in task
    document = json.loads((workdir / "bench/results/lm_eval/tunelab_test.jsonl").read_text().splitlines()[0])
    assert document["choices"] == LABELS and document["prompt"].endswith("<|im_start|>assistant\n")
    assert "base: lm-eval agrees with tunelab on 100.0% of 7 rows" in checked.stdout


def test_a_row_where_the_evaluators_differ_is_listed_with_tunelabs_margin():
    predictions = [{"id": "a", "label": "positive", "choice": {"prediction": "positive",
                                                               "logprobs": {"negative": -2.0, "positive": -1.5}}},
                   {"id": "b", "label": "negative", "choice": {"prediction": "negative",
                                                               "logprobs": {"negative": -1.0, "positive": -3.0}}}]
    report = agreement({"a": 0, "b": 0}, predictions, LABELS)
    assert report["agreement"] == 0.5 and report["tunelab_accuracy"] == 1.0 and report["lm_eval_accuracy"] == 0.5
    assert report["differing_rows"] == [{"id": "a", "tunelab": "positive", "lm_eval": "negative", "tunelab_margin": 0.5}]
