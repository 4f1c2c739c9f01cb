"""pygw: a self-hosted API gateway and reverse proxy with AWS API Gateway semantics."""

__version__ = "0.1.0"
