//! Bindings for the route trie and the path normaliser: conversion and error mapping only.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::path;
use crate::router::{self, RouterBuilder};

/// A compiled, immutable route table.
#[pyclass(frozen, module = "pygw._native")]
pub struct Router {
    inner: router::Router,
}

#[pymethods]
impl Router {
    /// `routes`: `(host or None, prefix, route_key, route_id)` tuples.
    #[new]
    fn new(routes: Vec<(Option<String>, String, String, u32)>) -> PyResult<Self> {
        let mut builder = RouterBuilder::new();
        for (host, prefix, key, id) in &routes {
            builder
                .add(host.as_deref(), prefix, key, *id)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        let inner = builder
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Self { inner })
    }

    /// `(route_id, params, path)` (params a dict of name to raw value) or `None`; `ValueError`
    /// on a path that must be refused.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        host: &str,
        method: &str,
        path: &str,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let found = self
            .inner
            .lookup_with(host, method, path, |m| {
                // A dict as the request context keeps them: no list of pairs to convert.
                let params = PyDict::new(py);
                for (name, value) in m.params {
                    params.set_item(name, value)?;
                }
                (m.route_id, params, m.path).into_pyobject(py)
            })
            .map_err(|e| PyValueError::new_err(format!("invalid path: {e}")))?;
        found.transpose()
    }

    fn precedence_order(&self) -> Vec<u32> {
        self.inner.precedence_order()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("<Router with {} routes>", self.inner.len())
    }
}

/// The one normalised reading of a request path (see `path::normalize`).
#[pyfunction]
fn normalize_path(path: &str) -> PyResult<String> {
    path::normalize(path).map_err(|e| PyValueError::new_err(format!("invalid path: {e}")))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Router>()?;
    m.add_function(wrap_pyfunction!(normalize_path, m)?)?;
    Ok(())
}
