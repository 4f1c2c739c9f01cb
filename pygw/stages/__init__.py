"""One module per pipeline stage; a route gets only the stages its config uses."""
