"""Fails at import, for the handler-loading tests."""

raise RuntimeError("this module cannot be imported")
