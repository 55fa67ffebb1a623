"""Flywheel's store: ORM models, engine/sessions, migrations, and the repository functions every
other package calls (interactions, pairs, runs, registry, users, sign-in, audit, stats, status,
leases). Imports no other project package."""
