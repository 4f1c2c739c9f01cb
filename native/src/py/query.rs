//! Bindings for `crate::query`: None wherever the Python fallback must decide (a query string
//! that needs decoding, or text that is not valid UTF-8, such as a lone surrogate).

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::query;

fn plain<'a>(raw: &'a Bound<'_, PyString>) -> Option<&'a str> {
    raw.to_str().ok().filter(|text| query::is_plain(text))
}

/// The cache key part of `names` (a tuple of str) in `raw`, or None (see the module).
#[pyfunction]
fn query_key_part(
    raw: &Bound<'_, PyString>,
    names: &Bound<'_, PyTuple>,
) -> PyResult<Option<String>> {
    let Some(raw) = plain(raw) else {
        return Ok(None);
    };
    let held: Vec<Bound<'_, PyString>> = names
        .iter()
        .map(|name| name.cast_into::<PyString>().map_err(PyErr::from))
        .collect::<PyResult<_>>()?;
    let mut texts = Vec::with_capacity(held.len());
    for name in &held {
        match name.to_str() {
            Ok(text) => texts.push(text),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(query::key_part(raw, &texts)))
}

/// Those of `names` (a tuple of str, in its order) that `raw` lacks, or None (see the module).
#[pyfunction]
fn query_missing<'py>(
    raw: &Bound<'_, PyString>,
    names: &Bound<'py, PyTuple>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(raw) = plain(raw) else {
        return Ok(None);
    };
    let mut missing = Vec::new();
    for name in names.iter() {
        let text = name.cast::<PyString>()?;
        let Ok(text) = text.to_str() else {
            return Ok(None);
        };
        if !query::has(raw, text) {
            missing.push(name);
        }
    }
    PyTuple::new(names.py(), missing).map(Some)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(query_key_part, m)?)?;
    m.add_function(wrap_pyfunction!(query_missing, m)?)
}
