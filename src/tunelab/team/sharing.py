"""``tunelab push`` / ``tunelab pull``: a pipeline's results shared through the project's DVC remote.

DVC does all the work: outputs and DVC's run cache go to and come from the remote, so a
teammate's clone of the same commit restores every stage instead of running it (`dvc exp run
--pull`, what `make run` does when a remote is set). These wrappers add what DVC's commands do
not: one line naming the remote and what is missing, or why it cannot be reached, in place of
DVC's multi-line warnings, and a remote URL shown without its credentials.
"""

import logging
from urllib.parse import urlsplit

from tunelab.errors import TunelabError
from tunelab.secrets import shown

HOW_TO_NAME = ("name one with `dvc remote add -d team URL` (a shared folder, s3://bucket/path, ssh://host/path) and "
               "commit .dvc/config; credentials go in `dvc remote modify --local` or the environment, never in git")


def _open(remote: str | None):
    """DVC's repository here, quiet (its warnings are what this module sums up), and the remote's name and URL."""
    from dvc.repo import Repo

    for library in ("dvc", "dvc_data"):
        logging.getLogger(library).setLevel(logging.ERROR)
    repo = Repo(".")
    remotes = repo.config["remote"]
    name = remote or repo.config["core"].get("remote")
    if not name:
        raise TunelabError(f"no DVC remote is set: {HOW_TO_NAME}")
    if name not in remotes:
        raise TunelabError(f"DVC remote {name!r} is not configured (.dvc/config has {sorted(remotes) or 'none'}): "
                           f"{HOW_TO_NAME}")
    url = remotes[name]["url"]
    check_url(name, url)
    return repo, name, url


def default_remote() -> tuple[str, str]:
    """The name and URL of the project's default DVC remote, or one line saying how to set one."""
    repo, name, url = _open(None)
    repo.close()
    return name, url


def check_url(name: str, url: str) -> None:
    """DVC takes any string as a remote's URL (a mistyped scheme becomes a local folder, or a push of
    nothing): the scheme must be one DVC has a filesystem for, with its host or bucket after ``//``."""
    from dvc_objects.fs import known_implementations

    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file" or len(parts.scheme) == 1:  # a path (C: on Windows)
        return
    if parts.scheme not in known_implementations:
        raise TunelabError(f"DVC remote {name!r} URL {shown(url)!r}: unknown scheme {parts.scheme!r}; expected a folder "
                           f"or one of {sorted(set(known_implementations) - {'local', 'memory'})} "
                           "(fix it: dvc remote modify team url URL)")
    if not parts.netloc:
        raise TunelabError(f"DVC remote {name!r} URL {shown(url)!r}: no host or bucket; expected "
                           f"{parts.scheme}://HOST_OR_BUCKET/PATH (fix it: dvc remote modify team url URL)")


def push(remote: str | None = None) -> str:
    """Every output DVC tracks and its run cache to the remote; returns what was done, in words."""
    from dvc.exceptions import DvcException

    repo, name, url = _open(remote)
    try:
        pushed = repo.push(remote=name, run_cache=True)
    except DvcException as error:
        raise TunelabError(f"push to DVC remote {name!r} ({shown(url)}) failed: {first_line(error)}") from None
    return f"{pushed} files pushed to DVC remote {name!r} ({shown(url)}), with DVC's run cache"


def pull(remote: str | None = None) -> str:
    """Every output of dvc.lock and the run cache from the remote, or one line naming what it lacks."""
    from dvc.exceptions import CheckoutError, DvcException

    repo, name, url = _open(remote)
    try:
        stats = repo.pull(remote=name, run_cache=True)
    except CheckoutError as error:
        raise TunelabError(f"DVC remote {name!r} ({shown(url)}) lacks {', '.join(sorted(error.target_infos))}: push "
                           "them from the clone that made them (`tunelab push`), or run the pipeline to make them") from None
    except DvcException as error:
        raise TunelabError(f"pull from DVC remote {name!r} ({shown(url)}) failed: {first_line(error)}") from None
    return f"{stats['stats']['fetched']} files fetched from DVC remote {name!r} ({shown(url)})"


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
