"""Names flows and commands share, in a module that imports nothing: ``eddyline models`` names the click model
without loading the click flow (numpy, the online learner)."""

MODEL_NAME = "clicks-online"  # the click flow's model, as registered; the quality and drift flows watch it
