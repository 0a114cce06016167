"""Experiment tracking on MLflow: every training and evaluation leaves a run that a team can compare.

A run records parameters, metrics per step or window, where its data came from and which split it was
(MLflow dataset inputs), and artifacts (model card, ONNX file, evaluation JSON). Where runs go:

1. the URI given to ``configure`` (the CLI passes ``[mlflow] tracking_uri``), else
2. MLflow's own ``MLFLOW_TRACKING_URI``, else
3. the embedded store: SQLite plus an artifact folder under ``.eddyline/mlflow``, so nothing needs to run.

Tracking never stops a training: when the store cannot be reached the run is skipped with one warning.
MLflow is imported only when a run starts (it takes seconds to import).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_STORE = Path(".eddyline/mlflow")
_config: dict[str, Any] = {"uri": None, "store_dir": DEFAULT_STORE}
_failing: dict[str, set[str]] = {}  # per store: the kinds of call warned about since it last answered


def embedded_uri(store_dir: Path | str = DEFAULT_STORE) -> str:
    """The embedded store's tracking URI: a SQLite database in ``store_dir`` (created on first use).

    Parameters
    ----------
    store_dir
        The folder of the database and of the artifacts.
    """
    folder = Path(store_dir).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}"


def configure(tracking_uri: str | None = None, store_dir: Path | str | None = None) -> None:
    """Choose where runs and model versions go for this process (the CLI calls it from ``[mlflow]``).

    Parameters
    ----------
    tracking_uri
        A tracking server or store URI; None keeps ``MLFLOW_TRACKING_URI`` or the embedded store.
    store_dir
        The embedded store's folder.
    """
    _config["uri"] = tracking_uri
    if store_dir is not None:
        _config["store_dir"] = Path(store_dir)


def tracking_uri() -> str:
    """Where runs go now: the configured URI, ``MLFLOW_TRACKING_URI``, or the embedded store."""
    return _config["uri"] or os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri(_config["store_dir"])


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside the database for an embedded SQLite store,
    the server's choice otherwise.

    Parameters
    ----------
    uri
        The tracking URI.
    experiment
        The experiment's name.
    """
    if not uri.startswith("sqlite:///"):
        return None
    folder = Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / experiment.replace("/", "_")
    return folder.as_uri()


