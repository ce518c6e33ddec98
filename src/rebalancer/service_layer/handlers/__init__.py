"""Use-case handlers, one per command or inbound event."""
