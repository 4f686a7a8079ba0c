"""Summaries of repeated timings: medians, percentiles, throughput."""

import numpy as np


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, linearly interpolated between the two nearest samples (numpy's default)."""
    if not values:
        raise ValueError("no samples")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95, min, max and the sample count."""
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "min": float(min(values)),
            "max": float(max(values)), "samples": len(values)}


def step_latencies(timestamps: list[float]) -> list[float]:
    """Seconds between consecutive token timestamps (the first token's time is the TTFT's)."""
    return [later - earlier for earlier, later in zip(timestamps, timestamps[1:])]


def tokens_per_second(sequences: int, new_tokens: int, seconds: float) -> float:
    return sequences * new_tokens / seconds


def summary_ms(seconds: list[float]) -> dict:
    """``summary`` of timings in seconds, in milliseconds (two decimals)."""
    return {k: round(v * 1000, 2) if k != "samples" else v for k, v in summary(seconds).items()}


def latency_ms(first_token_seconds: list[float], gaps: list[float]) -> dict:
    """The batch-1 latency record: median time to first token, and the per-token gaps' summary."""
    return {"ttft_ms": round(float(np.median(first_token_seconds)) * 1000, 2), "token_latency_ms": summary_ms(gaps)}
