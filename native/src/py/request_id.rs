//! Bindings for `crate::request_id`.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::request_id::{format_id, parse_prefix, PREFIX_LEN};

/// The process's request id source: `next()` is one id, `reseed()` gives a forked child a
/// prefix and a sequence of its own.
#[pyclass(frozen, module = "pygw._native", name = "RequestIds")]
pub struct PyRequestIds {
    prefix: RwLock<[u8; PREFIX_LEN]>,
    sequence: AtomicU64,
}

#[pymethods]
impl PyRequestIds {
    #[new]
    fn new(prefix: &str, start: u64) -> PyResult<Self> {
        Ok(Self {
            prefix: RwLock::new(parse_prefix(prefix).map_err(PyValueError::new_err)?),
            sequence: AtomicU64::new(start),
        })
    }

    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let id = format_id(&self.prefix.read(), sequence);
        // Always ASCII (a checked prefix and hex digits); the check is 36 bytes.
        let text = std::str::from_utf8(&id).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyString::new(py, text))
    }

    fn reseed(&self, prefix: &str, start: u64) -> PyResult<()> {
        let prefix = parse_prefix(prefix).map_err(PyValueError::new_err)?;
        *self.prefix.write() = prefix;
        self.sequence.store(start, Ordering::Relaxed);
        Ok(())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRequestIds>()
}
