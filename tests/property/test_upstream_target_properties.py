"""The upstream request target an http_proxy integration renders natively (TargetTemplate)
against its Python rendering, which stays for stage overrides and text that is not UTF-8: for
generated URI templates, path parameters, request paths and query strings, the two send the
same bytes, or both refuse the request for the same missing parameter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygw._native import TargetTemplate
from pygw.context import RequestContext
from pygw.errors import GatewayError
from pygw.integrations.http_proxy import HttpProxyIntegration
from pygw.request import Request

# Text a path, a parameter or a query may hold once decoded by the front end: printable
# ASCII, controls and space (escaped on the way out), and beyond ASCII.
_TEXT = st.text(
    alphabet=st.sampled_from([*"abz09/-._~%?&=+", " ", "\t", "\x00", "\x7f", "é", "☃", "\udcff"]),
    max_size=12,
)
_NAMES = st.sampled_from(["id", "proxy", "a.b", "x-y"])
_LITERAL = st.text(alphabet=st.sampled_from([*"abc/-_.", "é"]), max_size=6)


@st.composite
def _templates(draw: st.DrawFn) -> str:
    pieces = ["/" + draw(_LITERAL)]
    for name in draw(st.lists(_NAMES, max_size=3, unique=True)):
        plus = "+" if name == "proxy" and draw(st.booleans()) else ""
        pieces.append("{" + name + plus + "}")
        pieces.append(draw(_LITERAL))
    if draw(st.booleans()):
        pieces.append("?fixed=" + draw(_LITERAL))
    return "".join(pieces)


def _ctx(params: dict[str, str], path: str, raw_target: str) -> RequestContext:
    request = Request.build("GET", "/")
    request.raw_path = raw_target
    return RequestContext(request, "rid", path, params, {}, "127.0.0.1", 0.0)


def _outcome(render: object) -> bytes | str:
    try:
        return render()  # type: ignore[operator, no-any-return]
    except GatewayError as refused:
        return f"refused: {refused.detail}"


@settings(max_examples=600)
@given(
    template=st.one_of(st.none(), _templates()),
    params=st.dictionaries(_NAMES, _TEXT, max_size=4),
    path=_TEXT.map(lambda text: "/" + text),
    query=st.one_of(st.none(), _TEXT),
)
def test_native_and_python_rendering_send_the_same_target(
    template: str | None, params: dict[str, str], path: str, query: str | None
) -> None:
    integration = HttpProxyIntegration(uri=template, targets=[("http://127.0.0.1:1", 1)])
    raw_target = path if query is None else f"{path}?{query}"
    ctx = _ctx(params, path, raw_target)
    native = _outcome(lambda: integration.render_path(ctx, None))
    python = _outcome(lambda: integration._render_in_python(ctx, None))
    assert native == python


def test_a_missing_parameter_is_refused_by_name() -> None:
    integration = HttpProxyIntegration(uri="http://127.0.0.1:1/items/{id}")
    with pytest.raises(GatewayError) as refused:
        integration.render_path(_ctx({}, "/x", "/x"), None)
    assert refused.value.detail == "missing path parameter 'id'"
    rendered = integration.render_path(_ctx({"id": "a b"}, "/x/", "/x/?q=1 2"), None)
    assert rendered == b"/items/a%20b/?q=1%202"
    # Natively, unless a value is not UTF-8 text (Python renders those).
    template = TargetTemplate(["/items/", ""], ["id"], True, False)
    assert template.render({"id": "a b"}, "/x/", "/x/?q=1 2") == rendered
    assert template.render({"id": "\udcff"}, "/x", "/x") is None
