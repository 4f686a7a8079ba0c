"""Stage format: prepared examples → prompt/completion text and tokens, plus a report.

Classification examples become a prompt and the label's answer choice; the generative tasks'
examples a chat (earlier turns, the prompt, the target) with loss on every assistant turn.
Train and val examples longer than format.max_length are dropped and counted (their target
would be cut); the test split is kept whole, as evaluation scores every test row.

    dvc exp run -S prompt=sentiment_instruction -S format.max_length=128
"""

import sys
from functools import partial
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this tree's code: see tunelab.stage

from tunelab.config.load import read_params, to_section
from tunelab.config.schema import DataConfig, FormatConfig, PromptConfig
from tunelab.data.split import SPLITS
from tunelab.errors import TunelabError
from tunelab.io.atomic import write_jsonl
from tunelab.io.jsonl import read_jsonl
from tunelab.paths import PATHS, Paths
from tunelab.prompts.formatting import format_chat_example, format_example, load_tokenizer
from tunelab.prompts.special_tokens import DataText
from tunelab.prompts.templates import PromptTemplate
from tunelab.prompts.tokenization import drop_truncated, length_report, special_tokens_report
from tunelab.records import prepared_data
from tunelab.stage import run_stage
from tunelab.tracking.mlflow_run import StageRun, stage_run


def run(paths: Paths, prompt: PromptConfig, settings: FormatConfig, data: DataConfig, tracking: StageRun) -> None:
    """Format and tokenize every prepared split under ``paths``; write them and the length report."""
    formatter = partial(format_example, labels=data.labels) if data.classifies else format_chat_example
    required = data.prepared_fields
    template = PromptTemplate(prompt)
    tokenizer = load_tokenizer(paths.base_model)
    report = {"template": prompt.name, "special_tokens": special_tokens_report(tokenizer), "splits": {}}
    data_text = DataText(tokenizer)
    rows = {}  # every split formatted and checked before any is written: a refusal changes no output
    for split in SPLITS:
        examples = data_text.rows(read_jsonl(paths.prepared / f"{split}.jsonl", required=required))
        formatted = [
            formatter(example, template=template, prompt=prompt, settings=settings, tokenizer=tokenizer)
            for example in tqdm(examples, desc=f"format {split}", unit="ex")
        ]
        report["splits"][split] = length_report([tokens for _, tokens in formatted], settings.max_length, tokenizer)
        if split != "test":
            formatted, dropped = drop_truncated(formatted)
            report["splits"][split]["dropped_truncated"] = dropped
            if not formatted:
                raise TunelabError(f"format.max_length: every {split} example is longer than {settings.max_length} "
                                   f"tokens (p50 {report['splits'][split]['tokens']['p50']}); raise it")
        rows[split] = [row for row, _ in formatted]
    report["control_tokens_in_data"] = data_text.report()
    for split, split_rows in rows.items():
        write_jsonl(paths.formatted / f"{split}.jsonl", split_rows)
    tracking.write_metrics(paths.formatted / "report.json", report)
    train = report["splits"]["train"]
    tracking.log_metrics({
        "train_tokens_p95": train["tokens"]["p95"],
        "train_truncated_share": train["truncated_share"],
        "train_dropped_truncated": train["dropped_truncated"],
        "train_loss_token_share": train["loss_token_share"],
    })
    tracking.log_artifact(paths.formatted / "report.json")
    print(f"format: {prompt.name}: train tokens p50/p95/max {train['tokens']}, longer than format.max_length "
          f"{train['truncated_share']:.1%} (dropped: {train['dropped_truncated']}), loss on "
          f"{train['loss_token_share']:.1%} of tokens")


def main() -> None:
    params = read_params()
    prompt = to_section(PromptConfig, "prompt", params.get("prompt"))
    settings = to_section(FormatConfig, "format", params.get("format"))
    data = prepared_data(to_section(DataConfig, "data", params.get("data")))
    with stage_run("format", params, sections=("prompt", "format")) as tracking:
        run(PATHS, prompt, settings, data, tracking)


if __name__ == "__main__":
    run_stage(main)
