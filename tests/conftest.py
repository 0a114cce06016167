"""Shared fixtures: real servers on 127.0.0.1, started once per session and stopped after."""

import logging
import os
from collections.abc import Iterator

import pytest

from tests.fixtures.alerts import *  # noqa: F403
from tests.fixtures.broker import *  # noqa: F403
from tests.fixtures.browser import *  # noqa: F403
from tests.fixtures.config import *  # noqa: F403
from tests.fixtures.mlflow import *  # noqa: F403
from tests.fixtures.mqtt import *  # noqa: F403
from tests.fixtures.s3 import *  # noqa: F403
from tests.fixtures.timeseries import *  # noqa: F403


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """The root logger's handlers and level as each test found them: a CLI under test points it at the test's
    captured stderr, which pytest closes after the test, and the next test's logs would go there."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory):
    """Trainings in tests record their runs in a store of their own, not in the checkout's .eddyline/mlflow."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        yield os.environ["MLFLOW_TRACKING_URI"]
        return
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    del os.environ["MLFLOW_TRACKING_URI"]
