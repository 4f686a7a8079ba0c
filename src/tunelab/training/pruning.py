"""Optuna's pruning inside the train stage of a ``tunelab tune`` trial (tunelab.sweeps.search).

Each evaluation's val loss is reported to the trial (tunelab.training.callbacks.OptunaPruning);
when Optuna's pruner finds it worse than the median of the completed trials at the same step, the
stage stops with one line and the trial is marked pruned (a user attribute the driver reads), so no
time goes into a run that cannot win. No transformers here: the ``tunelab tune`` driver imports it.
"""

import os

STORAGE_VARIABLE = "TUNELAB_OPTUNA_STORAGE"
"""How the train stage in a queue worker finds the study: an environment variable, never params.yaml,
which is committed with each experiment and would carry a database password."""
PRUNED_AT = "pruned_at_step"


def median_pruner():
    """The search's pruner, made alike by the driver and by each trial's train stage: Optuna keeps a
    study's pruner in the Study object, not in its storage. After one completed trial, a trial whose
    val loss at a step is worse than the completed trials' median there is pruned."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)


def trial_for_this_run(tracking: dict):
    """The Optuna trial this train stage runs for, or None outside ``tunelab tune``. A trial is named
    by its study (the sweep's name) and its number (tracking.trial); the storage by the environment."""
    storage_url, number = os.environ.get(STORAGE_VARIABLE), tracking.get("trial")
    if number is None or not storage_url:
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(storage_url)
    study_id = storage.get_study_id_from_name(tracking["sweep"])
    study = optuna.load_study(study_name=tracking["sweep"], storage=storage, pruner=median_pruner())
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, int(number)))
