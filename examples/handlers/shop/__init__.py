"""Handlers for examples/full.yaml's shop APIs."""
