"""bench peers, scale and sensor-flow: the peer's z-score is eddyline's gauss, and rates are timed over bursts."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import peers
from benchmarks.quix_sensor_job import zscore_scorer
from benchmarks.sensor_flow import arrival_rate, cpu_per_m_readings
from benchmarks.timing import Fetch, MeasurementError, fetch_rate
from models.anomaly import make_detector


class _State(dict):
    """Quix state's get/set over a dict; values go through a JSON-like round trip as in RocksDB."""

    def get(self, key, default=None):  # noqa: ANN001, ANN201 - mirrors quixstreams.State
        return super().get(key, default)

    def set(self, key, value) -> None:  # noqa: ANN001
        self[key] = [float(v) for v in value]


def test_peer_zscore_scores_every_reading_as_gauss_does() -> None:
    det = make_detector("gauss")
    score = zscore_scorer(**det.params())
    state = _State()
    rng = np.random.default_rng(3)
    t, flagged = 0, 0
    for size in (1, 7, 20, 50, 50, 200, 3, 50, 50, 400):  # across the warm-up and the plain-average start
        x = 20 + 3 * np.sin((t + np.arange(size)) / 90) + rng.normal(0, 0.3, size)
        if size == 200:
            x[17] += 12.0
        ours = det.score_learn(x, np.arange(t, t + size))
        theirs = score(x, "device-000", "temperature", state)
        np.testing.assert_allclose(theirs, ours, rtol=1e-9, atol=1e-12)
        t += size
        flagged += int((ours > det.threshold).sum())
    assert 1 <= flagged < 10  # the spike, not noise
    assert state["temperature"][0] == t


def test_arrival_rate_is_the_mean_rate_of_bursty_outputs() -> None:
    # 8 bursts of 100 outputs, one every 0.5 s: 200 messages/s, whatever was processed before the first burst
    arrivals = [0.5 * b + 1e-4 * i for b in range(8) for i in range(100)]
    assert arrival_rate(arrivals, per_message=150) == pytest.approx(200 * 150, rel=0.01)
    first_to_last = (len(arrivals) - 1) * 150 / (arrivals[-1] - arrivals[0])
    assert first_to_last > 1.1 * 200 * 150  # the quotient the benchmark used to report counts the first burst


def test_arrival_rate_refuses_too_few_bursts() -> None:
    arrivals = [0.0] * 600 + [1.0] * 600
    with pytest.raises(MeasurementError, match="--messages"):
        arrival_rate(arrivals, per_message=150)


def test_peer_pins_our_numerical_libraries() -> None:
    from importlib.metadata import version

    wanted = peers.peer_requirements()
    assert wanted[0].startswith("quixstreams==3.28")
    assert f"river=={version('river')}" in wanted and f"numpy=={version('numpy')}" in wanted


def test_peers_command_names_the_detectors_it_takes() -> None:
    import typer

    app = typer.Typer()
    app.command()(peers.command)
    result = CliRunner().invoke(app, ["--detectors", "seasonal"])
    assert result.exit_code == 2
    assert all(name in result.output for name in ("gauss", "hst", "hst-river"))


def test_every_paired_detector_has_a_default_message_count_and_a_peer_scorer() -> None:
    from benchmarks.quix_sensor_job import SCORERS

    assert set(peers.DEFAULT_MESSAGES) == set(peers.PEER_DETECTOR)
    assert set(peers.PEER_DETECTOR.values()) <= set(SCORERS)


def test_fetch_rate_counts_what_arrived_after_the_first_fetch() -> None:
    # a fast flow: 3 bursts of 1,500 outputs, 1 s apart, the first one's work done before the watcher saw it
    fetches = [Fetch(10.0, 1500, 4.0), Fetch(11.0, 1500, 4.5), Fetch(12.0, 1500, 5.0)]
    rate = fetch_rate(fetches, per_message=150)
    assert rate.readings_per_s == pytest.approx(1500 * 150)  # not 4,500 outputs over 2 s
    assert rate.cpu_s_per_m_readings == pytest.approx(1.0 / (3000 * 150) * 1e6)
    assert (rate.span_s, rate.fetches) == (2.0, 3)
    assert fetch_rate([Fetch(0.0, 1, None), Fetch(1.0, 1, None), Fetch(2.0, 1, None)], 150).cpu_s_per_m_readings is None


def test_fetch_rate_refuses_fewer_than_three_fetches_and_says_what_to_do() -> None:
    with pytest.raises(MeasurementError, match="--batches"):
        fetch_rate([Fetch(0.0, 5000, 1.0), Fetch(0.5, 1000, 1.4)], 150, hint="pre-fill more (--batches)")


def test_cpu_cost_is_the_slope_of_cpu_time_against_outputs() -> None:
    # 2 ms of CPU per 150-reading message after a 3 s start-up: 13.3 CPU seconds per million readings
    samples = [(n, 3.0 + 0.002 * n) for n in (400, 900, 1500, 2000)]
    assert cpu_per_m_readings(samples, per_message=150) == pytest.approx(0.002 / 150 * 1e6)
    assert cpu_per_m_readings(samples[:2], per_message=150) is None
