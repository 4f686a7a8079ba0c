"""``tunelab``: run the pipeline with Hydra overrides, or sweep them with ``-m`` as Hydra users do.

    tunelab train.max_steps=50                          # one run: dvc exp run -S train.max_steps=50
    tunelab -m strategy=lora,ia3 train.learning_rate=1e-4,3e-4 --jobs 2
    tunelab -m 'train.seed=range(0,3)' --queue-only    # queue now, `dvc queue start -j 2` later
    tunelab -m strategy=lora,ia3 --executor ray cluster.address=HOST:6379   # each run a Ray task
    tunelab --report NAME                               # the sweep's report, after --queue-only
    tunelab tune 'train.learning_rate=tag(log, interval(1e-5, 1e-3))' --trials 8   # an Optuna search
    tunelab tune 'train.learning_rate=choice(1e-4,3e-4)' --executor ray cluster.address=HOST:6379 --storage URL
    tunelab serve [VARIANT] [overrides]                 # an OpenAI-compatible server of a deployed variant
    tunelab push [REMOTE] / tunelab pull [REMOTE]       # outputs and DVC's run cache to / from the team's remote
    tunelab tracking-server --pgdata DIR --artifacts DIR   # the team's MLflow server on PostgreSQL
    tunelab register [--variant V] [--name N]           # the recommended variant into the MLflow model registry

A sweep is not a second pipeline: each combination is a DVC experiment (cached stages skip, results
land in `dvc exp show`), nested under one MLflow parent run named after the sweep. DVC's queue runs
them on this machine; ``--executor ray`` on a Ray cluster (tunelab.sweeps.ray_cluster).
"""

import argparse
import dataclasses
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tunelab.config.compose import compose_conf
from tunelab.config.load import to_section
from tunelab.config.schema import TrackingConfig
from tunelab.errors import TunelabError
from tunelab.io.atomic import write_json
from tunelab.stage import USER_ERROR_EXIT_CODE
from tunelab.sweeps import queue
from tunelab.sweeps.overrides import check_runs, expand
from tunelab.sweeps.summary import (
    PARAMS,
    SweepRun,
    across_seeds,
    experiment_scores,
    experiments,
    seed_metrics,
    table_rows,
    write_report,
)
from tunelab.tracking.lineage import git_commit
from tunelab.validation import validate_config

SWEEPS = Path("sweeps")
MANIFEST = "sweep.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
EXECUTORS = ("queue", "ray")
CLUSTER_KEY = re.compile(r"^\+*cluster\.")
"""Overrides of the cluster section configure the Ray executor, not the runs (no stage reads them)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/, e.g. strategy=ia3 train.learning_rate=1e-4")
    parser.add_argument("-m", "--multirun", action="store_true", help="sweep: one DVC experiment per combination")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="queue workers running experiments at once (default 1)")
    parser.add_argument("--name", help="sweep name (default sweep-MMDD-HHMMSS); experiments are NAME-1, NAME-2, ...")
    parser.add_argument("--queue-only", action="store_true", help="queue the experiments; start them with dvc queue start")
    parser.add_argument("--executor", choices=EXECUTORS, default="queue",
                        help="queue: DVC's queue on this machine (default); ray: a Ray cluster, conf's cluster.* keys")
    parser.add_argument("--report", metavar="NAME", help="write the report of sweep NAME from its finished experiments")
    args = parser.parse_intermixed_args(argv)  # overrides may follow flags: -m a=1,2 --executor ray cluster.x=y
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.executor == "ray" and args.queue_only:
        parser.error("--queue-only queues for DVC's workers; with --executor ray the cluster runs the sweep")
    return args


def sweep_tracking(name: str, overrides: list[str]) -> tuple | None:
    """(client, experiment id, sweep run id) where MLflow tracking is on; creates the sweep's run."""
    tracking = to_section(TrackingConfig, "tracking", compose_conf().get("tracking"))
    if not tracking.enabled:
        return None
    from tunelab.tracking.mlflow_run import open_experiment, sweep_run_id

    client, experiment_id = open_experiment(tracking)
    return client, experiment_id, sweep_run_id(client, experiment_id, name, overrides)


