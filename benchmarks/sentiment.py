"""Sentiment and speech speed, measured in one run on the same machine.

- ``onnx_int8_texts_per_s``: the trained model through onnxruntime, int8 weights, batches of ``BENCH_BATCH``
  windows (64, as timed since session 7; ``--batch-size``, e.g. 16, the served ``WINDOW_BATCH`` since session 12).
- ``torch_fp32_texts_per_s``: the same network in PyTorch fp32, same texts, same batches, same threads.
- ``same_length`` (``--same-length``): both engines batch only windows of one length, so no batch is padded
  (more, smaller batches); off by default, so the default stays comparable with earlier sessions.
- ``*_cpu_s``: the process CPU seconds of each engine's best pass (less moved by neighbours than wall time).
- ``emotion_texts_per_s``: the emotion backend the flow runs beside it (the NRC lexicon), same texts.
- ``compare_onnx_int8_texts_per_s`` (with ``--compare-dir``): another trained model's int8 graph in the same
  interleaved passes, e.g. one with more trainable layers (the served graph has the same shape, so it should
  run at the same rate). ``--compare-spinning`` loads it with onnxruntime's spinning threads (its default, served
  until session 9), e.g. the served model against itself as served before.
- ``omp_wait_policy``: PyTorch's OpenMP threads spin by default, which on shared cores cost it up to 2.6x its
  wall time (session 9), while onnxruntime's served threads sleep, so a loaded run flattered the ONNX ratio. The
  bench sets ``OMP_WAIT_POLICY=PASSIVE`` (both engines' threads sleep) unless the variable is already set; it
  reads ``default`` when torch was loaded before. ``OMP_WAIT_POLICY=ACTIVE`` times PyTorch spinning, but its idle
  threads then also spin through the ONNX passes of the same process and slow them (session 11).
- ``load_average``: the 1-minute load average at the start and at the end, and ``machine``, whose ``cpu_int8``
  lists the int8 instruction sets the CPU has (VNNI, AMX): the ratio depends on both.
- ``speech_rtf``: Whisper tiny.en (faster-whisper, int8) processing time over audio duration on the
  repository's recordings, transcribed as the flow does (one utterance at a time, no extra VAD pass).
Texts are held-out test sentences from all four domains; each timing is the best of ``repeats`` passes
after a warm-up pass, ONNX and PyTorch passes interleaved, so a neighbour's burst on a shared machine
costs both alike.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.report import cpu_flags, machine, write_json
from benchmarks.wer import DATA_DIR, read_references

BENCH_BATCH = 64  # the default every earlier session timed, kept so runs stay comparable


def _best_rates(fns: list[Any], n: int, repeats: int) -> tuple[list[float], list[float]]:
    """Best-of-``repeats`` rate and CPU seconds for each function, the passes interleaved so load from neighbours
    hits all alike."""
    for fn in fns:
        fn()
    best, cpu = [float("inf")] * len(fns), [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            started = time.process_time()
            best[i] = min(best[i], _timed(fn))
            cpu[i] = min(cpu[i], time.process_time() - started)
    return [n / b for b in best], cpu


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _sleeping_omp_threads() -> str:
    """Make PyTorch's OpenMP threads sleep between parallel regions, as onnxruntime's served threads do, unless
    the caller chose a policy; return the policy PyTorch runs with. It only takes effect before torch loads."""
    import sys

    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY", "default")


def run(model_dir: Path | None = None, texts: int = 512, threads: int = 0, repeats: int = 5,
        audio_dir: Path = DATA_DIR, compare_dir: Path | None = None, batch_size: int = 0,
        compare_spinning: bool = False, same_length: bool = False) -> dict[str, Any]:
    omp_policy = _sleeping_omp_threads()  # before anything can load torch
    from connectors.wav import read_wav
    from models.sentiment.data import load_examples, split
    from models.sentiment.emotion import load_emotion
    from models.sentiment.model import OnnxSentiment, TorchSentiment, default_model_dir
    from models.speech import load_transcriber

    threads = threads or min(4, os.cpu_count() or 1)
    batch_size = batch_size or BENCH_BATCH
    model_dir = model_dir or default_model_dir()
    if not (model_dir / "model.int8.onnx").is_file():
        raise FileNotFoundError(f"no trained model in {model_dir}: run `eddyline models train-sentiment` first")
    load_start = os.getloadavg()[0]
    _, test = split(load_examples())
    sample = [e.text for e in test[:: max(1, len(test) // texts)]][:texts]
    onnx = OnnxSentiment(model_dir, threads=threads, batch_size=batch_size, same_length=same_length)
    torch_model = TorchSentiment(model_dir / "torch", threads=threads, batch_size=batch_size, same_length=same_length)
    emotion = load_emotion()
    other = (OnnxSentiment(compare_dir, threads=threads, batch_size=batch_size, spinning=compare_spinning,
                           same_length=same_length)
             if compare_dir is not None else None)
    (onnx_rate, torch_rate, emotion_rate, *other_rate), (onnx_cpu, torch_cpu, _, *other_cpu) = _best_rates(
        [lambda: onnx.probabilities(sample), lambda: torch_model.probabilities(sample),
         lambda: emotion.probabilities(sample)] + ([lambda: other.probabilities(sample)] if other else []),
        len(sample), repeats)
    agree = float((onnx.probabilities(sample).argmax(1) == torch_model.probabilities(sample).argmax(1)).mean())

    transcriber = load_transcriber(cpu_threads=threads)
    clips = [read_wav(audio_dir / f"{name}.wav").pcm for name in read_references(audio_dir)]
    audio_s = sum(len(c) / 2 / 16000 for c in clips)
    busy = min(_timed(lambda: [transcriber.transcribe(c) for c in clips]) for _ in range(repeats))
    return {
        "onnx_int8_texts_per_s": onnx_rate,
        "torch_fp32_texts_per_s": torch_rate,
        "onnx_int8_cpu_s": onnx_cpu,
        "torch_fp32_cpu_s": torch_cpu,
        "emotion_texts_per_s": emotion_rate,
        "speech_rtf": busy / audio_s,
        **({"compare_dir": str(compare_dir), "compare_spinning": compare_spinning,
            "compare_onnx_int8_texts_per_s": other_rate[0],
            "compare_onnx_int8_cpu_s": other_cpu[0], "compare_onnx_speedup": other_rate[0] / torch_rate}
           if other else {}),
        "onnx_speedup": onnx_rate / torch_rate,
        "onnx_cpu_speedup": torch_cpu / onnx_cpu,
        "onnx_torch_label_agreement": agree,
        "texts": len(sample),
        "batch_size": batch_size,
        "same_length": same_length,
        "audio_s": audio_s,
        "threads": threads,
        "omp_wait_policy": omp_policy,
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "machine": {"cpus": os.cpu_count(), "description": machine(), "cpu_int8": cpu_flags()},
    }


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="trained model (default: the train command's)")] = None,
    texts: Annotated[int, typer.Option(help="held-out sentences per pass")] = 512,
    threads: Annotated[int, typer.Option(help="threads for every engine (0 = up to 4)")] = 0,
    repeats: Annotated[int, typer.Option(help="timed passes; the best counts")] = 5,
    compare_dir: Annotated[Path | None, typer.Option(
        "--compare-dir", help="another trained model whose int8 graph is timed in the same passes")] = None,
    batch_size: Annotated[int, typer.Option(help="windows per inference call, every engine (0 = 64, as earlier sessions; served: 16)")] = 0,
    compare_spinning: Annotated[bool, typer.Option(
        "--compare-spinning", help="load the --compare-dir model with onnxruntime's spinning threads (served until session 9)")] = False,
    same_length: Annotated[bool, typer.Option(
        "--same-length", help="every engine batches only windows of one length (no padding)")] = False,
) -> None:
    """ONNX int8 vs PyTorch fp32 sentiment throughput, and Whisper's real-time factor."""
    try:
        result = run(model_dir, texts, threads, repeats, compare_dir=compare_dir, batch_size=batch_size,
                     compare_spinning=compare_spinning, same_length=same_length)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"sentiment: onnx int8 {result['onnx_int8_texts_per_s']:.1f} texts/s, torch fp32 "
               f"{result['torch_fp32_texts_per_s']:.1f} texts/s ({result['onnx_speedup']:.2f}x; CPU s a pass "
               f"{result['onnx_int8_cpu_s']:.2f} vs {result['torch_fp32_cpu_s']:.2f}, "
               f"{result['onnx_cpu_speedup']:.2f}x); emotion "
               f"{result['emotion_texts_per_s']:.0f} texts/s; "
               f"speech RTF {result['speech_rtf']:.3f} ({result['threads']} threads, load average "
               f"{result['load_average'][0]:.1f} -> {result['load_average'][1]:.1f})"
               + (f"; {compare_dir}{' (spinning)' if compare_spinning else ''}: onnx int8 {result['compare_onnx_int8_texts_per_s']:.1f} texts/s, "
                  f"{result['compare_onnx_int8_cpu_s']:.2f} CPU s" if compare_dir else ""))
    write_json(json_path, result)


def windows_command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="trained model (default: the train command's)")] = None,
    folds: Annotated[int, typer.Option(help="cross-validation folds over training passages")] = 5,
) -> None:
    """Choose how window logits are aggregated (and the overlap) by cross-validation on TRAINING passages."""
    from models.sentiment.evaluate import cross_validate_aggregation
    from models.sentiment.model import OnnxSentiment, default_model_dir

    model_dir = model_dir or default_model_dir()
    if not (model_dir / "model.int8.onnx").is_file():
        raise typer.BadParameter(f"no trained model in {model_dir}: run `eddyline models train-sentiment` first")
    result = cross_validate_aggregation(OnnxSentiment(model_dir), folds=folds)
    for setting, acc in sorted(result["accuracy"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"{setting:28s} {acc:.3f}")
    typer.echo(f"chosen: {result['chosen']} (per fold: {', '.join(result['chosen_per_fold'])}); cross-validated "
               f"accuracy of choosing {result['cv_accuracy']:.3f} over {result['passages']} training passages "
               f"({result['long_passages']} longer than one window)")
    write_json(json_path, result)


if __name__ == "__main__":
    cli = typer.Typer(add_completion=False)
    cli.command("speed")(command)
    cli.command("windows")(windows_command)
    cli()
