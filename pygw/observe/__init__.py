"""Metrics (Prometheus) and access logs (JSON lines)."""
