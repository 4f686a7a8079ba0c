"""What the suite puts into every Python process it starts (tests/conftest.py puts this folder
first on PYTHONPATH): the warm stage runner's client, and the read audit where a test asks for it.

A stage the runner takes is audited in the child it forks (warm_server.py), not here.
"""

import os

import read_audit
import warm_client

if (address := os.environ.get("TUNELAB_WARM_RUNNER")) and warm_client.is_stage_run():
    warm_client.run_warm(address)  # returns only if the stage runs cold, in this process
read_audit.install_if_asked()
