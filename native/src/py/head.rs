//! Bindings for `crate::head`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::head::push_header_line;

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

/// `Name: value\r\n` for every item of `headers` (a dict, or any mapping with `items()`), in
/// order, as one bytes object. ValueError when a name or value holds CR or LF.
#[pyfunction]
fn header_lines<'py>(headers: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(256);
    if let Ok(dict) = headers.cast::<PyDict>() {
        for (name, value) in dict.iter() {
            push_pair(&mut out, &name, &value)?;
        }
    } else {
        for item in headers.call_method0("items")?.try_iter()? {
            let (name, value): (Bound<'py, PyAny>, Bound<'py, PyAny>) = item?.extract()?;
            push_pair(&mut out, &name, &value)?;
        }
    }
    Ok(PyBytes::new(headers.py(), &out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(header_lines, m)?)
}
