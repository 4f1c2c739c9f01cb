"""The README's first steps: the requests it suggests after `make serve` are answered by a
gateway serving examples/quickstart.yaml (on free ports, so that the test runs anywhere)."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import ClientSession

from tests.integration.conftest import serving

ROOT = Path(__file__).resolve().parents[2]


def _suggested_paths() -> list[str]:
    """The gateway paths of the README's "try `curl localhost:8080/...`" sentence."""
    readme = (ROOT / "README.md").read_text()
    sentence = readme[readme.index("`make serve` listens on") :].split("\n\n", 1)[0]
    return re.findall(r"`curl localhost:8080(/[^`\s]*)`", sentence)


async def test_the_readme_suggestions_answer_on_the_quickstart_config(tmp_path: Path) -> None:
    paths = _suggested_paths()
    assert len(paths) >= 3, paths
    config = (ROOT / "examples" / "quickstart.yaml").read_text()
    for fixed in ("127.0.0.1:8080", "127.0.0.1:9901"):
        assert fixed in config
        config = config.replace(fixed, "127.0.0.1:0")
    path = tmp_path / "quickstart.yaml"
    path.write_text(config)
    async with serving(path) as url, ClientSession() as client:
        for suggested in paths:
            async with client.get(f"{url}{suggested}") as got:
                assert got.status == 200, (suggested, await got.text())
