"""Entry points: the HTTP API, Pulsar consumers and the CLI.

They parse input, call one service-layer handler and render its output; no business rules live
here.
"""
