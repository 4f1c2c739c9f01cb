"""Integrations: what a route hands a request to once every stage has let it through."""
