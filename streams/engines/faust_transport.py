"""Faust's Kafka transport (aiokafka) with the fetch wait a live scoring flow needs.

Faust builds a worker's consumer with a fixed ``fetch_max_wait_ms`` of 1,500 ms. A broker may hold a fetch that
long when the partition has nothing new at the time of the request (Tansu, the embedded broker, does), so a live
flow got its input in steps of about a second: at 1,000 devices and half of the maximum load, the oldest event of a
batch had waited 0.7-1.9 s when the batch began, 0.3-0.7 s with 50 ms (BENCHMARKS.md, "Session 12: Faust latency
at 100,000 devices"). This transport builds the same consumer and sets its wait to the app's ``fetch_wait_ms``
(``faust_app.App``: ``FETCH_WAIT_MS`` unless ``[kafka] extra`` ``fetch.wait.max.ms`` says otherwise) before it
starts, as the Bytewax source does for librdkafka. On Kafka a fetch returns as soon as data arrives whatever the
wait; an idle partition's fetches cost little.

The app names it by the scheme of its consumer's broker URLs (``URL_SCHEME``); its producer keeps Faust's own.
"""

from __future__ import annotations

from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as driver

FETCH_WAIT_MS = 50
URL_SCHEME = "eddyline-kafka"


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread; its worker consumer fetches with the app's wait (``faust_app.App.fetch_wait_ms``)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.fetch_wait_ms  # read when it starts
        return consumer


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer, on ``ConsumerThread``."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    """Faust's aiokafka transport, with ``Consumer``."""

    Consumer = Consumer


drivers.TRANSPORTS.aliases.setdefault(URL_SCHEME, f"{__name__}:Transport")
