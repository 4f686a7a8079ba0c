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
