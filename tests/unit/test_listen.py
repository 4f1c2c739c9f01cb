"""Listen addresses as the config writes them and as pygw prints them."""

from __future__ import annotations

import pytest

from pygw.listen import format_listen, parse_listen


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9901", ("127.0.0.1", 9901)),
        ("[::1]:0", ("::1", 0)),
        ("unix:/run/pygw/admin.sock", "/run/pygw/admin.sock"),
    ],
)
def test_listen_addresses(listen: str, parsed: tuple[str, int] | str) -> None:
    assert parse_listen(listen) == parsed


def test_formatted_addresses_parse_back() -> None:
    assert format_listen("::1", 8080) == "[::1]:8080"
    assert format_listen("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert parse_listen(format_listen("::1", 8080)) == ("::1", 8080)
