//! Bindings for `crate::trace_id`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::trace_id::{format_trace, wyrand, STEP};

/// The process's trace id source: `next()` is a new (trace id, span id) pair, `reseed()` gives a
/// forked child a sequence of its own.
#[pyclass(frozen, module = "pygw._native", name = "TraceIds")]
pub struct PyTraceIds {
    state: AtomicU64,
}

impl PyTraceIds {
    fn draw(&self) -> u64 {
        wyrand(
            self.state
                .fetch_add(STEP, Ordering::Relaxed)
                .wrapping_add(STEP),
        )
    }
}

#[pymethods]
impl PyTraceIds {
    #[new]
    fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    fn next<'py>(&self, py: Python<'py>) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
        // A clock before 1970 or past 2106 writes a zero or wrapped prefix: still a valid id.
        let epoch_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as u32);
        let (trace, span) = format_trace(epoch_s, self.draw(), self.draw(), self.draw());
        // Hex digits only, so both are ASCII.
        let trace = std::str::from_utf8(&trace).unwrap_or_default();
        let span = std::str::from_utf8(&span).unwrap_or_default();
        (PyString::new(py, trace), PyString::new(py, span))
    }

    fn reseed(&self, seed: u64) {
        self.state.store(seed, Ordering::Relaxed);
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTraceIds>()
}
