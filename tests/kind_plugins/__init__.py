"""Test-only plugins that follow docs/extending.md: a segment kind, a destination type and a
source format, each one module. tests/test_kind_plugins.py registers them and runs them
through the real loader, evaluation, activation and ingest."""
