"""The console: known harmless third-party noise is silenced at one place, nothing else is."""

import logging
import subprocess
import sys
import warnings

from tunelab.console import quiet_known_noise


def test_the_known_noise_is_dropped_and_other_messages_of_the_same_loggers_are_kept(caplog):
    quiet_known_noise()
    quiet_known_noise()  # idempotent: stages and the CLI may both call it
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to load /x/torchao/_C_mxfp8.so: Could not load this library")
        logging.getLogger("torch.utils._pytree").warning(
            "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as an ...")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make sure "
            "you already `pip install kernels` and the kernels >= 0.11.1")
        logging.getLogger("torchao").warning("a real torchao problem")
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("a real bitsandbytes problem")
    assert [r.getMessage() for r in caplog.records] == ["a real torchao problem", "a real bitsandbytes problem"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # (pytest's own config ignores FutureWarning)
        quiet_known_noise()  # catch_warnings restores the filters after: set them inside
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing` "
                      "instead.", FutureWarning)
        warnings.warn("TypedStorage is deprecated. It will be removed in the future and UntypedStorage will be the "
                      "only storage class.", UserWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_mlflows_narration_of_its_sampler_and_store_is_dropped_and_its_other_messages_are_kept(caplog):
    quiet_known_noise()
    monitor, store = (logging.getLogger(name) for name in ("mlflow.system_metrics.system_metrics_monitor",
                                                             "mlflow.store.db.utils"))
    with caplog.at_level(logging.INFO):
        for message in ("Started monitoring system metrics.", "Stopping system metrics monitoring...",
                        "Successfully terminated system metrics monitoring!",
                        "Skip logging GPU metrics. Set logger level to DEBUG for more details."):
            monitor.info(message)
        store.info("Creating initial MLflow database tables...")
        store.info("Updating database tables")
        monitor.warning("Failed to log system metrics: disk full")
        store.warning("database is locked")
    assert [r.getMessage() for r in caplog.records] == ["Failed to log system metrics: disk full", "database is locked"]


def test_importing_torchao_and_bitsandbytes_in_a_stage_process_prints_nothing():
    code = ("from tunelab.console import quiet_known_noise; quiet_known_noise()\n"
            "import torchao, bitsandbytes\nfrom torchao.quantization import quantize_\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""
