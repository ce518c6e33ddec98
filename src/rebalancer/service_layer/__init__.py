"""Service layer: one use case per handler, each inside a unit of work."""
