"""The two trade-off pictures of the report: the headline score (accuracy, exact match, ROUGE-L: the
task's) against what a variant cost to make and to run."""

from pathlib import Path

from tunelab.reporting.tables import headline_metric

TRADEOFFS = {
    "score_vs_train_time": ("train_seconds", "train time, s (0 = prompting only)"),
    "score_vs_latency": ("token_latency_p50_ms", "per-token latency p50, ms (batch 1)"),
}


def point_label(row: dict) -> str:
    return row.get("label") or f"{row['variant']}/{row['prompting']}/{row['scoring']}"


def tradeoff_figure(rows: list[dict], x_key: str, x_label: str, title: str):
    """The headline score (with its 95% interval) against ``x_key``; rows without an x value are left out.

    A row's legend entry is its ``label``, else variant/prompting/scoring.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    points = [r for r in rows if r.get(x_key) is not None]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for r in points:  # one legend entry per point: variants made at the same cost share an x
        error = None if r["score_ci_low"] is None else [[r["score"] - r["score_ci_low"]], [r["score_ci_high"] - r["score"]]]
        axes.errorbar(r[x_key], r["score"], yerr=error, fmt="o" if r["scoring"] == "choice" else "s", capsize=3,
                      alpha=0.8, label=point_label(r) + (" (Pareto frontier)" if r.get("frontier") else ""),
                      markeredgecolor="black" if r.get("frontier") else None, markersize=9 if r.get("frontier") else 6)
    if points:
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    axes.set_xlabel(x_label)
    axes.set_ylabel(f"{headline_metric(rows)} (95% CI)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def save_tradeoff_figures(rows: list[dict], folder: Path, title: str) -> list[Path]:
    """Write one PNG per trade-off into ``folder``; returns their paths."""
    import matplotlib.pyplot as plt

    from tunelab.io.atomic import atomic_path

    paths = []
    for name, (x_key, x_label) in TRADEOFFS.items():
        figure = tradeoff_figure(rows, x_key, x_label, f"{title}: {headline_metric(rows)} vs {x_label.split(',')[0]}")
        path = folder / f"{name}.png"
        with atomic_path(path, is_dir=False) as temporary:
            figure.savefig(temporary, format="png", dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
