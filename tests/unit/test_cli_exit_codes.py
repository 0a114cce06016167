"""Exit codes a supervisor acts on: 2 for what only an edit can fix, 1 for a broker that may come back."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from streams.cli import CliError, friendly


def _app(exc: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @friendly
    def go() -> None:
        raise exc

    return app


def test_an_unreachable_broker_exits_1_so_that_a_supervisor_restarts_the_flow() -> None:
    result = CliRunner().invoke(_app(TimeoutError("creating topic 'alerts': no answer from 127.0.0.1:1 in 30 s")), [])
    assert result.exit_code == 1
    assert "no answer from 127.0.0.1:1" in result.output and "Is Kafka reachable?" in result.output


def test_a_mistake_in_the_command_exits_2_and_says_what_to_do() -> None:
    result = CliRunner().invoke(_app(CliError("no such flow 'anomly'; try `eddyline run --help`")), [])
    assert result.exit_code == 2
    assert "eddyline run --help" in result.output


def test_a_broker_port_in_use_is_a_mistake_to_fix_not_a_backtrace() -> None:
    import socket

    from streams.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["broker", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is in use" in result.output and "--port" in result.output
    assert "Traceback" not in result.output and "panicked" not in result.output


def test_an_unknown_detector_stops_the_start_and_names_the_setting_and_the_known_ones(defaults_config) -> None:
    from streams.cli import app

    env = {"EDDYLINE_RUNTIME_DETECTOR": "seasonl", "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # refused before any broker is asked
    result = CliRunner().invoke(app, ["run", "anomaly"], env=env)
    assert result.exit_code == 2, result.output
    assert "EDDYLINE_RUNTIME_DETECTOR: unknown anomaly detector 'seasonl'" in result.output
    assert "seasonal" in result.output.split("use one of", 1)[1] and "Traceback" not in result.output


def test_an_unknown_flow_suggests_the_close_one_among_all_it_can_run(defaults_config) -> None:
    from streams.cli import app

    result = CliRunner().invoke(app, ["run", "anomly"])
    assert result.exit_code == 2
    assert "unknown flow 'anomly'; did you mean anomaly?" in result.output
    assert "notify" in result.output.split("Choose one of:", 1)[1]  # a service, run by the same command


def test_a_metrics_or_live_port_in_use_says_which_option_moves_it(defaults_config) -> None:
    import socket

    from streams.cli import app

    env = {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        metrics = CliRunner().invoke(app, ["run", "anomaly", "--metrics-port", port], env=env)
        live = CliRunner().invoke(app, ["live", "--port", port], env=env)
    assert metrics.exit_code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in metrics.output
    assert "--metrics-port" in metrics.output and "Traceback" not in metrics.output
    assert live.exit_code == 2 and f"the live page cannot listen on 127.0.0.1:{port}" in live.output
    assert "eddyline live --port" in live.output and "Traceback" not in live.output


def test_a_table_setting_in_the_environment_that_is_not_json_names_the_variable(defaults_config) -> None:
    from streams.cli import app

    env = {"EDDYLINE_KAFKA_EXTRA": "fetch.wait.max.ms=100"}
    result = CliRunner().invoke(app, ["topics", "create"], env=env)
    assert result.exit_code == 2
    assert "EDDYLINE_KAFKA_EXTRA cannot be read" in result.output and "takes JSON" in result.output


def test_producer_counts_out_of_range_are_refused_before_anything_runs() -> None:
    """--devices 0 produced nothing and never stopped; a negative rate was taken as 'as fast as possible'."""
    from streams.cli import app

    for args in (["--devices", "0"], ["--rate", "-5"], ["--anomaly-rate", "2"]):
        result = CliRunner().invoke(app, ["produce", "sensors", *args, "--count", "1"],
                                    env={"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
        assert result.exit_code == 2 and f"Invalid value for '{args[0]}'" in result.output, result.output


def test_topics_create_where_nothing_listens_says_so_within_its_timeout_and_what_to_do(
        defaults_config, capfd: pytest.CaptureFixture[str]) -> None:
    """It waited create_topics' 30 s before: a flow starting beside its broker needs that, a person does not."""
    from connectors.broker import free_port
    from streams.cli import app

    bootstrap = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["topics", "create", "--timeout", "1"],
                                env={"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert result.exit_code == 1, result.output
    assert f"no Kafka broker answered at {bootstrap} within 1 s" in result.output
    assert "raise --timeout" in result.output and "eddyline broker" in result.output
    assert "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS" in result.output and "Traceback" not in result.output
    assert "|FAIL|" not in capfd.readouterr().err  # librdkafka's own lines, one per reconnect


@pytest.mark.parametrize("command", [
    ["produce", "sensors", "--count", "1"],
    ["security", "list"],
    ["security", "release", "producer:bot"],
    ["alerts", "redrive"],
    ["edge", "rollout", "v1", "--device-class", "rpi4"],
])
def test_commands_a_person_runs_say_within_seconds_that_no_broker_answers(
        command: list[str], defaults_config, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Each waited create_topics' 30 s (or a read's) before its error; now it asks the broker first."""
    from connectors.broker import free_port
    from streams.cli import app, errors

    monkeypatch.setattr(errors, "BROKER_ANSWER_S", 1.0)
    bootstrap = f"127.0.0.1:{free_port()}"
    key = tmp_path / "signing.pem"  # `edge rollout` signs its records: it asks for the key before the broker
    key.write_text("a key")
    result = CliRunner().invoke(app, command, env={"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                                                   "EDDYLINE_EDGE_SIGNING_KEY": str(key)})
    assert result.exit_code == 1, result.output
    assert f"no Kafka broker answered at {bootstrap} within 1 s" in result.output
    assert "eddyline broker" in result.output and "Traceback" not in result.output


def test_a_path_that_is_a_folder_or_unreadable_is_a_mistake_to_fix_not_a_backtrace(tmp_path) -> None:
    from streams.cli import app

    result = CliRunner().invoke(app, ["transcribe", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"Is a directory: {tmp_path}; check the path" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(_app(PermissionError(13, "Permission denied", "/etc/eddyline/key.pem")), [])
    assert result.exit_code == 2 and "Permission denied: /etc/eddyline/key.pem; check the path" in result.output


def test_a_librdkafka_property_the_client_refuses_is_a_mistake_to_fix_not_a_missing_broker(defaults_config) -> None:
    """A typo in ``[kafka] extra`` was "no Kafka broker answered" for a command (exit 1: restarted for ever), and a
    KafkaException backtrace for a flow's start."""
    from connectors.config import ConfigError
    from connectors.kafka import EventProducer, KafkaSettings, make_consumer
    from streams.cli import app

    env = {"EDDYLINE_KAFKA_EXTRA": '{"linger.msx": "5"}', "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    for command in (["topics", "create", "--timeout", "1"], ["run", "anomaly"]):
        result = CliRunner().invoke(app, command, env=env)
        assert result.exit_code == 2, result.output
        assert 'No such configuration property: "linger.msx"' in result.output and "[kafka] extra" in result.output
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", security_protocol="SSL", ssl_ca_location="/no/ca.pem")
    for build in (lambda: make_consumer(settings, "g"), lambda: EventProducer(settings)):
        with pytest.raises(ConfigError, match="ssl.ca.location"):
            build()


@pytest.mark.parametrize("command", [["models", "list"], ["models", "rollback"], ["models", "migrate-registry"]])
def test_a_registry_server_that_does_not_answer_says_so_and_what_to_do(command: list[str], defaults_config,
                                                                       tmp_path) -> None:
    """It was a backtrace of MLflow's retries, some 400 lines, ending in an MlflowException."""
    from connectors.broker import free_port
    from models.registry import ModelRegistry
    from streams.cli import app
    from streams.flows.names import MODEL_NAME

    if command[-1] == "migrate-registry":  # a local registry with a version to copy
        ModelRegistry(tmp_path).register(MODEL_NAME, {"weights": [1.0]}, metrics={"auc": 0.5}, reason="test")
        command = [*command, str(tmp_path)]
    uri = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, command, env={"EDDYLINE_MLFLOW_TRACKING_URI": uri})
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert result.exit_code == 1, result.output  # the server may be back in a minute: a retry may do
    assert f"no MLflow server answered at {uri}" in result.output and "tracking_uri" in result.output


def test_a_registry_server_that_answers_is_asked(mlflow_server, defaults_config) -> None:
    from streams.cli import app

    result = CliRunner().invoke(app, ["models", "list"], env={"EDDYLINE_MLFLOW_TRACKING_URI": mlflow_server.url})
    assert result.exit_code == 2 and f"no versions of 'clicks-online' in {mlflow_server.url}" in result.output, \
        result.output


def test_a_registry_server_behind_https_with_its_own_ca_is_asked(mlflow_server, defaults_config, tls_files,
                                                                 monkeypatch) -> None:
    """The answering check asked with urllib, which knows none of MLflow's TLS settings: an MLflow behind HTTPS with
    a company CA (``MLFLOW_TRACKING_SERVER_CERT_PATH``) was "no MLflow server answered" while MLflow reached it."""
    import http.server
    import ssl
    import threading
    import urllib.error
    import urllib.request

    from streams.cli import app

    class Forward(http.server.BaseHTTPRequestHandler):  # TLS in front of the real server, as a proxy would be
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            req = urllib.request.Request(mlflow_server.url + self.path, body, method=self.command,
                                         headers={"Content-Type": self.headers.get("Content-Type", "text/plain")})
            try:
                with urllib.request.urlopen(req, timeout=30) as answer:
                    status, data = answer.status, answer.read()
            except urllib.error.HTTPError as refused:
                status, data = refused.code, refused.read()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    ca, cert, key = tls_files
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy.socket = context.wrap_socket(proxy.socket, server_side=True)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    uri = f"https://localhost:{proxy.server_port}"
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(ca))
    try:
        result = CliRunner().invoke(app, ["models", "list"], env={"EDDYLINE_MLFLOW_TRACKING_URI": uri})
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.exit_code == 2 and f"no versions of 'clicks-online' in {uri}" in result.output, result.output
