"""Stage quantize: the last training phase's model in every deployable form listed in conf/quantize.

    dvc exp run                                                   # merged, int8_dynamic, nf4
    dvc exp run -S 'quantize.variants=[merged,int8_dynamic,nf4,int8,int8_weight_only]'

That model is the aligned one where the align stage made one (align=dpo, grpo, ...), else the
trained one; metrics/quantize.json says which (``source``). An adapter is merged into the base
first (LoRA, IA3, QLoRA; prompt/prefix tuning keep theirs beside a quantized base). A variant
that does not apply here (bf16 on a CPU, qat for a LoRA model) is skipped with its reason in
metrics/quantize.json and the report.
"""

import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.schema import QuantizeConfig
from tunelab.deploy.methods import make_variant, unavailable_reason
from tunelab.io.atomic import atomic_dir
from tunelab.io.files import folder_size_mb
from tunelab.models.loading import merged_model, trained_recipe
from tunelab.paths import Paths
from tunelab.prompts.formatting import load_tokenizer
from tunelab.records import QuantizeRecord, VariantOutcome
from tunelab.stage import run_stage, run_tracked
from tunelab.tracking.mlflow_run import StageRun


def run(paths: Paths, settings: QuantizeConfig, tracking: StageRun) -> None:
    """Merge the deployable model under ``paths`` and make each of quantize.variants from it in ``paths.deploy``."""
    source = paths.deployable()
    source_dir = paths.model(source)
    strategy = trained_recipe(source_dir)["strategy"]
    tokenizer = load_tokenizer(paths.base_model)
    cuda = torch.cuda.is_available()
    skipped = {method: unavailable_reason(method, strategy, cuda) for method in settings.variants}  # names checked first
    outcomes = {}
    with atomic_dir(paths.deploy) as out:
        merged_dir = out / ".merged"
        print(f"quantize: from the {source} model ({strategy})")
        merged_model(source_dir, paths.base_model).save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)  # a whole HF folder: what converters (GGUF) read
        for method in settings.variants:
            if reason := skipped[method]:
                outcomes[method] = VariantOutcome("skipped", reason=reason)
                print(f"quantize: {method}: skipped: {reason}")
                continue
            started = time.perf_counter()
            make_variant(method, merged_dir, source_dir, out / method, tokenizer, settings, paths)
            made = outcomes[method] = VariantOutcome("made", seconds=round(time.perf_counter() - started, 1),
                                                     size_mb=folder_size_mb(out / method))
            print(f"quantize: {method}: {made.size_mb} MB in {made.seconds} s")
            tracking.log_metrics({f"{method}.size_mb": made.size_mb})
        shutil.rmtree(merged_dir)
        tracking.write_metrics(paths.quantize_metrics, QuantizeRecord(strategy, outcomes, source).to_json())
        tracking.log_artifact(paths.quantize_metrics)


if __name__ == "__main__":
    run_stage(lambda: run_tracked("quantize", run, quantize=QuantizeConfig))
