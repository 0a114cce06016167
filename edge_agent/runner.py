"""The lean runtime ``eddyline-edge run`` execs into: plain settings in, the agent's loop, no pydantic.

Reads the plan that ``edge_agent.launch`` validated from an inherited file descriptor.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from types import SimpleNamespace
from typing import Any

_KEEP_AS_DICT = {"options"}  # a plug-in's own options stay a mapping


def namespace(value: Any, key: str = "") -> Any:
    if isinstance(value, dict) and key not in _KEEP_AS_DICT:
        return SimpleNamespace(**{k: namespace(v, k) for k, v in value.items()})
    if isinstance(value, list):
        return [namespace(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eddyline-edge run", description="internal: started by `eddyline-edge run`")
    p.add_argument("--plan-fd", type=int, required=True)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--flush-timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    with os.fdopen(args.plan_fd, "rb") as f:
        plan = json.load(f)
    settings = namespace(plan["edge"])
    # fastavro loads cramjam (3 MB) for snappy-compressed Avro files; the agent writes single records, never
    # files, so the lean runtime hides it: fastavro then only reports snappy as unavailable.
    sys.modules.setdefault("cramjam", None)  # type: ignore[assignment]

    from edge_agent.logs import setup_logging

    setup_logging(settings.log_level)
    from confluent_kafka import KafkaError, KafkaException

    from edge_agent.agent import Agent
    from edge_agent.buffer import BufferError
    from edge_agent.sources import SourceError

    try:
        agent = Agent(settings, plan["producer"], plan["topic"], version=plan["version"],
                      health_topic=plan.get("health_topic"), models=plan.get("models"))
    except (SourceError, BufferError, RuntimeError) as exc:
        print(f"eddyline-edge: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:  # a property librdkafka refuses, which only it knows: not a crash to restart
        if exc.args[0].code() != KafkaError._INVALID_ARG:
            raise
        print(f"eddyline-edge: the Kafka client settings are refused: {exc.args[0].str()}; fix [kafka] (librdkafka's "
              "own properties go in [kafka] extra) or send_timeout_s in [edge], then start it again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the handlers below exist: while waiting for room on a full disk
        print("eddyline-edge: run interrupted while starting; nothing was lost, run it again to start", file=sys.stderr)
        return 130
    agent.install_signal_handlers()
    agent.run(duration=args.duration, shutdown_flush_s=args.flush_timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
