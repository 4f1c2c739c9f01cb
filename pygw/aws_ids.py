"""The account and API ids pygw's events and ARNs carry, where AWS would put real ones."""

from __future__ import annotations

import hashlib
from typing import Final

ACCOUNT_ID: Final = "000000000000"


def api_id_for(api_name: str) -> str:
    """A stable 10-character id in AWS's alphabet, derived from the API's name."""
    digest = hashlib.sha256(api_name.encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:10])
