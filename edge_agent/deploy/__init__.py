"""Deployment files shipped with the agent: systemd unit, install script, example configuration."""
