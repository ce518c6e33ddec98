"""Pure domain model: no framework, no SQL, no Pulsar, no clock (callers pass ``as_of``)."""
