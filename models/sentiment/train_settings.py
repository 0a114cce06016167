"""The sentiment trainer's settings and their defaults, in one place.

``train`` takes them and ``eddyline models train-sentiment`` builds its options' defaults from them, so a default
chosen on the validation split is changed here once (the CLI's ``--help`` shows the same values). Plain
standard-library data: the trainer lives in ``models``, which imports nothing of ours (no ``connectors.config``
section), and these are choices for one run, not a deployment's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from models.sentiment.encoders import DEFAULT_ENCODER, ENCODERS, MINILM, registry_encoder
from models.sentiment.normalise import NORMALISE


@dataclass(frozen=True)
class TrainingSettings:
    """What a training run trains on and how; ``TrainingSettings()`` is the model the project ships.

    Parameters
    ----------
    base
        Base encoder: a registry encoder's name (``encoders.ENCODERS``: ``all-mpnet-base-v2``, the default since
        session 14, fetched on first use; ``all-MiniLM-L6-v2``, installed with the project), a folder or a hub id.
    trainable_layers
        Top encoder layers to fine-tune; the lower ones stay frozen, their output computed once per sentence and
        cached. ``None``: the base's own recipe, chosen on the validation split (``encoders.ENCODERS``): mpnet 2
        of 12 (session 14), MiniLM 4 of 6 (session 9: 0.905 vs 0.896 with 3, as 3 had beaten 2 in session 6);
        a folder or hub id gets MiniLM's. 0 (frozen encoder, head on cached sentence embeddings) reached 0.78.
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
        Wall-clock seconds after which the epochs stop (the card records whether they were cut short); the
        learning-rate schedule is fitted to it. ``None``: the base's own (mpnet 3,600, MiniLM 840).
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
    lexicon_prior
        Fit a lexicon prior on the validation split: VADER's compound score of each window, times a weight
        chosen there by likelihood, added to the positive logit and taken from the negative one
        (``calibrate.fit_lexicon_weight``; stored in ``sentiment.json`` as ``lexicon_weight``). On since
        session 16: chosen on the validation split by a rule written down first (cross-fitted mean polar
        0.933 vs 0.930, tweets 0.998 vs 0.988; BENCHMARKS-audio.md).
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

    base: str = DEFAULT_ENCODER
    trainable_layers: int | None = None
    head_hidden: int = 256
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 64
    max_length: int = 64
    learning_rate: float = 2e-4
    time_budget_s: float | None = None
    threads: int = 0
    limit: int | None = None
    validation_fraction: float = 0.15
    validation_limit: int | None = None
    extra_sets: tuple[str, ...] = ()
    extra_cap: int = 6000
    lexicon_input: bool = False
    lexicon_prior: bool = True
    normalise: str | None = NORMALISE
    domain_weights: dict[str, float] | None = None
    reuse_frozen: bool = True
    seed: int = 13

    def resolved(self) -> TrainingSettings:
        """These settings with the base encoder's recipe wherever a value was left to it (``None``)."""
        recipe = registry_encoder(self.base) or ENCODERS[MINILM]
        return replace(self,
                       trainable_layers=recipe.trainable_layers if self.trainable_layers is None else self.trainable_layers,
                       time_budget_s=recipe.time_budget_s if self.time_budget_s is None else self.time_budget_s)
