"""``tracking``: where MLflow records runs."""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class TrackingConfig:
    """Where MLflow records runs. MLFLOW_TRACKING_URI, when set, wins over ``uri``."""

    uri: str
    """Tracking URI; the default is a git-ignored sqlite file in the repo root."""
    experiment: str
    """MLflow experiment that holds the pipeline runs."""
    enabled: bool
    """Turn MLflow logging off (stages still write their DVC outputs)."""
    lock_timeout: float
    """Seconds a stage waits for another process holding the sqlite store's lock before it goes on untracked
    (saying why): a stuck process never holds up the work."""
    sweep: Optional[str] = None
    """Name of the sweep this run belongs to: its MLflow runs nest under the sweep's parent run.
    Set by ``tunelab -m``; no stage reads it, so it never invalidates DVC's cache."""
    trial: Optional[int] = None
    """The Optuna trial number this run is, in the study named like the sweep (set by ``tunelab tune``);
    the train stage reports its val losses to it. No stage depends on it either."""
