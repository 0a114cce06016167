"""What a long model job shows a person: each step as it starts and ends, a closing summary, and no library noise.

Training fetches a corpus, tokenises, trains, exports, quantises and evaluates; several of those take tens of
seconds with nothing to watch, and the libraries underneath print warnings that are harmless here (unused
pooler weights, ONNX export tracer notes, quantisation pre-processing advice). ``Steps`` says what is
happening and how it went; ``quiet_libraries`` silences the rest unless the user asks for it (``--verbose``).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Steps:
    """Announce each step when it starts, its result and time when it ends, and summarise them all.

    Parameters
    ----------
    echo
        Where lines go (``typer.echo`` to stderr from the CLI); ``None`` stays silent.
    """

    echo: Callable[[str], None] | None = None
    done: list[tuple[str, float, str]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, str]]:
        """Time one step; the caller puts its outcome in the yielded dict's ``"result"``.

        Parameters
        ----------
        name
            What the step does, e.g. ``"export to ONNX"``.
        """
        note: dict[str, str] = {}
        if self.echo:
            self.echo(f"{name} ...")
        started = time.perf_counter()
        yield note
        self.record(name, time.perf_counter() - started, note.get("result", "done"))

    def record(self, name: str, seconds: float, result: str) -> None:
        """Note a step timed elsewhere (an epoch inside a loop) and say how it went.

        Parameters
        ----------
        name, seconds, result
            The step, how long it took and its outcome in a few words.
        """
        self.done.append((name, seconds, result))
        if self.echo:
            self.echo(f"{name}: {result} ({seconds:.1f} s)")

    def summary(self) -> str:
        """One line per finished step with its time and result, and the total."""
        width = max((len(n) for n, _, _ in self.done), default=0)
        lines = [f"  {n:<{width}}  {t:7.1f} s  {r}" for n, t, r in self.done]
        lines.append(f"  {'total':<{width}}  {sum(t for _, t, _ in self.done):7.1f} s")
        return "\n".join(lines)


def quiet_libraries() -> None:
    """Silence the warnings and progress bars of transformers, the Hugging Face hub client (its retries of a base
    it cannot reach), torch's ONNX export, onnxruntime and Python's ``warnings``; only errors from them reach the
    console."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:
        pass
    for name in ("transformers", "huggingface_hub", "torch", "onnxruntime", "onnx", "root"):  # after the imports:
        logging.getLogger(name).setLevel(logging.ERROR)  # importing transformers sets the hub client's level again
