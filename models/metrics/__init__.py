"""Classification quality metrics over arrays, for windows of joined predictions and labels."""

from models.metrics.classification import auc, classification_report, log_loss

__all__ = ["auc", "classification_report", "log_loss"]
