"""Example unbroken apps: ``unbroken serve examples.agent_app:app``."""
