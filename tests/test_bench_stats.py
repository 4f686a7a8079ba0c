"""The benchmark's statistics on known inputs."""

import numpy as np
import pytest

from tunelab.benchmarking.stats import percentile, step_latencies, summary, tokens_per_second


def test_percentiles_interpolate_between_samples():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)  # rank 0.95 * 99 = 94.05 → 95 + 0.05
    assert percentile([3.0], 95) == 3.0
    assert summary([4.0, 1.0, 3.0, 2.0]) == {"p50": 2.5, "p95": pytest.approx(3.85), "min": 1.0, "max": 4.0, "samples": 4}
    assert percentile([5.0, 1.0, 9.0], 50) == float(np.median([5.0, 1.0, 9.0]))


def test_step_latencies_and_throughput():
    assert step_latencies([10.0, 10.5, 10.75, 11.5]) == [0.5, 0.25, 0.75]
    assert step_latencies([1.0]) == []
    assert tokens_per_second(sequences=16, new_tokens=32, seconds=4.0) == 128.0


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_batch_one_throughput_comes_from_the_latency_runs_without_running_batch_one_again(tiny_model_dir):
    import statistics

    from transformers import AutoModelForCausalLM

    from tunelab.benchmarking.inference import latency, throughput

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        record, runs = latency(model, [5, 6, 7], new_tokens=3, repeats=2, pad_id=0)
        after_latency = len(rows)
        speeds = throughput(model, [[5, 6, 7], [8, 9]], [1, 2], new_tokens=3, repeats=2, pad_id=0, measured={1: runs})
    finally:
        hook.remove()
    assert len(runs) == 2 and record["token_latency_ms"]["samples"] == 2 * 2
    assert after_latency > 0 and set(rows[after_latency:]) == {2}  # only batch 2 ran again
    assert speeds["1"] == round(3 / statistics.median(runs), 2)
