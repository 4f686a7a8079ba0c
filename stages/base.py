"""Stage base: the configured base model as a plain HF folder (safetensors) in models/base.

    dvc exp run -S model=smollm2_135m_instruct     # the default: a GGUF shipped on PyPI
    dvc exp run -S model=local_dir -S model.path=/path/to/hf/folder
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.schema import ModelConfig
from tunelab.io.atomic import atomic_dir
from tunelab.io.files import folder_size_mb
from tunelab.models.base import save_base_model
from tunelab.models.loading import load_source_model
from tunelab.paths import Paths
from tunelab.stage import run_stage, run_tracked
from tunelab.tracking.mlflow_run import StageRun


def run(paths: Paths, model_config: ModelConfig, tracking: StageRun) -> None:
    """Load the configured model and save it as a plain HF folder at ``paths.base_model``."""
    started = time.perf_counter()
    print(f"base: loading {model_config.name} from {model_config.source}")
    model, tokenizer = load_source_model(model_config)
    load_seconds = time.perf_counter() - started
    with atomic_dir(paths.base_model) as folder:
        save_base_model(model, tokenizer, folder, model_config.chat_template)
    metrics = {
        "parameters": model.num_parameters(),
        "load_seconds": round(load_seconds, 2),
        "saved_megabytes": folder_size_mb(paths.base_model),
    }
    tracking.write_metrics(paths.base_metrics, {"model": model_config.name, "architecture": type(model).__name__,
                                                **metrics})
    tracking.log_metrics(metrics)
    print(f"base: {metrics['parameters']:,} parameters saved to {paths.base_model} ({metrics['saved_megabytes']} MiB)")


if __name__ == "__main__":
    run_stage(lambda: run_tracked("base", run, model=ModelConfig))