def client(uri: str | None = None) -> Any:
    """An ``MlflowClient`` for tracking and registry at ``uri`` (default: ``tracking_uri()``).

    A server that does not answer fails fast (two tries, 10 s each) unless ``MLFLOW_HTTP_REQUEST_*``
    say otherwise: callers degrade and retry later instead of waiting minutes.

    Parameters
    ----------
    uri
        The tracking URI.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow logs at INFO on its own handler (a new store prints "Creating initial MLflow database tables..."):
    # follow this process's level instead, so a command stays as quiet as EDDYLINE_LOG_LEVEL says.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(logging.getLogger().getEffectiveLevel()))
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())  # when imported before this
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlflow_client: Any, name: str) -> str:
    """The id of experiment ``name``, created (with its artifacts beside an embedded store) if new.

    Parameters
    ----------
    mlflow_client
        From ``client()``.
    name
        The experiment, e.g. ``eddyline/clicks``.
    """
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.create_experiment(name, artifact_location=artifact_location(mlflow_client.tracking_uri, name))
    except MlflowException:  # created meanwhile by another process
        return mlflow_client.get_experiment_by_name(name).experiment_id


def warn_once(what: str, exc: BaseException, uri: str | None = None) -> None:
    """Log that the store is unreachable once per outage and kind of call, not once per event: ``answered`` ends the
    outage, so that the next one, weeks later, is heard too.

    Parameters
    ----------
    what
        The kind of call that failed.
    exc
        Why.
    uri
        The store (default: ``tracking_uri()``).
    """
    uri = uri or tracking_uri()
    failing = _failing.setdefault(uri, set())
    if what not in failing:
        failing.add(what)
        log.warning("MLflow at %s: %s failed (%s); carrying on without it and retrying later",
                    uri, what, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def answered(uri: str | None = None) -> None:
    """The store answered a call: an outage ``warn_once`` told of is over (said once), and the next one is warned of.

    Parameters
    ----------
    uri
        The store (default: ``tracking_uri()``).
    """
    uri = uri or tracking_uri()
    if _failing.pop(uri, None):
        log.warning("MLflow at %s answers again", uri)


# MLflow names hold only letters, digits and ``_-. :/``: comparisons are spelled out (an evaluation's ``<=32``
# bucket is ``le32``), anything else becomes ``_``; otherwise MLflow refuses the whole batch of metrics
_COMPARISONS = (("<=", "le"), (">=", "ge"), ("<", "lt"), (">", "gt"))
_NOT_IN_A_NAME = re.compile(r"[^\w\-. :/]")


def mlflow_name(key: str) -> str:
    """``key`` as MLflow accepts it in a parameter or metric name.

    Parameters
    ----------
    key
        One part of a dotted name.

    Examples
    --------
    >>> from models.tracking import mlflow_name
    >>> [mlflow_name(k) for k in ("<=32", "65-128", ">128", "a+b")]
    ['le32', '65-128', 'gt128', 'a_b']
    """
    for sign, word in _COMPARISONS:
        key = key.replace(sign, word)
    return _NOT_IN_A_NAME.sub("_", key)


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """The leaves of nested plain data with dotted names (``model.dim``, 32): what MLflow's flat parameters and
    metrics are made of (each part of a name as ``mlflow_name`` gives it).

    Parameters
    ----------
    values
        Plain data.
    prefix
        Put before every name.

    Examples
    --------
    >>> from models.tracking import leaves
    >>> list(leaves({"model": {"dim": 32}, "tags": ["a"]}))
    [('model.dim', 32), ('tags', ['a'])]
    """
    for key, value in values.items():
        name = f"{prefix}{mlflow_name(str(key))}"
        if isinstance(value, dict):
            yield from leaves(value, f"{name}.")
        else:
            yield name, value


def flat(values: dict[str, Any]) -> dict[str, str]:
    """Nested parameters as MLflow's flat string parameters (``model.dim`` = ``"32"``; a list as JSON).

    Parameters
    ----------
    values
        Plain data.
    """
    return {name: json.dumps(v) if isinstance(v, (list, tuple)) else str(v) for name, v in leaves(values)}


class Run:
    """One MLflow run: what a training or evaluation used, how it went, and what it produced.

    Every method is a no-op on a run that could not start (the store unreachable), so trainings
    never fail because of tracking.

    Parameters
    ----------
    mlflow_client
        From ``client()``, or None for a run that is not recorded.
    run_id
        The run's id.
    """

    def __init__(self, mlflow_client: Any | None, run_id: str | None) -> None:
        self.client, self.run_id = mlflow_client, run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.run_id is None:
            return None
        try:
            done = getattr(self.client, method)(*args, **kwargs)
        except Exception as exc:  # tracking degrades, the training goes on
            warn_once(what, exc, self.client.tracking_uri)
            return None
        answered(self.client.tracking_uri)
        return done

    def params(self, values: dict[str, Any]) -> None:
        """Log parameters (nested dicts are flattened with dots; values become strings, at most 6000 chars).

        Parameters
        ----------
        values
            Name to value.
        """
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in flat(values).items()]
        for start in range(0, len(params), 100):
            self._call("log params", "log_batch", self.run_id, params=params[start : start + 100])

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        """Log metrics, at ``step`` (an epoch, a window, a fold) when they form a series.

        Parameters
        ----------
        values
            Name to number; None values are skipped.
        step
            Where in the series.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step or 0) for k, v in values.items() if v is not None]
        self._call("log metrics", "log_batch", self.run_id, metrics=metrics)

    def data(self, name: str, source: str, split: str, rows: int, digest: str | None = None) -> None:
        """Record a dataset the run used: where it came from, which split, how many rows.

        Parameters
        ----------
        name
            The dataset, e.g. ``vader-sentences``.
        source
            Where it came from: a path, a package file, a topic.
        split
            ``train``, ``validation``, ``test``, a fold...
        rows
            How many examples.
        digest
            A content digest; default: one derived from the other fields.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag

        digest = digest or hashlib.sha256(f"{name}|{source}|{split}|{rows}".encode()).hexdigest()[:16]
        dataset = Dataset(name=name, digest=digest, source_type="local" if "://" not in source else "uri",
                          source=json.dumps({"uri": source}), profile=json.dumps({"num_rows": rows}))
        self._call("log dataset", "log_inputs", self.run_id,
                   datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", split)])])
        self.params({f"data.{split}.source": source, f"data.{split}.rows": rows})

    def artifact(self, path: Path | str, folder: str | None = None) -> None:
        """Keep a file (model card, ONNX model, evaluation JSON) with the run.

        Parameters
        ----------
        path
            The file.
        folder
            A folder inside the run's artifacts.
        """
        self._call("log artifact", "log_artifact", self.run_id, str(path), folder)

    def json(self, data: Any, name: str) -> None:
        """Keep plain data as a JSON artifact (e.g. ``evaluation.json``).

        Parameters
        ----------
        data
            Plain data.
        name
            The artifact's path inside the run.
        """
        self._call("log artifact", "log_dict", self.run_id, data, name)

    def tag(self, key: str, value: str) -> None:
        """Set a tag on the run.

        Parameters
        ----------
        key, value
            The tag.
        """
        self._call("set tag", "set_tag", self.run_id, key, value)


@contextmanager
def run(experiment: str, name: str, *, tags: dict[str, str] | None = None, uri: str | None = None) -> Iterator[Run]:
    """A tracked run in ``experiment``; it ends FINISHED, or FAILED if the block raises.

    Parameters
    ----------
    experiment
        The experiment, e.g. ``eddyline/sentiment``.
    name
        The run's name.
    tags
        Tags for the run (what triggered it, the code version...).
    uri
        The tracking URI (default: ``tracking_uri()``).

    Examples
    --------
    >>> import tempfile
    >>> from models import tracking
    >>> store = tempfile.mkdtemp()
    >>> with tracking.run("eddyline/example", "fit", uri=tracking.embedded_uri(store)) as r:
    ...     r.params({"model": {"dim": 32}})
    ...     r.metrics({"loss": 0.5}, step=1)
    >>> r.active
    True
    """
    try:
        c = client(uri)
        exp = experiment_id(c, experiment)
        run_id = c.create_run(exp, run_name=name, tags={"eddyline.source": "eddyline", **(tags or {})}).info.run_id
    except Exception as exc:
        warn_once("start a run", exc, uri)
        c, run_id = None, None
    else:
        answered(uri)
    current = Run(c, run_id)
    status = "FAILED"
    try:
        yield current
        status = "FINISHED"
    finally:
        current._call("end run", "set_terminated", run_id, status)


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The numeric leaves of nested plain data, with dotted names (``accuracy.movie`` = ``0.86``).

    Parameters
    ----------
    values
        Plain data (an evaluation's output).
    """
    return {name: float(v) for name, v in leaves(values) if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_training(experiment: str, name: str, *, params: dict[str, Any], metrics: dict[str, Any] | None = None,
                 series: dict[str, list[float]] | None = None, datasets: list[tuple[str, str, str, int]] = (),
                 artifacts: list[Path | str] = (), tags: dict[str, str] | None = None) -> str | None:
    """Record a finished training or evaluation as one run, in one call (the hook a training adds at its end).

    Parameters
    ----------
    experiment, name
        Where and what: ``eddyline/sentiment``, ``train-sentiment``.
    params
        What it used (nested dicts are flattened).
    metrics
        What it reached; nested numbers are flattened (``accuracy.movie``), the rest ignored.
    series
        Metrics per step: name to values for steps 1, 2, ... (a loss per epoch, a score per fold).
    datasets
        ``(name, source, split, rows)`` per dataset it read.
    artifacts
        Files to keep with the run (model card, ONNX file, evaluation JSON); missing ones are skipped.
    tags
        Tags for the run.

    Returns
    -------
    str or None
        The run's id, None when the store could not be reached.
    """
    with run(experiment, name, tags=tags) as current:
        current.params(params)
        current.metrics(numbers(metrics or {}))
        for metric, values in (series or {}).items():
            for step, value in enumerate(values, start=1):
                current.metrics({metric: value}, step=step)
        for dataset in datasets:
            current.data(*dataset)
        for path in artifacts:
            if Path(path).is_file():
                current.artifact(path)
    return current.run_id
