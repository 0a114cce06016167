"""Sentiment: a MiniLM classifier trained here on VADER's human-rated sentences, served through ONNX Runtime.

Importing this package is cheap; torch, transformers and onnxruntime load only when a model is trained or made.
"""

from models.sentiment.data import LABELS
from models.sentiment.model import Prediction, SentimentModel, default_model_dir, load_sentiment

__all__ = ["LABELS", "Prediction", "SentimentModel", "default_model_dir", "load_sentiment"]
