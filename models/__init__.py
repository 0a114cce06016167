"""The ML: anomaly and drift detectors, online learners, speech and sentiment; numbers in, numbers out."""
