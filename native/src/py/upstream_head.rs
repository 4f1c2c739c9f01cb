//! Bindings for `crate::upstream_head`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyString};

use super::request_head::pairs;
use crate::{hop, upstream_head};

/// The `(name, value)` slices of `headers`, borrowed from its bytes objects.
fn slices<'a, 'py>(found: &'a [super::request_head::Pair<'py>]) -> Vec<(&'a [u8], &'a [u8])> {
    found
        .iter()
        .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
        .collect()
}

/// The names of `own` (a request's own response headers, as its stages set them; TypeError
/// for a name that is not a str).
fn strings_of<'py>(own: &Bound<'py, PyDict>) -> PyResult<Vec<Bound<'py, PyString>>> {
    own.iter()
        .map(|(name, _)| name.cast_into::<PyString>().map_err(PyErr::from))
        .collect()
}

/// The names that replace an upstream's headers of the same name: all but `Vary`, which is
/// merged with the upstream's when the answer is sent, so the upstream's Vary names stay.
fn replacing<'a>(strings: &'a [Bound<'_, PyString>]) -> PyResult<Vec<&'a str>> {
    let mut names = Vec::with_capacity(strings.len());
    for name in strings {
        let name = name.to_str()?;
        if name != "Vary" {
            names.push(name);
        }
    }
    Ok(names)
}

/// A `pygw.response.ResponseHead`.
type RelayedHead<'py> = (
    Bound<'py, PyBytes>,
    Option<Bound<'py, PyString>>,
    bool,
    bool,
    bool,
);

/// `(lines, vary, has_content_type, has_server, has_date)`: the header lines of an upstream's
/// answer relayed to the client (`Name: value\r\n` each, as received; no hop-by-hop header, none
/// the answer's Connection header names, no Content-Length, none that `own` names (any case;
/// its Vary excepted), no Vary), the Vary values joined by ", " (Latin-1 text) or None, and whether a
/// Content-Type, Server or Date line is among them.
#[pyfunction]
fn relayed_head<'py>(
    headers: &Bound<'py, PyAny>,
    own: &Bound<'py, PyDict>,
) -> PyResult<RelayedHead<'py>> {
    let py = headers.py();
    let found = pairs(headers)?;
    let strings = strings_of(own)?;
    let names = replacing(&strings)?;
    let relayed = upstream_head::relayed_head(&slices(&found), &names);
    let vary = relayed.vary.map(|vary| {
        let text: String = vary.iter().map(|&b| char::from(b)).collect();
        PyString::new(py, &text)
    });
    Ok((
        PyBytes::new(py, &relayed.lines),
        vary,
        relayed.has_content_type,
        relayed.has_server,
        relayed.has_date,
    ))
}

/// An upstream answer that `data` holds whole (a head, a Content-Length body, nothing more):
/// `(status, reason, head, body, keep_alive)`, with `head` as `relayed_head` makes it for
/// `own` and the reason empty unless it is ASCII; None for anything else, which the callback parser then reads. Header blocks
/// over `max_head` bytes are left to it too.
#[pyfunction]
fn whole_answer<'py>(
    data: &Bound<'py, PyBytes>,
    own: &Bound<'py, PyDict>,
    max_head: usize,
) -> PyResult<Option<WholeAnswer<'py>>> {
    let py = data.py();
    let strings = strings_of(own)?;
    let names = replacing(&strings)?;
    let Some(found) = crate::whole_answer::whole_answer(data.as_bytes(), &names, max_head) else {
        return Ok(None);
    };
    let relayed = found.relayed;
    let vary = relayed.vary.map(|vary| {
        let text: String = vary.iter().map(|&b| char::from(b)).collect();
        PyString::new(py, &text)
    });
    Ok(Some((
        found.status,
        PyBytes::new(py, ascii_reason(found.reason)),
        (
            PyBytes::new(py, &relayed.lines),
            vary,
            relayed.has_content_type,
            relayed.has_server,
            relayed.has_date,
        ),
        PyBytes::new(py, found.body),
        found.keep_alive,
    )))
}

/// A reason phrase is relayed only when it is ASCII: the status line is written as such.
fn ascii_reason(reason: &[u8]) -> &[u8] {
    if reason.is_ascii() {
        reason
    } else {
        b""
    }
}

/// What `whole_answer` hands Python.
type WholeAnswer<'py> = (
    u16,
    Bound<'py, PyBytes>,
    RelayedHead<'py>,
    Bound<'py, PyBytes>,
    bool,
);

/// Whether an answer's body length is known from `headers` (Content-Length, or a chunked
/// Transfer-Encoding); otherwise it runs until the upstream closes the connection.
#[pyfunction]
fn is_framed(headers: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(upstream_head::is_framed(&slices(&pairs(headers)?)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hop_by_hop = hop::HOP_BY_HOP
        .iter()
        .map(|name| PyBytes::new(m.py(), name));
    m.add("HOP_BY_HOP", PyFrozenSet::new(m.py(), hop_by_hop)?)?;
    m.add_function(wrap_pyfunction!(relayed_head, m)?)?;
    m.add_function(wrap_pyfunction!(whole_answer, m)?)?;
    m.add_function(wrap_pyfunction!(is_framed, m)?)
}
