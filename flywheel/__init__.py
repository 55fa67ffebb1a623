"""Flywheel's settings, CLI and process supervision. No domain logic lives here."""
