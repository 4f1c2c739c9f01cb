//! Bindings for `crate::histogram`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::histogram::Histogram;

/// One labelled histogram child: per-bucket counts (not cumulative) and the sum.
#[pyclass(frozen, module = "pygw._native", name = "Histogram")]
pub struct PyHistogram {
    inner: Histogram,
    #[pyo3(get)]
    created: f64,
}

#[pymethods]
impl PyHistogram {
    #[new]
    fn new(bounds: Vec<f64>, created: f64) -> PyResult<Self> {
        Ok(Self {
            inner: Histogram::new(bounds).map_err(PyValueError::new_err)?,
            created,
        })
    }

    fn observe(&self, value: f64) {
        self.inner.observe(value);
    }

    #[getter]
    fn bounds(&self) -> Vec<f64> {
        self.inner.bounds().to_vec()
    }

    #[getter]
    fn counts(&self) -> Vec<u64> {
        self.inner.counts()
    }

    #[getter]
    fn sum(&self) -> f64 {
        self.inner.sum()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHistogram>()
}
