"""``cluster``: where ``tunelab -m ... --executor ray`` runs a sweep's combinations."""

from dataclasses import dataclass

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class ClusterConfig:
    """A Ray cluster the sweep's trials run on, each a Ray task asking for these resources.

    No stage reads this section, so changing it never reruns a stage: it says where work runs,
    not what the work is."""

    address: str
    """The Ray cluster's address (what ``ray start --head`` prints, e.g. 10.0.0.5:6379), or ``auto``:
    RAY_ADDRESS where set, else the cluster started on this machine."""
    num_cpus: float
    """CPU cores one trial asks for; its stages use that many threads."""
    num_gpus: float
    """GPUs one trial asks for: Ray sets CUDA_VISIBLE_DEVICES, so trials on one node never share a GPU."""
    max_retries: int
    """How often Ray reruns a trial whose worker died (not one whose pipeline failed: that is reported)."""
    workdir: str
    """Folder on each node for the trials' working copies (``~`` expands there). A retried trial finds
    its copy and its train stage resumes from the newest complete checkpoint in it: put it on storage
    the nodes share for that to work across nodes."""

    def __post_init__(self):
        if self.num_cpus <= 0 or self.num_gpus < 0 or self.max_retries < 0:
            raise TunelabError("cluster: num_cpus > 0, num_gpus >= 0 and max_retries >= 0 are required")
