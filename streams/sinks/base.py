"""The shape every flow's dashboard sink shares: emits in, InfluxDB points and Prometheus updates out.

A subclass says what one of its flow's emits becomes (``points``) and updates its Prometheus metrics
there; alerts are counted and written the same way for every flow; the InfluxDB sink is the configured
one, or none (``[influx] url`` unset), so Prometheus still works without a time-series server.

Each sink kind spools the points InfluxDB did not take in time to a folder of its own per bucket (``spool_folder``),
under the flows' state folder by default, so that a long outage of the time-series server leaves no gap once it is back.

Points are built from records, and one record the time-series store cannot take (a NaN in a field) must not
stop the flow: the InfluxDB sink refuses the whole batch, so the bad point is left out and counted instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

from connectors.influx import MalformedPointError, check_point, log_due
from streams.sinks.alerts import alert_point, count_alert
from streams.processor import Emit

if TYPE_CHECKING:
    from connectors.influx import InfluxSettings

log = logging.getLogger(__name__)

Point = tuple[str, dict[str, str], dict[str, Any], int]


def _plain(name: str) -> str:
    """A name as one plain folder name: no separator, and no ``.`` or ``..``."""
    return quote(name, safe="").replace(".", "%2E")


class MetricsSink:
    """A flow's dashboard side sink: its emits become InfluxDB points and Prometheus updates.

    Subclasses override ``points`` for their flow's emits; alerts are counted and written here, the same
    for every flow. ``from_settings`` builds it with the configured InfluxDB sink, or none. A point the
    InfluxDB sink refuses as malformed is left out of the batch and counted in ``points_refused`` by reason.

    Parameters
    ----------
    influx
        Where points go (a ``connectors.influx.InfluxSink``, or anything with ``write_points`` and
        ``close``); None keeps Prometheus only.
    """

    def __init__(self, influx: Any | None = None) -> None:
        self.influx = influx
        self.points_refused: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    @classmethod
    def from_settings(cls) -> Self:
        from connectors.influx import InfluxSettings, InfluxSink

        settings = InfluxSettings()
        return cls(InfluxSink(settings, spool=cls.spool_folder(settings)) if settings.enabled else None)

    @classmethod
    def spool_folder(cls, settings: InfluxSettings) -> Path:
        """Where this kind of sink spools: one folder per kind and destination (org, bucket), shared by its workers
        and its next run (the spool takes care of several writers), under ``[influx] spool_dir`` or else the flows'
        ``[runtime] state_dir``. A spool is replayed into the bucket of whoever replays it, so two flows of one kind
        writing to two buckets (audio and sentiment) must not share one.

        Parameters
        ----------
        settings
            The InfluxDB settings.
        """
        from streams.runtime import RuntimeSettings

        parent = settings.spool_dir or RuntimeSettings().state_dir / "influx-spool"
        return parent / cls.__module__.rpartition(".")[2] / _plain(settings.org) / _plain(settings.bucket)

    def points(self, emit: Emit) -> list[Point]:
        """The InfluxDB points of one emit of this flow (metrics are updated here too); none by default.

        Parameters
        ----------
        emit
            One of the flow's emits; a sink ignores the topics that are not its own.
        """
        return []

    def write(self, emits: Sequence[Emit]) -> None:
        """Count and write the batch's alerts, turn the other emits into points, and queue the points.

        Parameters
        ----------
        emits
            A batch of the flow's emits.
        """
        points: list[Point] = []
        for e in emits:
            if e.topic == "alerts":
                count_alert(e.record)
                points.append(alert_point(e.record))
            else:
                points.extend(self.points(e))
        if self.influx is not None and points:
            try:
                self.influx.write_points(points)
            except MalformedPointError:  # nothing of the batch was queued: write it again without the bad points
                self.influx.write_points(self._well_formed(points))

    def _well_formed(self, points: list[Point]) -> list[Point]:
        good = []
        for p in points:
            try:
                check_point(*p)
            except MalformedPointError as exc:
                self.points_refused[exc.reason] = self.points_refused.get(exc.reason, 0) + 1
                if log_due(self._logged, "influx_point_refused"):
                    log.warning(
                        "%s: point left out (%s); refused so far by reason: %s; repeats are logged once a minute",
                        type(self).__name__, exc, dict(self.points_refused),
                        extra={"event": "influx_point_refused", "reason": exc.reason, "measurement": p[0]},
                    )
            else:
                good.append(p)
        return good

    def close(self) -> None:
        if self.influx is not None:
            self.influx.close()
