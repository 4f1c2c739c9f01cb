//! Bindings for `crate::head`.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::head::push_header_line;
use crate::http_date;

/// A header name or value as the UTF-8 text it is sent as; anything else (a number, say) as its
/// `str()`, the way an f-string would have formatted it.
fn push_text(part: &Bound<'_, PyAny>, with: impl FnOnce(&[u8]) -> PyResult<()>) -> PyResult<()> {
    match part.cast::<PyString>() {
        Ok(text) => with(text.to_str()?.as_bytes()),
        Err(_) => with(part.str()?.to_str()?.as_bytes()),
    }
}

fn push_pair(out: &mut Vec<u8>, name: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    push_text(name, |name| {
        push_text(value, |value| {
            push_header_line(out, name, value)
                .map_err(|_| PyValueError::new_err("a response header value contains a line break"))
        })
    })
}

fn push_lines<'py>(out: &mut Vec<u8>, headers: &Bound<'py, PyAny>) -> PyResult<()> {
    if let Ok(dict) = headers.cast::<PyDict>() {
        for (name, value) in dict.iter() {
            push_pair(out, &name, &value)?;
        }
    } else {
        for item in headers.call_method0("items")?.try_iter()? {
            let (name, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
            push_pair(out, &name, &value)?;
        }
    }
    Ok(())
}

/// `Name: value\r\n` for every item of `headers` (a dict, or any mapping with `items()`), in
/// order, as one bytes object. ValueError when a name or value holds CR or LF.
#[pyfunction]
fn header_lines<'py>(headers: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(256);
    push_lines(&mut out, headers)?;
    Ok(PyBytes::new(headers.py(), &out))
}

/// The connection line an HTTP/1.`minor` answer needs: `close` where 1.1 would keep the
/// connection, `keep-alive` where 1.0 would close it, else none.
fn connection_line(minor: u8, keep_alive: bool) -> &'static [u8] {
    match (keep_alive, minor >= 1) {
        (false, true) => b"Connection: close\r\n",
        (true, false) => b"Connection: keep-alive\r\n",
        _ => b"",
    }
}

/// `Date: ...\r\n` for now (RFC 9110 IMF-fixdate), formatted once per second.
#[pyfunction]
fn date_line(py: Python<'_>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &http_date::date_line_now())
}

/// The Date line for `secs` seconds after the Unix epoch.
#[pyfunction]
fn date_line_at(py: Python<'_>, secs: u64) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &http_date::date_line_at(secs))
}

/// A whole HTTP/1.`minor` answer as sent, in one piece: `status_line`, the serialized `lines`,
/// the lines of `own` (the request's headers, as `header_lines` writes them), the server's
/// `extra` lines, a Content-Type when the body has none, its Content-Length, a Date line unless
/// `has_date`, the connection line `keep_alive` calls for, the blank line, and the body unless
/// `head_only`. ValueError when one of `own` holds a line break.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn whole_answer_bytes<'py>(
    status_line: &[u8],
    lines: &[u8],
    own: &Bound<'py, PyAny>,
    extra: &[u8],
    has_content_type: bool,
    has_date: bool,
    minor: u8,
    keep_alive: bool,
    body: &[u8],
    head_only: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out =
        Vec::with_capacity(status_line.len() + lines.len() + extra.len() + body.len() + 360);
    out.extend_from_slice(status_line);
    out.extend_from_slice(lines);
    push_lines(&mut out, own)?;
    out.extend_from_slice(extra);
    if !body.is_empty() && !has_content_type {
        out.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(digits.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !has_date {
        out.extend_from_slice(&http_date::date_line_now());
    }
    out.extend_from_slice(connection_line(minor, keep_alive));
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    Ok(PyBytes::new(own.py(), &out))
}

/// `Server: ` starts the server's `extra` lines with its own Server header: an answer that names
/// its own keeps that one instead.
const SERVER_PREFIX: &[u8] = b"Server: ";

/// Whole answers sent as one piece from their serialized head (`pygw.response.whole_bytes`
/// without a Python frame): an upstream's answer that came whole, a cache hit, a mock's.
#[pyclass(frozen, module = "pygw._native", name = "WholeAnswers")]
pub struct PyWholeAnswers {
    /// The reason phrase of each status, for an answer that brings none.
    reasons: HashMap<u16, String>,
}

#[pymethods]
impl PyWholeAnswers {
    #[new]
    fn new(reasons: HashMap<u16, String>) -> Self {
        Self { reasons }
    }

    /// The answer as sent over HTTP/1.`minor`, as `whole_bytes` makes it; None for a head with
    /// a Vary of its own (head[1]), which `whole_bytes` merges with a stage's. ValueError when
    /// one of `own` holds a line break.
    #[allow(clippy::too_many_arguments)]
    fn encode<'py>(
        &self,
        minor: u8,
        status: u16,
        reason: &[u8],
        head: &Bound<'py, PyTuple>,
        body: &[u8],
        own: &Bound<'py, PyAny>,
        keep_alive: bool,
        extra: &[u8],
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        if head.len() != 5 {
            return Err(PyValueError::new_err("head must be a 5-tuple"));
        }
        let minor = u8::from(minor == 1); // as HTTP_11 if minor == 1 else HTTP_10
        if !head.get_item(1)?.is_none() {
            return Ok(None);
        }
        let lines = head.get_item(0)?;
        let lines = lines.cast::<PyBytes>()?;
        let has_content_type = head.get_item(2)?.is_truthy()?;
        let has_server = head.get_item(3)?.is_truthy()?;
        let has_date = head.get_item(4)?.is_truthy()?;
        let extra = if has_server && extra.starts_with(SERVER_PREFIX) {
            memchr::memmem::find(extra, b"\r\n")
                .map_or(&extra[extra.len()..], |at| &extra[at + 2..])
        } else {
            extra
        };
        let reason = if reason.is_empty() {
            self.reasons
                .get(&status)
                .map_or(&b"Unknown"[..], |phrase| phrase.as_bytes())
        } else {
            reason
        };
        let mut digits = itoa::Buffer::new();
        let mut status_line = Vec::with_capacity(reason.len() + 17);
        status_line.extend_from_slice(b"HTTP/1.");
        status_line.extend_from_slice(digits.format(minor).as_bytes());
        status_line.push(b' ');
        status_line.extend_from_slice(digits.format(status).as_bytes());
        status_line.push(b' ');
        status_line.extend_from_slice(reason);
        status_line.extend_from_slice(b"\r\n");
        whole_answer_bytes(
            &status_line,
            lines.as_bytes(),
            own,
            extra,
            has_content_type,
            has_date,
            minor,
            keep_alive,
            body,
            false,
        )
        .map(Some)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyWholeAnswers>()?;
    m.add_function(wrap_pyfunction!(header_lines, m)?)?;
    m.add_function(wrap_pyfunction!(whole_answer_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(date_line, m)?)?;
    m.add_function(wrap_pyfunction!(date_line_at, m)?)
}
