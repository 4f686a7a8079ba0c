"""tunelab: adapt language models to a task and prove which adaptation is worth it.

The package is the shared code of the pipeline stages in ``stages/`` (docs/architecture.md has
the map): ``paths`` and ``records`` are the stages' I/O contract, ``training.strategies`` and
``deploy.methods`` the two registries, ``models.loading`` every way a model is loaded.
"""

from tunelab.console import quiet_known_noise

__version__ = "0.1.0"

# tunelab is an application's code: every entry point (a stage script, its child processes,
# the CLI) imports it before any third-party library, so this is the one place that silences
# their known harmless noise (tunelab.console says which, and why).
quiet_known_noise()
