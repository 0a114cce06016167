"""Stand-ins for outside services that cannot run here (PagerDuty, Slack), for tests and the demo.

Nothing in production imports this package: the real connectors live one level up.
"""
