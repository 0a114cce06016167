"""Shared fixtures: real servers on 127.0.0.1, started once per session and stopped after."""

from tests.fixtures.alerts import *  # noqa: F403
from tests.fixtures.broker import *  # noqa: F403
from tests.fixtures.mqtt import *  # noqa: F403
from tests.fixtures.timeseries import *  # noqa: F403
from tests.fixtures.s3 import *  # noqa: F403
from tests.fixtures.mlflow import *  # noqa: F403
