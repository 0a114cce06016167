"""The classifier's shape: the MiniLM encoder, mean pooling over tokens (how all-MiniLM-L6-v2 was trained to
embed sentences), and a small head. Exported whole to ONNX; kept here so the PyTorch baseline runs the same net."""

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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                lexicon: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
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
