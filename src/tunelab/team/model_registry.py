"""``tunelab register``: the variant to deploy as an MLflow model in the tracking server's registry.

    tunelab register                     # the report's recommendation (reporting.tables.recommended)
    tunelab register --variant merged    # any servable variant
    tunelab serve models:/tunelab@champion

The model is a pyfunc (team/greedy_model.py) whose artifact is the variant's Hugging Face
folder with its tokenizer and chat template, and whose version carries its lineage: the git
commit, the dvc.lock hash of the folder, the test split's fingerprint and the headline metric
with its interval. A folder already registered under the name (the same dvc.lock hash) is not
copied again: its version is reused, so a re-run of an unchanged pipeline costs no storage.

The alias ``champion`` moves by the report's own rule: a new version replaces the champion only
when, on the same test split, ``recommended`` picks it over the champion (the cheaper of the
two when the other is best or non-inferior within eval.recommend.margin; else the better). A
version scored on another test split cannot be compared row by row: the alias stays, saying so.
"""

import json
import logging
import re
import tempfile
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.paths import BASE, PATHS, TRAINED
from tunelab.reporting.significance import compare_with_best, row_scores
from tunelab.reporting.tables import recommended, row_key, rows_of, with_comparisons

CHAMPION = "champion"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
CONTENT_TAG, SPLIT_TAG = "tunelab.content", "tunelab.test_split"
MODEL_CODE = Path(__file__).with_name("greedy_model.py")
TEST_SPLIT = str(PATHS.split(PATHS.prepared, "test"))


def check_name(name: str) -> None:
    """A name that reads unchanged in ``models:/NAME@champion`` and in the registry's UI."""
    if not NAME.match(name):
        raise TunelabError(f"registry name {name!r}: use letters, digits, '.', '_' and '-' (at most 128, starting with a "
                           "letter or digit), e.g. tunelab-sentiment")


def model_folder(variant: str) -> tuple[Path, str]:
    """The variant's plain Hugging Face folder and the dvc.lock output that holds it."""
    from tunelab.models.loading import deploy_recipe
    from tunelab.serving.engines import FOLDER_LOADERS

    if variant == BASE:
        return PATHS.base_model, "models/base"
    folder = PATHS.model(variant)
    if variant == TRAINED or not folder.is_dir() or deploy_recipe(folder)["loader"] not in FOLDER_LOADERS:
        raise TunelabError(f"variant {variant!r} is not a plain Hugging Face folder an MLflow model can carry: register "
                           "merged (tunelab register --variant merged), the same weights as one folder")
    return folder / "model", "models/deploy"


def pick(variant: str | None) -> dict:
    """The report's recommendation, or ``variant``'s headline row (eval.headline) from metrics/eval.json."""
    if not PATHS.eval_summary.is_file():
        raise TunelabError(f"{PATHS.eval_summary} is missing: run the pipeline first (make run)")
    rows = rows_of(json.loads(PATHS.eval_summary.read_text()))
    if variant is None:
        chosen = recommended(rows)
        if chosen is None:
            raise TunelabError("the report recommends nothing (no row compared): name one with --variant")
        return chosen
    ranked = sorted((r for r in rows if r["variant"] == variant), key=lambda r: -r["score"])
    if not ranked:
        raise TunelabError(f"variant {variant!r} was not evaluated here; metrics/eval.json has "
                           f"{sorted({r['variant'] for r in rows})}")
    return ranked[0]


def register(name: str, variant: str | None, tracking, recommend) -> str:
    """Log (or reuse) the model of the chosen row, register it, and move ``champion`` by the rule."""

    from tunelab.tracking.lineage import git_commit, output_hashes
    from tunelab.tracking.mlflow_run import open_experiment

    check_name(name)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its run links and registration notes: this prints the outcome
    row = pick(variant)
    folder, output = model_folder(row["variant"])
    hashes = output_hashes()
    content = f"{hashes[output]}:{row['variant']}"
    client, experiment_id = open_experiment(tracking)
    scores = row_scores(PATHS.eval_outputs(row["variant"])[1] / f"{row['prompting']}.jsonl", row["scoring"])
    version = existing_version(client, name, content) or log_version(
        client, experiment_id, name, folder, row, scores,
        {CONTENT_TAG: content, SPLIT_TAG: hashes.get(TEST_SPLIT, "?"), "data_fingerprint": hashes.get("data/raw", "?"),
         "git_commit": git_commit() or "?",
         "dvc_lock_hash": hashes[output], "row": row_key(row), "metric": row["metric"],
         "score": f"{row['score']:.4f} [{row.get('score_ci_low')}, {row.get('score_ci_high')}]"})
    moved = move_champion(client, name, version, recommend)
    return f"{name} version {version.version} ({row_key(row)}, {row['metric']} {row['score']:.3f}): {moved}"


def existing_version(client, name: str, content: str):
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get(CONTENT_TAG) == content), None)


def log_version(client, experiment_id: str, name: str, folder: Path, row: dict, scores: dict, tags: dict):
    import mlflow

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"register {row_key(row)}", tags={"tunelab.register": name}):
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "row.json").write_text(json.dumps({"row": row, "scores": scores}))
            info = mlflow.pyfunc.log_model(name="model", python_model=str(MODEL_CODE), artifacts={"model": str(folder)},
                                           code_paths=None, pip_requirements=requirements())
            mlflow.log_artifact(str(Path(scratch) / "row.json"))
        run_id = mlflow.active_run().info.run_id
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    client.set_tag(run_id, "tunelab.model_version", version.version)
    client.set_model_version_tag(name, version.version, "run_id", run_id)
    return client.get_model_version(name, version.version)


def requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("mlflow", "torch", "transformers", "safetensors")]


def version_row(client, version) -> tuple[dict, dict]:
    """The registered row and its per-test-row scores (row.json of the version's run)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = client.download_artifacts(version.tags["run_id"], "row.json", scratch)
        saved = json.loads(Path(path).read_text())
    return saved["row"], saved["scores"]


def by_run(row: dict) -> str:
    return row["run"]


def move_champion(client, name: str, version, recommend) -> str:
    """Point ``champion`` at ``version`` when the report's rule (eval.recommend) prefers it to the current one."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        return f"now {CHAMPION} (there was none)"
    if str(current.version) == str(version.version):
        return f"already {CHAMPION}"
    if current.tags.get(SPLIT_TAG) != version.tags.get(SPLIT_TAG):
        return (f"{CHAMPION} stays version {current.version}: it was scored on another test split, so the two cannot be "
                "compared row by row")
    (old, old_scores), (new, new_scores) = version_row(client, current), version_row(client, version)
    old, new = {**old, "run": "champion"}, {**new, "run": "new"}
    compared = compare_with_best({"champion": old_scores, "new": new_scores}, recommend.margin, recommend.level)
    judged = with_comparisons([old, new], compared, by_run)
    if recommended(judged)["run"] == "new":
        client.set_registered_model_alias(name, CHAMPION, version.version)
        return f"now {CHAMPION} (was version {current.version}): the report's rule prefers it"
    return f"{CHAMPION} stays version {current.version}: the report's rule prefers it to this one"
