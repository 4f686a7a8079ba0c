"""dvc.yaml's graph, read statically with DVC's own parser: which stages a change can rerun.

The end-to-end tests check a few changes against ``dvc status`` on a real project; this test
holds the whole graph: every params section reaches only the stages that read it, and the
prompting baselines never sit downstream of training.
"""

import networkx
from conftest import REPO_ROOT


def graph_and_params():
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        graph = repo.index.graph  # edges run from a stage to the stages whose outputs it reads
        params = {stage.name: {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}
                  for stage in graph}
        names = {stage: stage.name for stage in graph}
        return networkx.relabel_nodes(graph, names), params


def downstream(graph, name: str) -> set[str]:
    return set(networkx.ancestors(graph, name))


def readers(params: dict[str, set[str]], key: str) -> set[str]:
    """Stages that depend on ``key``: on it, on a key inside it, or on the section holding it."""
    return {stage for stage, keys in params.items()
            if any(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in keys)}


DEPLOYED = {"evaluate_deployed@merged", "evaluate_deployed@int8_dynamic"}


def test_each_params_section_is_read_only_by_the_stages_it_configures():
    _, params = graph_and_params()
    assert readers(params, "train") == {"train", "report"}  # the report reads train.learning_rate for its titles
    assert readers(params, "strategy") == {"train", "report"}
    assert readers(params, "bench") == {"benchmark"}
    assert readers(params, "quantize") == {"quantize", "report"}
    assert readers(params, "serve") == {"load_test"}  # the report reads its metrics file, not its settings
    # the load test sends the test prompts as the task renders them
    assert readers(params, "prompt") == {"format", "search_prompt", "evaluate@base", "evaluate@trained",
                                         "evaluate@aligned", *DEPLOYED, "load_test"}
    evaluating = {"evaluate@base", "evaluate@trained", "evaluate@aligned", *DEPLOYED, "report"}
    assert readers(params, "eval") == {*evaluating, "search_prompt", "check", "fetch", "prepare"}
    assert readers(params, "eval.prompting") == {*evaluating, "search_prompt"}
    assert readers(params, "eval.prompt_search") == {*evaluating, "search_prompt"}  # evaluate reads all of eval
    assert readers(params, "eval.limit") == evaluating  # a test-row limit never reruns the search on val
    assert readers(params, "eval.recommend") == {"report"}  # another margin rescores nothing
    assert readers(params, "eval.extra_test_sets") == {*evaluating, "check", "fetch", "prepare"}  # fetched and prepared
    assert readers(params, "model") == {"check", "base"}
    assert readers(params, "data.source") == {"check", "fetch", "prepare"}  # prepare reads the whole data section
    assert readers(params, "data.train_source") == {"check", "fetch", "prepare"}
    # align=none → dpo reruns the pairs and the alignment, nothing of the pipeline before them (the check stage
    # fingerprints a preference file, and is no reader of align: a changed path reaches it through params.yaml)
    assert readers(params, "align") == {"preferences", "align"}
    assert readers(params, "align.learning_rate") == {"align"}  # another learning rate never samples pairs again


def test_training_reruns_the_trained_model_downstream_and_never_the_prompting_baselines():
    graph, _ = graph_and_params()
    after_training = {"evaluate@trained", "preferences", "align", "evaluate@aligned", "quantize", *DEPLOYED, "benchmark",
                      "load_test", "report"}
    assert downstream(graph, "train") == after_training
    assert "evaluate@base" not in downstream(graph, "train")
    assert downstream(graph, "format") == {"train", *after_training}  # evaluate@base reads prepared data, not formatted
    assert downstream(graph, "fetch") == {"prepare", "format", "train", "search_prompt", "evaluate@base",
                                          *after_training}
    assert "search_prompt" not in downstream(graph, "train")
    assert downstream(graph, "quantize") == {*DEPLOYED, "benchmark", "load_test", "report"}
    assert downstream(graph, "benchmark") == {"report"}
    # the deployable variants are the aligned model's where alignment ran
    assert downstream(graph, "align") == {"evaluate@aligned", "quantize", *DEPLOYED, "benchmark", "load_test", "report"}
    assert downstream(graph, "preferences") == {"align", *downstream(graph, "align")}
    # an edited preference file outside the repository reruns the pairs: check's fingerprint is their dependency
    assert graph.has_edge("preferences", "check")


def test_the_prompt_search_feeds_the_base_models_evaluation_and_the_report_only():
    graph, _ = graph_and_params()
    assert downstream(graph, "search_prompt") == {"evaluate@base", "report"}
    assert set(networkx.descendants(graph, "search_prompt")) == {"check", "fetch", "prepare", "base"}  # val and train
