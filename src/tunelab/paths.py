"""Where every stage reads and writes: the one home of the pipeline's paths.

dvc.yaml declares the same paths: tests/test_pipeline.py checks every file each stage process
of the baseline run read against its declared deps. Stages use ``PATHS``, relative to the
repository root they run in; tests give a ``Paths`` of their own root instead of changing
directory.
"""

from pathlib import Path

BASE, TRAINED, ALIGNED = "base", "trained", "aligned"  # the variants that are not quantize-stage folders


def is_quantized(variant: str) -> bool:
    """A quantize-stage variant (merged, int8_dynamic, ...), not one of the models of its own."""
    return variant not in (BASE, TRAINED, ALIGNED)
SKIPPED = "SKIPPED.txt"  # in an output folder of a stage that had nothing to make: why


class Paths:
    def __init__(self, root: Path | str = Path(".")):
        root = Path(root)
        self.root = root
        # inputs: what check fingerprints, what fetch and base make of it
        self.data_origin = root / "data/origin.json"
        self.model_origin = root / "models/origin.json"
        self.raw = root / "data/raw"
        # each source's files in a folder of their own, so none can be named like provenance.json
        self.raw_main = root / "data/raw/main"  # data.source's file (or dataset folder)
        self.raw_provenance = root / "data/raw/source.json"  # what fetch copied, from where, its sha256
        self.raw_train = root / "data/raw/train"  # data.train_source's rows, where it is set
        self.raw_test = root / "data/raw/test"  # data.test_source's rows, where it is set
        self.extra_test = root / "data/prepared/extra_test.jsonl"  # eval.extra_test_sets' rows, each with its test_set
        self.prepared = root / "data/prepared"
        self.prepared_stats = root / "data/prepared/stats.json"  # counts, drops, overlap; the label names
        self.formatted = root / "data/formatted"
        self.predictions = root / "data/predictions"
        # models
        self.base_model = root / "models/base"
        self.trained_model = root / "models/trained"
        self.aligned_model = root / "models/aligned"  # the align stage's: the SFT model after DPO, GRPO, ...
        self.preferences = root / "data/preferences/pairs.jsonl"  # the preferences stage's pairs (align.preferences)
        self.preference_stats = root / "data/preferences/stats.json"  # how they were built, what was skipped
        self.preference_origin = root / "data/preferences/origin.json"  # check's fingerprint of a preference file
        self.deploy = root / "models/deploy"
        self.checkpoints = root / "checkpoints"  # resume state: not a DVC output
        # metrics
        self.metrics = root / "metrics"
        self.base_metrics = root / "metrics/base.json"
        self.train_metrics = root / "metrics/train.json"
        self.train_curves = root / "metrics/train"
        self.align_metrics = root / "metrics/align.json"
        self.align_curves = root / "metrics/align"  # per-step loss, reward margins or mean reward (DVC plots)
        self.quantize_metrics = root / "metrics/quantize.json"
        self.prompt_search = root / "metrics/prompt_search.json"  # the search_prompt stage's table and winner
        self.bench_metrics = root / "metrics/bench.json"
        self.serve_metrics = root / "metrics/serve.json"  # the load_test stage's levels (or why it was skipped)
        self.serve_plots = root / "metrics/serve"  # its tokens/s by concurrency: load_test.csv, load_test.png
        self.eval_dir = root / "metrics/eval"
        self.confusion_dir = root / "metrics/confusion"
        self.eval_summary = root / "metrics/eval.json"
        self.report = root / "metrics/report.md"
        self.figures = root / "metrics/report"

    def split(self, folder: Path, name: str) -> Path:
        """``data/prepared/train.jsonl`` and the like."""
        return folder / f"{name}.jsonl"

    def raw_extra(self, test_set: str) -> Path:
        """Where fetch puts an extra test set's raw rows (eval.extra_test_sets)."""
        return self.raw / "extra" / test_set

    def extra_predictions(self, variant: str, test_set: str) -> Path:
        """A variant's predictions on an extra test set, one file per prompting method."""
        return self.predictions / variant / "extra" / test_set

    def model(self, variant: str) -> Path:
        """base, trained, aligned, or a quantize-stage variant's folder."""
        own = {BASE: self.base_model, TRAINED: self.trained_model, ALIGNED: self.aligned_model}
        return own.get(variant, self.deploy / variant)

    def deployable(self) -> str:
        """The variant the quantize stage deploys and the benchmark measures beside it: the last
        training phase's model, the aligned one where the align stage made one (no SKIPPED note)."""
        return ALIGNED if (self.aligned_model / "config.json").is_file() else TRAINED

    def eval_outputs(self, variant: str) -> tuple[Path, Path, Path]:
        """The evaluate stage's metrics file, predictions folder and confusion-plot folder of a variant."""
        return self.eval_dir / f"{variant}.json", self.predictions / variant, self.confusion_dir / variant


PATHS = Paths()
