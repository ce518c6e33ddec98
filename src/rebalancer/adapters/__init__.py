"""Adapters: the only code that knows PostgreSQL, Pulsar and the embedded servers."""
