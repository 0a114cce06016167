"""Model security: which sources an online learner should stop learning from."""

from models.security.poisoning import PoisonDetector, PoisonLimits, Verdict, parse_source, source_id

__all__ = ["PoisonDetector", "PoisonLimits", "Verdict", "parse_source", "source_id"]
