"""Names flows and commands share, in a module that imports nothing: ``eddyline models`` and ``eddyline security``
name the click model and the quarantine list without loading the click flow (numpy, the online learner)."""

MODEL_NAME = "clicks-online"  # the click flow's model, as registered; the quality and drift flows watch it
QUARANTINE_TOPIC = "security.quarantine"  # sources the online learners do not learn from (compacted, by source)
