"""Each stage's work is a function of its paths and config (``run`` in stages/NAME.py), called here
in this process on a copy of the baseline project: with the baseline's inputs it writes what the
same stage wrote when DVC ran it as a process.

The scripts' ``main`` only reads params.yaml, opens the MLflow run and calls ``run`` with the
project's ``PATHS``; here tracking is off (``StageRun(enabled=False)``, what tracking.enabled=false
gives a stage) and the paths are the copy's. What DVC adds (the order, caching, a process per
stage, cold imports) stays covered end to end by tests/test_pipeline.py.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from pipeline_project import DATA, read_rows

from tunelab.config.load import read_extra_test_sets, read_params, to_section
from tunelab.config.schema import (
    AlignConfig,
    BenchConfig,
    DataConfig,
    EvalConfig,
    FormatConfig,
    ModelConfig,
    PromptConfig,
    QuantizeConfig,
    ServeConfig,
    SourceConfig,
    StrategyConfig,
    TrainConfig,
)
from tunelab.errors import TunelabError
from tunelab.paths import BASE, TRAINED, Paths
from tunelab.records import prepared_data
from tunelab.tracking.mlflow_run import StageRun

TIMING = {"seconds", "examples_per_second", "tracking", "load_seconds", "train_seconds", "tokens_per_second", "mfu",
          "matmul_peak_gflops", "matmul_peak_contended", "peak_memory_mb"}
"""Keys whose values are how long something took, or whether MLflow recorded it: not results."""


def stage(name: str):
    """stages/NAME.py as a module (its ``main`` not called)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO_ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def untracked() -> StageRun:
    return StageRun(enabled=False)


def results(record):
    """A metrics record without its timings."""
    if isinstance(record, dict):
        return {key: results(value) for key, value in record.items() if key not in TIMING}
    if isinstance(record, list):
        return [results(value) for value in record]
    return record


def metrics(path: Path):
    return results(json.loads(path.read_text()))


@pytest.fixture
def project(baseline_copy):
    """The copy's paths and params, its data source's path made absolute: this process runs elsewhere."""
    params = read_params(baseline_copy / "params.yaml")
    params["data"]["source"]["path"] = str(baseline_copy / DATA)
    return Paths(baseline_copy), params


def section(params: dict, kind, name: str):
    return to_section(kind, name, params[name])


def evaluation_sections(params: dict, paths: Paths) -> tuple:
    """What evaluate and search_prompt read: eval, the training prompt and the data as prepared."""
    return (section(params, EvalConfig, "eval"), section(params, PromptConfig, "prompt"),
            prepared_data(section(params, DataConfig, "data"), paths))


def test_check_fingerprints_what_the_dvc_run_fingerprinted(project, baseline):
    paths, params = project
    for path in (paths.data_origin, paths.model_origin):
        path.unlink()
    stage("check").run(paths, params)
    done = Paths(baseline.repo)
    assert json.loads(paths.model_origin.read_text()) == json.loads(done.model_origin.read_text())
    assert json.loads(paths.data_origin.read_text())["sha256"] == json.loads(done.data_origin.read_text())["sha256"]


def test_check_refuses_a_bad_value_before_writing(project):
    paths, params = project
    before = paths.data_origin.read_text()
    params["train"]["learning_rate"] = 0
    with pytest.raises(TunelabError, match="train.learning_rate"):
        stage("check").run(paths, params)
    assert paths.data_origin.read_text() == before


def test_fetch_prepare_and_format_write_the_dvc_runs_rows(project, baseline):
    paths, params = project
    done = Paths(baseline.repo)
    for folder in (paths.raw, paths.prepared, paths.formatted):
        shutil.rmtree(folder)
    source = section(params["data"], SourceConfig, "source")
    stage("fetch").run(paths, source, {}, {}, untracked())
    data = section(params, DataConfig, "data")
    stage("prepare").run(paths, data, read_extra_test_sets(params), untracked())
    for split in ("train", "val", "test"):
        assert read_rows(paths.split(paths.prepared, split)) == read_rows(done.split(done.prepared, split))
    assert metrics(paths.prepared_stats) == metrics(done.prepared_stats)
    stage("format").run(paths, section(params, PromptConfig, "prompt"), section(params, FormatConfig, "format"),
                        prepared_data(data, paths), untracked())
    for split in ("train", "val", "test"):
        assert read_rows(paths.split(paths.formatted, split)) == read_rows(done.split(done.formatted, split))


