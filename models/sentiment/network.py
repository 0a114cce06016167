"""The classifier's shape: a BERT-like encoder (all-MiniLM-L6-v2 by default; any of BERT's or MPNet's family through
``--base``), mean pooling over tokens (how the sentence-transformers encoders were trained to embed sentences), and
a small head. Exported whole to ONNX; kept here so the PyTorch baseline runs the same net."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

HEAD_FILE = "head.pt"
HEAD_CONFIG = "head.json"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)


def uses_token_types(encoder: nn.Module) -> bool:
    """Whether the encoder reads segment ids: BERT's family has a token-type embedding, MPNet's has none (its
    forward would pass a stray ``token_type_ids`` down to every layer)."""
    return getattr(encoder.config, "type_vocab_size", 0) > 0


def run_layers(encoder: nn.Module, layers: list[nn.Module], hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden`` through ``layers`` (some of ``encoder``'s own) as the encoder itself would run them: training the
    top layers on cached outputs of the frozen ones calls them one by one.

    MPNet's layers also take the relative-position bias its encoder computes once per batch; BERT's layers
    return a tensor, MPNet's a tuple.

    Parameters
    ----------
    encoder
        The Hugging Face base model the layers belong to.
    layers
        Its layers to run, bottom first.
    hidden
        (batch, tokens, width) input of the first of them.
    attention_mask
        (batch, tokens), 1 for a token and 0 for padding.
    """
    additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    position_bias = getattr(encoder.encoder, "compute_position_bias", None)
    extra = () if position_bias is None else (position_bias(hidden),)
    for layer in layers:
        out = layer(hidden, additive, *extra)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def make_head(width: int, hidden: int, n_labels: int, dropout: float = 0.1) -> nn.Sequential:
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n_labels))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_labels))


def head_input(pooled: torch.Tensor, lexicon: torch.Tensor | None) -> torch.Tensor:
    """What the head reads: the pooled tokens, then VADER's compound score when the model takes it."""
    return pooled if lexicon is None else torch.cat([pooled, lexicon.to(pooled.dtype)], dim=-1)


class MeanPoolClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Sequential, lexicon_inputs: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.lexicon_inputs = lexicon_inputs
        self.token_types = uses_token_types(encoder)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                lexicon: torch.Tensor | None = None) -> torch.Tensor:
        """``token_type_ids`` is ignored by an encoder without segment embeddings (MPNet); the ONNX graph then has
        no such input and the int8 engine feeds only the inputs its graph declares."""
        types = {"token_type_ids": token_type_ids} if self.token_types else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **types).last_hidden_state
        return self.head(head_input(mean_pool(hidden, attention_mask), lexicon))

    def save(self, directory: Path, head_config: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory)
        torch.save(self.head.state_dict(), directory / HEAD_FILE)
        (directory / HEAD_CONFIG).write_text(json.dumps(head_config))

    @classmethod
    def load(cls, directory: Path) -> MeanPoolClassifier:
        from transformers import AutoModel

        cfg = json.loads((directory / HEAD_CONFIG).read_text())
        lexicon = int(cfg.get("lexicon_inputs", 0))
        head = make_head(cfg["width"] + lexicon, cfg["hidden"], cfg["labels"])
        head.load_state_dict(torch.load(directory / HEAD_FILE, weights_only=True))
        return cls(AutoModel.from_pretrained(str(directory), add_pooling_layer=False), head, lexicon).eval()
