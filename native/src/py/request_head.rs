//! Bindings for `crate::request_head`.

use std::borrow::Cow;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::request_head::{self, Added, Trace};

pub(crate) type Pair<'py> = (Bound<'py, PyBytes>, Bound<'py, PyBytes>);

/// The `(name, value)` bytes pairs of `headers`: aiohttp's `raw_headers` tuple, or any iterable
/// of such pairs. TypeError for anything else.
pub(crate) fn pairs<'py>(headers: &Bound<'py, PyAny>) -> PyResult<Vec<Pair<'py>>> {
    let mut found = Vec::with_capacity(16);
    if let Ok(tuple) = headers.cast::<PyTuple>() {
        for item in tuple.iter() {
            found.push(item.extract::<Pair<'py>>()?);
        }
    } else {
        for item in headers.try_iter()? {
            found.push(item?.extract::<Pair<'py>>()?);
        }
    }
    Ok(found)
}

/// `text.encode("ascii", "replace")`: a request id or address is ASCII, and a header line must
/// never carry anything else.
fn ascii(text: &str) -> Cow<'_, [u8]> {
    if text.is_ascii() {
        Cow::Borrowed(text.as_bytes())
    } else {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect(),
        )
    }
}

/// `(head, body_mode)`: the client's headers as forwarded upstream (hop-by-hop ones, those the
/// Connection header names and those written here left out), then X-Forwarded-For/-Proto/-Host,
/// x-request-id and the body framing, through the blank line that ends the head. body_mode is
/// 0 no body, 1 the client's, framed by its Content-Length, 2 the client's, chunked, 3
/// `body_len` bytes a stage holds (sent with `content_type` when given). With `trace_id` and
/// `span_id`, the client's traceparent and X-Amzn-Trace-Id are replaced by that trace, with
/// `span_id` as the parent.
#[pyfunction]
#[pyo3(signature = (
    headers, client_ip, https, request_id, body_len=None, content_type=None,
    trace_id=None, span_id=None, sampled=false,
))]
#[allow(clippy::too_many_arguments)]
fn request_head_tail<'py>(
    headers: &Bound<'py, PyAny>,
    client_ip: &str,
    https: bool,
    request_id: &str,
    body_len: Option<usize>,
    content_type: Option<&[u8]>,
    trace_id: Option<&str>,
    span_id: Option<&str>,
    sampled: bool,
) -> PyResult<(Bound<'py, PyBytes>, u8)> {
    let pairs = pairs(headers)?;
    let slices: Vec<(&[u8], &[u8])> = pairs
        .iter()
        .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
        .collect();
    let client_ip = ascii(client_ip);
    let request_id = ascii(request_id);
    let trace_id = trace_id.map(ascii);
    let span_id = span_id.map(ascii);
    let trace = match (&trace_id, &span_id) {
        (Some(trace_id), Some(span_id)) => Some(Trace {
            trace_id,
            span_id,
            sampled,
        }),
        _ => None,
    };
    let added = Added {
        client_ip: &client_ip,
        https,
        request_id: &request_id,
        body_len,
        content_type,
        trace,
    };
    let (out, body_mode) = request_head::request_head_tail(&slices, &added);
    Ok((PyBytes::new(headers.py(), &out), body_mode))
}

/// The size of a request's header block as the header limit counts it: the names and values with
/// four bytes per line for `: ` and the line end.
#[pyfunction]
fn header_block_size(headers: &Bound<'_, PyAny>) -> PyResult<usize> {
    let pairs = pairs(headers)?;
    Ok(pairs
        .iter()
        .map(|(name, value)| name.as_bytes().len() + value.as_bytes().len() + 4)
        .sum())
}

/// What `simple_request` hands Python.
type Simple<'py> = (
    Bound<'py, PyString>,
    Bound<'py, PyString>,
    u8,
    Bound<'py, PyTuple>,
    Bound<'py, PyBytes>,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
    bool,
);

/// The method's name as one shared string per method: a request's method is compared and used
/// as a key all along its way, and a new string for every request costs its allocation.
fn method_name<'py>(py: Python<'py>, method: &str) -> Bound<'py, PyString> {
    let shared = match method {
        "GET" => intern!(py, "GET"),
        "HEAD" => intern!(py, "HEAD"),
        "POST" => intern!(py, "POST"),
        "PUT" => intern!(py, "PUT"),
        "DELETE" => intern!(py, "DELETE"),
        "OPTIONS" => intern!(py, "OPTIONS"),
        "PATCH" => intern!(py, "PATCH"),
        _ => return PyString::new(py, method),
    };
    shared.clone()
}

/// `(method, target, minor, headers, host, request_id, traceparent, amzn_trace, keep_alive)` of
/// a whole bodiless request of the plainest shape that `data` holds alone; None for anything
/// else, which the callback parser then reads (see `crate::simple_request`).
#[pyfunction]
fn simple_request<'py>(
    data: &Bound<'py, PyBytes>,
    max_header_bytes: usize,
    max_header_count: usize,
    allow_underscores: bool,
    trusted_peer: bool,
) -> PyResult<Option<Simple<'py>>> {
    let py = data.py();
    let rules = crate::simple_request::Rules {
        max_header_bytes,
        max_header_count,
        allow_underscores,
        trusted_peer,
    };
    let Some(found) = crate::simple_request::simple_request(data.as_bytes(), &rules) else {
        return Ok(None);
    };
    let headers = found
        .headers
        .iter()
        .map(|&(name, value)| PyTuple::new(py, [PyBytes::new(py, name), PyBytes::new(py, value)]))
        .collect::<PyResult<Vec<_>>>()?;
    let bytes = |value: Option<&[u8]>| value.map(|v| PyBytes::new(py, v));
    // The gate took only visible ASCII in the target.
    let target = std::str::from_utf8(found.target)
        .map_err(|_| PyValueError::new_err("a request target must be ASCII"))?;
    Ok(Some((
        method_name(py, found.method),
        PyString::new(py, target),
        found.minor,
        PyTuple::new(py, headers)?,
        PyBytes::new(py, found.host),
        bytes(found.request_id),
        bytes(found.traceparent),
        bytes(found.amzn_trace),
        found.keep_alive,
    )))
}

/// The first value of the header `lower_name` (given lower-cased) in `headers`, a request's
/// `raw_headers` tuple of `(name, value)` bytes pairs, or None: `Request.header` in one call.
#[pyfunction]
pub(crate) fn header_value<'py>(
    headers: &Bound<'py, PyTuple>,
    lower_name: &[u8],
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    for item in headers.iter() {
        let (name, value) = item.extract::<Pair<'py>>()?;
        if request_head::is_named(name.as_bytes(), lower_name) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(header_value, m)?)?;
    m.add_function(wrap_pyfunction!(request_head_tail, m)?)?;
    m.add_function(wrap_pyfunction!(simple_request, m)?)?;
    m.add_function(wrap_pyfunction!(header_block_size, m)?)
}