@pytest.mark.parametrize(("name", "folder", "record", "section_name", "kind"), [
    ("base", "base_model", "base_metrics", "model", ModelConfig),
    ("quantize", "deploy", "quantize_metrics", "quantize", QuantizeConfig),
])
def test_a_stage_that_makes_models_makes_the_dvc_runs(project, baseline, name, folder, record, section_name, kind):
    paths, params = project
    shutil.rmtree(getattr(paths, folder))
    stage(name).run(paths, section(params, kind, section_name), untracked())
    done = Paths(baseline.repo)
    assert metrics(getattr(paths, record)) == metrics(getattr(done, record))
    made, expected = getattr(paths, folder), getattr(done, folder)
    assert sorted(p.relative_to(made) for p in made.rglob("*")) == sorted(p.relative_to(expected) for p in expected.rglob("*"))
    for weights in expected.rglob("*.safetensors"):
        assert (made / weights.relative_to(expected)).read_bytes() == weights.read_bytes()


def test_train_reaches_the_dvc_runs_val_loss(project, baseline):
    paths, params = project
    shutil.rmtree(paths.trained_model)
    stage("train").run(paths, section(params, StrategyConfig, "strategy"), section(params, TrainConfig, "train"),
                       untracked())
    trained, done = metrics(paths.train_metrics), metrics(Paths(baseline.repo).train_metrics)
    assert trained["val_loss_before"] == done["val_loss_before"]  # the same base model on the same val rows
    # the same seeds and batches; summation order in threaded kernels may differ between processes
    assert trained["val_loss_after"] == pytest.approx(done["val_loss_after"], abs=1e-3)
    assert (trained["steps"], trained["strategy"]) == (done["steps"], done["strategy"])
    assert (paths.trained_model / "adapter_model.safetensors").is_file()
    assert not list(paths.checkpoints.glob("train-*"))  # finished: its checkpoints dropped


@pytest.mark.parametrize("variant", [BASE, "int8_dynamic"])
def test_evaluate_scores_as_the_dvc_run_scored(project, baseline, variant):
    paths, params = project
    metrics_file, predictions, _ = paths.eval_outputs(variant)
    metrics_file.unlink()
    stage("evaluate").run(paths, variant, *evaluation_sections(params, paths), untracked())
    done = Paths(baseline.repo)
    assert metrics(metrics_file) == metrics(done.eval_outputs(variant)[0])
    for scored in predictions.glob("*.jsonl"):
        assert read_rows(scored) == read_rows(done.eval_outputs(variant)[1] / scored.name)


def test_search_prompt_finds_the_dvc_runs_winner(project, baseline):
    paths, params = project
    paths.prompt_search.unlink()
    stage("search_prompt").run(paths, *evaluation_sections(params, paths), untracked())
    assert metrics(paths.prompt_search) == metrics(Paths(baseline.repo).prompt_search)


def test_benchmark_times_each_made_variant(project, baseline):
    paths, params = project
    paths.bench_metrics.unlink()
    stage("benchmark").run(paths, section(params, BenchConfig, "bench"), untracked())
    measured = json.loads(paths.bench_metrics.read_text())
    assert list(measured["variants"]) == list(json.loads(Paths(baseline.repo).bench_metrics.read_text())["variants"])
    assert measured["variants"][TRAINED]["tokens_per_second"].keys() == {"1", "4"}  # the tiny project's batch sizes


def test_the_skipping_stages_record_why_as_the_dvc_run_did(project, baseline):
    paths, params = project
    done = Paths(baseline.repo)
    align, data = section(params, AlignConfig, "align"), section(params, DataConfig, "data")
    for path in (paths.preference_stats, paths.align_metrics, paths.serve_metrics):
        path.unlink()
    stage("preferences").run(paths, align, data, untracked())
    stage("align").run(paths, align, data, untracked())
    stage("load_test").run(paths, section(params, ServeConfig, "serve"), section(params, PromptConfig, "prompt"),
                           prepared_data(data, paths), untracked())
    for path in ("preference_stats", "align_metrics", "serve_metrics"):
        assert metrics(getattr(paths, path)) == metrics(getattr(done, path))


def test_report_writes_the_dvc_runs_report(project, baseline):
    paths, params = project
    paths.report.unlink()
    trained_as = f"{params['strategy']['name']}, lr {params['train']['learning_rate']}"
    stage("report").run(paths, section(params, EvalConfig, "eval"), params["quantize"]["variants"], trained_as,
                        untracked())
    assert paths.report.read_text() == Paths(baseline.repo).report.read_text()
