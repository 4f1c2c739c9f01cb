//! Bindings for `crate::upstream_head`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFrozenSet, PyString, PyTuple};

use super::request_head::pairs;
use crate::{hop, upstream_head};

/// The `(name, value)` slices of `headers`, borrowed from its bytes objects.
fn slices<'a, 'py>(found: &'a [super::request_head::Pair<'py>]) -> Vec<(&'a [u8], &'a [u8])> {
    found
        .iter()
        .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
        .collect()
}

/// The str items of `own_names` (TypeError for anything else).
fn strings_of<'py>(own_names: &Bound<'py, PyTuple>) -> PyResult<Vec<Bound<'py, PyString>>> {
    own_names
        .iter()
        .map(|name| name.cast_into::<PyString>().map_err(PyErr::from))
        .collect()
}

fn texts<'a>(strings: &'a [Bound<'_, PyString>]) -> PyResult<Vec<&'a str>> {
    strings.iter().map(|name| name.to_str()).collect()
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
/// the answer's Connection header names, no Content-Length, none named in `own_names` in any
/// case, no Vary), the Vary values joined by ", " (Latin-1 text) or None, and whether a
/// Content-Type, Server or Date line is among them.
#[pyfunction]
fn relayed_head<'py>(
    headers: &Bound<'py, PyAny>,
    own_names: &Bound<'py, PyTuple>,
) -> PyResult<RelayedHead<'py>> {
    let py = headers.py();
    let found = pairs(headers)?;
    let strings = strings_of(own_names)?;
    let names = texts(&strings)?;
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
/// `own_names`; None for anything else, which the callback parser then reads. Header blocks
/// over `max_head` bytes are left to it too.
#[pyfunction]
fn whole_answer<'py>(
    data: &Bound<'py, PyBytes>,
    own_names: &Bound<'py, PyTuple>,
    max_head: usize,
) -> PyResult<Option<WholeAnswer<'py>>> {
    let py = data.py();
    let strings = strings_of(own_names)?;
    let names = texts(&strings)?;
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
        PyBytes::new(py, found.reason),
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
