"""``eddyline models list | rollback | migrate-registry | ui``: the model registry from the command line.

The registry is MLflow's (``[mlflow]``: the embedded store under ``.eddyline/mlflow`` unless a tracking
URI is set); ``--registry-dir`` (or ``[retraining] registry_dir``) works on a local registry folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streams.flows.names import MODEL_NAME

if TYPE_CHECKING:
    from models.registry.base import Registry

REGISTRY_DIR = typer.Option(help="A local registry folder instead of MLflow's registry (default: [retraining] "
                                 "registry_dir; unset: [mlflow]).")


def open_registry(registry_dir: Path | None = None) -> Registry:
    """The registry the click flow uses: a local folder if one is named, else MLflow's per ``[mlflow]``.

    Parameters
    ----------
    registry_dir
        A local registry folder.
    """
    from models.registry import ModelRegistry
    from streams.flows.retraining import RetrainingSettings
    from streams.tracking import configure

    folder = registry_dir if registry_dir is not None else RetrainingSettings().registry_dir
    if folder is not None:
        return ModelRegistry(folder)
    configure()
    _answering_mlflow()
    from models.registry.mlflow_store import MlflowRegistry

    return MlflowRegistry()


ANSWER_S = 5.0  # how long a command waits for a tracking server to answer at all


def _answering_mlflow() -> None:
    """Refuse a tracking server that does not answer in one line and in seconds: MLflow's client retries, then
    fails in a backtrace hundreds of lines long. Exit 1, as for a Kafka broker: the server may be back in a minute.
    It asks through MLflow's own HTTP client, so the server's CA, an insecure TLS or a client certificate set in
    ``MLFLOW_TRACKING_*`` apply as they do to the command."""
    from models import tracking

    uri = tracking.tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:  # any status is an answer: a proxy or an auth layer in front of it may refuse /health itself
        http_request(get_default_host_creds(uri), "/health", "GET", max_retries=0, timeout=ANSWER_S,
                     raise_on_status=False)
    except MlflowException as exc:
        why: BaseException = exc
        while why.__cause__ or why.__context__:  # the socket's or TLS's own words, not three wrappers' around them
            why = why.__cause__ or why.__context__  # type: ignore[assignment]
        typer.secho(f"error: no MLflow server answered at {uri} ({why}); start it, or point "
                    "[mlflow] tracking_uri (EDDYLINE_MLFLOW_TRACKING_URI) at one that runs, or unset it and "
                    "MLFLOW_TRACKING_URI to use the embedded store", fg="red", err=True)
        raise typer.Exit(1) from None


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def rollback_command(
    model: Annotated[str, typer.Argument(help="The model to roll back.")] = MODEL_NAME,
    reason: Annotated[str, typer.Option(help="Why; kept in the registry's lineage.")] = "manual rollback",
    registry_dir: Annotated[Path | None, REGISTRY_DIR] = None,
) -> None:
    """Restore the previous champion of MODEL (on MLflow: move its champion alias back); a running click flow
    switches to it within [mlflow] poll_s."""
    from models.registry import RegistryError

    reg = open_registry(registry_dir)
    current = reg.champion(model)
    try:
        restored = reg.rollback(model, reason=reason)
    except RegistryError as exc:
        _fail(str(exc))
    typer.echo(f"{model}: champion is version {restored.version} again (was {current.version if current else '-'})")


def list_command(
    model: Annotated[str, typer.Argument(help="The model.")] = MODEL_NAME,
    registry_dir: Annotated[Path | None, REGISTRY_DIR] = None,
) -> None:
    """Every registered version of MODEL: status, parent, metrics and why it exists."""
    reg = open_registry(registry_dir)
    versions = reg.versions(model)
    if not versions:
        _fail(f"no versions of {model!r} in {reg.root}; train one (`eddyline run clicks`) or point [mlflow] "
              "tracking_uri (or --registry-dir) at the registry that has it")
    for v in versions:
        metrics = " ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items()))
        typer.echo(f"{v.version:>4} {v.status:<11} parent={v.parent or '-':<4} {metrics}  {v.reason}")


def migrate_command(
    directory: Annotated[Path, typer.Argument(help="The local registry folder (e.g. .eddyline/registry).")],
) -> None:
    """Copy a local registry folder into MLflow's registry ([mlflow]): every version with its artifacts,
    statuses, metrics, lineage, champion alias and action ids. Running it again copies nothing twice."""
    from models.registry import ModelRegistry
    from models.registry.mlflow_store import MlflowRegistry
    from streams.tracking import configure

    source = ModelRegistry(directory)
    if not source.models():
        _fail(f"{directory} holds no local registry (no <model>/registry.json); name the folder "
              "[retraining] registry_dir pointed at")
    configure()
    _answering_mlflow()
    target = MlflowRegistry()
    for model in source.models():
        mapping = target.import_local(source, model)
        pairs = ", ".join(f"{a}->{b}" for a, b in mapping.items())
        champ = target.champion(model)
        typer.echo(f"{model}: {len(mapping)} versions in {target.root} ({pairs}); champion "
                   f"{champ.version if champ else '-'}")


def ui_command(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Listen address; keep it on loopback unless it is protected.")] = "127.0.0.1",
) -> None:
    """Serve MLflow's UI over the embedded store (runs, model versions, aliases) until Ctrl-C."""
    from models import tracking
    from streams.tracking import configure

    settings = configure()
    uri = tracking.tracking_uri()
    if not uri.startswith("sqlite:///"):
        _fail(f"runs go to {uri}, which has its own UI; open that (or unset [mlflow] tracking_uri and "
              "MLFLOW_TRACKING_URI to browse the embedded store)")
    tracking.client(uri)  # creates the store's folder
    artifacts = (Path(settings.store_dir).resolve() / "artifacts").as_uri()
    typer.echo(f"MLflow UI over {uri}: http://{host}:{port}", err=True)
    try:
        subprocess.run([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                        "--default-artifact-root", artifacts, "--host", host, "--port", str(port), "--workers", "1"],
                       check=True)
    except KeyboardInterrupt:
        pass
    except subprocess.CalledProcessError as exc:
        _fail(f"mlflow server exited with {exc.returncode}; is port {port} free? Try --port")
