"""A module that fails on import, to check the error names it."""

raise RuntimeError("this authorizer module is broken")