def sweep_name(given: str | None, prefix: str) -> str:
    """--name, or PREFIX-MMDD-HHMMSS; it names git refs (the experiments NAME-1, NAME-2, ...)."""
    name = given or datetime.now().strftime(f"{prefix}-%m%d-%H%M%S")
    if not NAME.match(name):
        raise TunelabError(f"--name {name!r}: use letters, digits, - and _ (it names git refs)")
    return name


def plan_sweep(name: str, runs: list[list[str]], command: str) -> list[dict]:
    """The sweep's runs, named, in its manifest; each run's overrides say which sweep it is of."""
    taken = queue.existing_experiments()
    planned = [{"name": f"{name}-{i}", "overrides": run} for i, run in enumerate(runs, start=1)]
    if clash := [p["name"] for p in planned if p["name"] in taken]:
        raise TunelabError(f"sweep: experiments {clash} exist already; choose another --name")
    if changed := queue.changed_stages():
        print(f"tunelab: the workspace pipeline is not up to date ({', '.join(changed)}): each run redoes those "
              "stages unless another run already did (run cache). Run `make run` and commit dvc.lock first to "
              "share them.", file=sys.stderr)
    (SWEEPS / name).mkdir(parents=True, exist_ok=True)
    manifest = {"sweep": name, "command": command, "baseline": git_commit(), "runs": planned}
    (SWEEPS / name / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return planned


def queue_sweep(name: str, planned: list[dict]) -> None:
    from tqdm import tqdm

    for item in tqdm(planned, desc=f"queueing {name}", unit="run"):
        queue.queue(item["name"], [*item["overrides"], f"tracking.sweep={name}"])


def wait_for(planned: list[dict]) -> dict[str, str]:
    from tqdm import tqdm

    with tqdm(total=len(planned), desc="sweep", unit="run") as bar:
        def done(name: str, status: str) -> None:
            bar.write(f"{'✓' if status == 'Success' else '✗'} {name} {status}")
            bar.update()

        return queue.wait([p["name"] for p in planned], done)


def collect(planned: list[dict], statuses: dict[str, str], baseline: str | None,
            log_of: Callable[[str], str] | None) -> list[SweepRun]:
    """Each planned run with its status, DVC's record of it and what DVC did with its stages.

    ``dvc exp show`` lists the experiments of one commit: the sweep's baseline, which may no
    longer be HEAD when the sweep ends."""
    shown = queue.dvc("exp", "show", "--json", *(["--rev", baseline] if baseline else []))
    recorded = experiments(json.loads(shown), {p["name"] for p in planned})
    runs = []
    for item in planned:
        status = statuses.get(item["name"], "Unknown")
        data = recorded.get(item["name"], {}) if status == "Success" else {}  # a failed run has no results of its own
        counts = queue.stage_counts(log_of(item["name"])) if status in queue.DONE and log_of else None
        if status in queue.DONE and log_of and counts is None:
            print(f"warning: {item['name']}: DVC's log names its stages in words tunelab does not read (a newer "
                  "DVC?); the report leaves out what it did with them", file=sys.stderr)
        runs.append(SweepRun(item["name"], item["overrides"], status, data.get("params", {}), data.get("metrics", {}),
                             data.get("outputs", {}), counts))
    return runs


def pulled_sweep(name: str) -> dict:
    """The manifest of sweep ``name`` rebuilt from its experiments in ``dvc exp show`` (each ran with
    ``tracking.sweep=name``): their names, and as overrides the params that differ from their baseline."""
    from tunelab.tracking.mlflow_run import flatten

    found, baseline = [], None
    try:
        shown = json.loads(queue.dvc("exp", "show", "--json", "--all-commits"))  # pulled onto an older commit too
    except TunelabError:  # not a DVC repository with experiments: nothing to rebuild from
        shown = []
    for commit in shown:
        base = flatten(((commit.get("data") or {}).get("params") or {}).get(PARAMS, {}).get("data", {}))
        for group in commit.get("experiments") or []:
            rev = group["revs"][0]
            params = flatten((((rev.get("data") or {}).get("params") or {}).get(PARAMS) or {}).get("data", {}))
            if params.get("tracking.sweep") == name:
                baseline = commit.get("rev")
                overrides = [f"{key}={value}" for key, value in params.items()
                             if key != "tracking.sweep" and base.get(key) != value]
                found.append({"name": rev["name"], "overrides": overrides})
    if not found:
        raise TunelabError(f"sweep {name}: no {SWEEPS / name / MANIFEST} here and no experiment of it in `dvc exp show`; "
                           f"pull them first: dvc exp pull origin {name}-1 {name}-2 ...")
    found.sort(key=lambda item: int(item["name"].rpartition("-")[2]) if item["name"].rpartition("-")[2].isdigit() else 0)
    return {"sweep": name, "command": f"(rebuilt from {len(found)} pulled experiments)", "baseline": baseline,
            "runs": found, "pulled": True}


def record_in_mlflow(name: str, folder: Path, runs: list[SweepRun]) -> None:
    """The report on the sweep's run, and every finished run's figures on its pipeline run: a sweep
    point whose stages were all cached ran no stage, so no stage logged it."""
    tracked = sweep_tracking(name, [])
    if not tracked:
        return
    from tunelab.reporting.tables import pipeline_summary
    from tunelab.tracking.mlflow_run import record_pipeline

    client, experiment_id, run_id = tracked
    client.log_artifacts(run_id, str(folder), "sweep-report")
    if recommended := json.loads((folder / "results.json").read_text()).get("recommended"):
        client.set_tag(run_id, "tunelab.recommended", recommended)
    for key, value in seed_metrics(across_seeds(table_rows(runs)[1])).items():
        client.log_metric(run_id, key, value)
    for run in runs:
        if run.metrics:
            record_pipeline(client, experiment_id, run.params, run.name, pipeline_summary(run.metrics, run.headline),
                            run.outputs)


def report(name: str, statuses: dict[str, str] | None = None, wall_seconds: float | None = None,
           log_of: Callable[[str], str] | None = queue.logs) -> Path:
    folder = SWEEPS / name
    if (folder / MANIFEST).is_file():
        manifest = json.loads((folder / MANIFEST).read_text())
    else:  # pulled from a teammate (dvc exp pull): the experiments say which sweep they belong to
        manifest = pulled_sweep(name)
        folder.mkdir(parents=True, exist_ok=True)
        statuses = {item["name"]: "Success" for item in manifest["runs"]}  # only finished experiments are pushed
    pulled = manifest.get("pulled", False)  # a teammate's experiments: their logs stayed on their machine
    runs = collect(manifest["runs"], statuses or queue.queue_status(), manifest.get("baseline"), None if pulled else log_of)
    path = write_report(folder, name, manifest["command"], runs, wall_seconds, experiment_scores)
    record_in_mlflow(name, folder, runs)
    print(path.read_text())
    return path


def single_run(overrides: list[str]) -> int:
    runs = expand(overrides)
    if len(runs) > 1:
        raise TunelabError(f"{' '.join(overrides)} sweeps {len(runs)} runs: add -m (multirun) to run them all")
    check_runs(runs)
    return subprocess.run(["dvc", "exp", "run", *[arg for o in runs[0] for arg in ("-S", o)]]).returncode


def split_cluster_keys(overrides: list[str], executor: str) -> tuple[list[str], list[str]]:
    """The cluster.* overrides (the Ray executor's settings) and the rest; cluster keys without
    ``--executor ray`` are one line."""
    cluster = [o for o in overrides if CLUSTER_KEY.match(o)]
    if cluster and executor != "ray":
        raise TunelabError(f"{cluster[0]}: the cluster section configures --executor ray only")
    return cluster, [o for o in overrides if not CLUSTER_KEY.match(o)]


def ray_setup(cluster_overrides: list[str]):
    """The cluster's settings and what trials share, checked before anything is planned or started."""
    from dataclasses import fields

    from tunelab.config.schema import ClusterConfig
    from tunelab.sweeps import ray_cluster
    from tunelab.tracking.mlflow_run import tracking_uri

    try:
        composed = compose_conf(overrides=cluster_overrides)
    except TunelabError as error:  # Hydra's hint about `+key` would add a key no executor reads
        raise TunelabError(f"{str(error).splitlines()[0]} The cluster section's keys: "
                           f"{', '.join(field.name for field in fields(ClusterConfig))}") from None
    validate_config(composed)
    cluster = to_section(ClusterConfig, "cluster", composed["cluster"])
    tracking = to_section(TrackingConfig, "tracking", composed["tracking"])
    share = ray_cluster.share_of_this_repository(tracking_uri(tracking.uri))
    ray_cluster.ray_address(cluster.address)  # one line if nothing answers there
    return cluster, share


def on_ray(name: str, planned: list[dict], cluster, share) -> tuple[dict[str, str], Callable[[str], str]]:
    """Run the sweep on the Ray cluster; its statuses and each trial's log, for the report."""
    from tqdm import tqdm

    from tunelab.sweeps import ray_cluster

    trials = [{**p, "overrides": [*p["overrides"], f"tracking.sweep={name}"]} for p in planned]
    with tqdm(total=len(trials), desc=f"{name} on ray", unit="run") as bar:
        def done(result: ray_cluster.TrialResult) -> None:
            bar.write(f"{'✓' if result.status == 'Success' else '✗'} {result.name} {result.status} on {result.node} "
                      f"({', '.join(f'{step} {seconds:.0f} s' for step, seconds in result.seconds.items())})")
            if result.status != "Success":
                bar.write(result.log[-ray_cluster.LOG_TAIL:])
            bar.update()

        results = ray_cluster.run_trials(share, trials, cluster, done)
    if succeeded := [trial for trial, result in results.items() if result.status == "Success"]:
        queue.dvc("exp", "pull", share.git_url, *succeeded)
    recorded = SWEEPS / name / "trials.json"  # a search runs its trials in batches: each adds its own
    write_json(recorded, {**(json.loads(recorded.read_text()) if recorded.is_file() else {}),
                          **{result.name: {"status": result.status, "node": result.node, "seconds": result.seconds}
                             for result in results.values()}})
    return {trial: result.status for trial, result in results.items()}, lambda trial: results[trial].log


def multirun(args: argparse.Namespace, command: str) -> int:
    cluster_overrides, sweep = split_cluster_keys(args.overrides, args.executor)
    runs = expand(sweep)
    check_runs(runs)
    name = sweep_name(args.name, "sweep")
    on_cluster = ray_setup(cluster_overrides) if args.executor == "ray" else None
    planned = plan_sweep(name, runs, command)
    sweep_tracking(name, sweep)
    started = time.perf_counter()
    if on_cluster:
        statuses, log_of = on_ray(name, planned, *on_cluster)
        report(name, statuses, time.perf_counter() - started, log_of)
        return 0 if all(status == "Success" for status in statuses.values()) else 1
    queue_sweep(name, planned)
    if args.queue_only:
        print(f"queued {len(planned)} runs of {name}. Start them with `dvc queue start -j {args.jobs}`, follow with "
              f"`dvc queue status`, then `tunelab --report {name}`.")
        return 0
    queue.start_workers(args.jobs)
    statuses = wait_for(planned)
    report(name, statuses, time.perf_counter() - started)
    return 0 if all(status == "Success" for status in statuses.values()) else 1


def serve(argv: list[str]) -> None:
    """``tunelab serve [VARIANT] [overrides]``: this process becomes the engine's server (so Ctrl-C and
    SIGTERM reach the engine itself), on conf/serve's host and port."""
    import os

    from tunelab.config.schema import ServeConfig
    from tunelab.serving.engines import child_env, choose
    from tunelab.serving.guards import API_KEY_VARIABLE, exposure_error

    variant = [f"serve.variant='{argv[0]}'"] if argv and "=" not in argv[0] else []  # quoted: models:/NAME@champion
    overrides = [*variant, *argv[len(variant):]]
    composed = compose_conf(overrides=overrides)
    settings = to_section(ServeConfig, "serve", composed.get("serve"))
    if error := exposure_error(settings.host, os.environ.get(API_KEY_VARIABLE)):
        raise TunelabError(error)
    use_tracking(composed)  # a registered model (models:/...) comes from the tracking server's registry
    engine, served = choose(settings)
    key = f"os.environ[\"{API_KEY_VARIABLE}\"]" if os.environ.get(API_KEY_VARIABLE) else "\"-\""
    print(f"tunelab serve: {served.name} ({served.folder}) on {engine.name} at http://{settings.host}:{settings.port}/v1\n"
          f"  OpenAI(base_url=\"http://{settings.host}:{settings.port}/v1\", api_key={key}).chat.completions.create("
          f"model=\"{served.name}\", messages=[...]); Ctrl-C stops it", flush=True)
    command = engine.command(served, settings)
    os.execvpe(command[0], command, child_env())


def use_tracking(composed: dict) -> TrackingConfig:
    """The configured tracking store (MLFLOW_TRACKING_URI wins) for this process's MLflow calls."""
    import os

    from tunelab.tracking.mlflow_run import tracking_uri

    tracking = to_section(TrackingConfig, "tracking", composed.get("tracking"))
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(tracking.uri)
    return tracking


def register(argv: list[str]) -> str:
    """``tunelab register [--variant V] [--name N]``: the recommended (or named) variant into the registry."""
    from tunelab.config.schema import EvalConfig
    from tunelab.team.model_registry import register as register_model

    parser = argparse.ArgumentParser(prog="tunelab register", description="Register the report's recommended variant "
                                     "(or --variant) as an MLflow model; the alias champion follows the report's rule.")
    parser.add_argument("--variant", help="a servable variant (default: the report's recommendation)")
    parser.add_argument("--name", default="tunelab", help="the registered model's name (default tunelab)")
    args = parser.parse_args(argv)
    composed = compose_conf()
    tracking = use_tracking(composed)
    recommend = to_section(EvalConfig, "eval", composed.get("eval")).recommend
    return register_model(args.name, args.variant, tracking, recommend)


def tracking_server(argv: list[str]) -> int:
    from tunelab.team import tracking_server as server

    return server.main(argv)


def sharing(verb: str):
    """``tunelab push [REMOTE]`` / ``tunelab pull [REMOTE]``."""
    def run(argv: list[str]) -> int:
        from tunelab.team import sharing as team_sharing

        if len(argv) > 1:
            raise TunelabError(f"tunelab {verb} [REMOTE]: one remote name at most, got {argv}")
        print(getattr(team_sharing, verb)(*argv))
        return 0

    return run


def registering(argv: list[str]) -> int:
    print(register(argv))
    return 0


def ray_trials(name: str, cluster, share) -> Callable[[dict[str, list[str]]], dict[str, str]]:
    """A search's batches of trials, each trial a Ray task of the stages up to train (see on_ray)."""
    from tunelab.sweeps.search import TARGET_STAGE

    def execute(trials: dict[str, list[str]]) -> dict[str, str]:
        planned = [{"name": run, "overrides": overrides, "targets": (TARGET_STAGE,)} for run, overrides in trials.items()]
        return on_ray(name, planned, cluster, share)[0]

    return execute


def tune(argv: list[str]) -> int:
    """``tunelab tune SPACE... --trials N``: an Optuna search, each trial a DVC experiment (tunelab.sweeps.search)."""
    import os

    from tqdm import tqdm

    from tunelab.sweeps import search
    from tunelab.training.pruning import STORAGE_VARIABLE

    parser = argparse.ArgumentParser(prog="tunelab tune", description=search.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", nargs="+", help="Hydra sweep syntax: key=interval(a,b), key=tag(log,interval(a,b)), "
                        "key=choice(x,y), key=value")
    parser.add_argument("--trials", type=int, default=8, help="trials to run (default 8)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="trials at once, each a DVC queue worker (default 1)")
    parser.add_argument("--name", help="study and sweep name (default tune-MMDD-HHMMSS); trials are NAME-1, NAME-2, ...")
    parser.add_argument("--storage", help="the study's SQLAlchemy URL, e.g. the tracking server's PostgreSQL "
                        "(default: sqlite in sweeps/NAME/)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    parser.add_argument("--executor", choices=EXECUTORS, default="queue",
                        help="queue: DVC's workers on this machine (default); ray: each trial a task on a Ray cluster "
                        "(cluster.* keys among the space configure it; the nodes must reach --storage)")
    args = parser.parse_intermixed_args(argv)  # cluster.* keys may follow the flags, as with -m
    if args.trials < 1 or args.jobs < 1:
        parser.error("--trials and --jobs must be at least 1")
    cluster_overrides, searched = split_cluster_keys(args.space, args.executor)
    space = search.parse_space(searched)
    check_runs(search.corners(space))
    name = sweep_name(args.name, "tune")
    if clash := sorted(n for n in queue.existing_experiments() if n.startswith(f"{name}-")):
        raise TunelabError(f"tune: experiments {clash[:3]} exist already; choose another --name")
    folder = SWEEPS / name
    folder.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{(folder / 'optuna.db').resolve()}"
    if args.executor == "ray":
        cluster, share = ray_setup(cluster_overrides)
        share = dataclasses.replace(share, environment={**share.environment, STORAGE_VARIABLE: storage})
        execute = ray_trials(name, cluster, share)
    else:
        execute = search.on_queue(name, args.jobs)
    study = search.open_study(name, storage, args.seed)
    os.environ[STORAGE_VARIABLE] = storage  # the queue's workers inherit it; params.yaml never holds it
    sweep_tracking(name, searched)
    with tqdm(total=args.trials, desc=f"tune {name}", unit="trial") as bar:
        def done(outcome) -> None:
            figure = "" if outcome.value is None else f" val loss {outcome.value:.4f}"
            bar.write(f"{'✓' if outcome.state == 'COMPLETE' else '✗'} {outcome.name} {outcome.state}{figure} {outcome.params}")
            bar.update()

        outcomes = search.run_trials(study, space, name, args.trials, args.jobs, done, execute)
    print(search.write_report(folder, study, outcomes, "tunelab tune " + shlex.join(argv)).read_text())
    return 0 if any(outcome.state == "COMPLETE" for outcome in outcomes) else 1


def deps(argv: list[str]) -> int:
    """``tunelab deps``: write each stage's code deps into dvc.yaml; ``--check``: exit 1 if stale."""
    from tunelab.code_deps import update

    if argv not in ([], ["--check"]):
        raise TunelabError(f"tunelab deps [--check]: unknown arguments {argv}")
    check = argv == ["--check"]
    changed = update(Path("."), check=check)
    if not changed:
        print("dvc.yaml: every stage's code deps are its import closure")
        return 0
    print(f"dvc.yaml: code deps {'stale' if check else 'rewritten'} for {', '.join(changed)}"
          + (" (run `tunelab deps`)" if check else ""))
    return 1 if check else 0


SUBCOMMANDS = {"serve": serve, "tracking-server": tracking_server, "register": registering,
               "push": sharing("push"), "pull": sharing("pull"), "deps": deps, "tune": tune}
"""``tunelab NAME ...``: each takes the arguments after its name and returns the exit code
(serve does not return: the process becomes the server). Anything else is a run or a sweep."""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] and argv[0] in SUBCOMMANDS:
            code = SUBCOMMANDS[argv[0]](argv[1:])
        else:
            args = parse_args(argv)
            command = "tunelab " + shlex.join(argv)
            if args.report:
                report(args.report)
                code = 0
            elif args.multirun:
                code = multirun(args, command)
            else:
                code = single_run(args.overrides)
    except TunelabError as error:
        print(f"error: {error}", file=sys.stderr)
        code = USER_ERROR_EXIT_CODE
    sys.exit(code)


if __name__ == "__main__":
    main()
