"""Examples/s of each scoring pass of the default evaluation, on one model and device.

    python bench/eval_throughput.py --rows 64                       # models/base on the device torch finds
    python bench/eval_throughput.py --variant merged --dtype bfloat16 --rows 256

Each prompting method of eval.prompting (conf/, as the evaluate stage reads it; ``optimized``
aside: it is one of the others, chosen on val) is scored by the evaluator the evaluate stage
uses, on the first --rows test rows (a method's own, smaller limit kept), and timed by the
evaluator itself: a prompting scored by choice and by greedy generation runs its prompts once, so
both scorings report that one pass. Needs the variant's model folder and data/prepared (after
`make run`, or what bench/device/run.sh builds). Results: bench/results/eval_throughput_<device>.json and .md.
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tunelab.config.compose import compose_conf  # noqa: E402
from tunelab.config.load import to_section  # noqa: E402
from tunelab.config.schema import DataConfig, EvalConfig, PromptConfig  # noqa: E402
from tunelab.evaluation.evaluator import EvalSettings, Scorer  # noqa: E402
from tunelab.evaluation.prompting import method_template  # noqa: E402
from tunelab.evaluation.tasks import TASKS  # noqa: E402
from tunelab.io.jsonl import read_jsonl  # noqa: E402
from tunelab.models.loading import continues_a_cache, load_variant  # noqa: E402
from tunelab.paths import BASE, Paths  # noqa: E402
from tunelab.prompts.formatting import load_tokenizer  # noqa: E402
from tunelab.records import prepared_data  # noqa: E402
from tunelab.reporting.markdown import pipe_table  # noqa: E402

PATHS = Paths(REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default=BASE)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, help="for every pass; default: eval.batch_size and generate_batch_size")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    params = compose_conf(REPO / "conf")
    settings = to_section(EvalConfig, "eval", params["eval"])
    training_prompt = to_section(PromptConfig, "prompt", params["prompt"])
    data = prepared_data(to_section(DataConfig, "data", params["data"]))
    task = TASKS[data.task]
    tokenizer = load_tokenizer(PATHS.base_model)
    test = read_jsonl(PATHS.split(PATHS.prepared, "test"), required=data.prepared_fields)[: args.rows]
    train = read_jsonl(PATHS.split(PATHS.prepared, "train"), required=data.prepared_fields)
    model = load_variant(args.variant, PATHS).to(getattr(torch, args.dtype))
    scorer = Scorer(task, data.labels, model, tokenizer,
                    EvalSettings(args.batch_size or settings.batch_size, settings.length_normalize, settings.seed,
                                 continues_a_cache(model), args.batch_size or settings.generate_batch_size))
    passes = {}
    for name, prompting in settings.prompting.items():
        if prompting.method == "optimized":
            continue
        rows = test[: prompting.limit] if prompting.limit else test
        result = scorer.score(rows, method_template(training_prompt, prompting, task), prompting, train, name)
        for scoring, report in result.metrics.items():
            passes[f"{name}/{scoring}"] = {"examples": report["examples"], "seconds": report["seconds"],
                                           "examples_per_second": report["examples_per_second"],
                                           task.headline: round(report[task.headline], 4)}
            print(f"{name}/{scoring}: {report['examples_per_second']} examples/s on {report['examples']} rows")
    write_results(args, passes)


def write_results(args, passes: dict) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    record = {"variant": args.variant, "dtype": args.dtype, "rows": args.rows, "passes": passes,
              "environment": {"device": name, "threads": torch.get_num_threads(), "torch": torch.__version__}}
    out = REPO / "bench/results"
    out.mkdir(exist_ok=True)
    (out / f"eval_throughput_{device}.json").write_text(json.dumps(record, indent=2) + "\n")
    table = pipe_table(["method/scoring", "rows", "seconds", "examples/s"],
                       ([key, p["examples"], p["seconds"], p["examples_per_second"]] for key, p in passes.items()))
    (out / f"eval_throughput_{device}.md").write_text(
        f"# Evaluation passes of {args.variant} ({args.dtype}, {device}: {name})\n\n{table}")


if __name__ == "__main__":
    main()
