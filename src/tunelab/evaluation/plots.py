"""Confusion matrices people look at: a DVC plot (csv of actual/predicted) and a figure for MLflow."""

from pathlib import Path

from tunelab.io.atomic import write_csv


def write_confusion_csv(path: Path, predictions: list[dict], scoring: str) -> None:
    """One row per example; ``dvc plots show`` draws it with the confusion template."""
    write_csv(path, [{"actual": row["label"], "predicted": row[scoring]["prediction"]} for row in predictions])


def confusion_figure(report: dict, title: str):
    """A matplotlib heat map of a classification report's confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    labels = report["confusion_matrix"]["labels"]
    matrix = report["confusion_matrix"]["rows_gold_columns_predicted"]
    figure, axes = plt.subplots(figsize=(1.6 + 1.2 * len(labels), 1.2 + 1.2 * len(labels)))
    axes.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center")
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(f"{title}\naccuracy {report['accuracy']:.3f}", fontsize=9)
    figure.tight_layout()
    return figure
