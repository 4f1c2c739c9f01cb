//! Bindings for `crate::upstream_target`.

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::upstream_target::TargetTemplate;

/// An `http_proxy` integration's URI template, rendered into the target it sends upstream.
#[pyclass(frozen, module = "pygw._native", name = "TargetTemplate")]
pub struct PyTargetTemplate {
    inner: TargetTemplate,
    /// The placeholders' names as Python strings, made once for the parameter lookups.
    keys: Vec<Py<PyString>>,
}

#[pymethods]
impl PyTargetTemplate {
    #[new]
    fn new(
        py: Python<'_>,
        literals: Vec<String>,
        names: Vec<String>,
        param_tail: bool,
        template_query: bool,
    ) -> PyResult<Self> {
        let inner = TargetTemplate::new(literals, names, param_tail, template_query)
            .ok_or_else(|| PyValueError::new_err("a template needs one more literal than names"))?;
        let keys = inner
            .names()
            .iter()
            .map(|name| PyString::new(py, name).unbind())
            .collect();
        Ok(Self { inner, keys })
    }

    /// The target for a request with path parameters `params`, path `path` (below the stage)
    /// and raw target `raw_target`; None when one of them is not valid UTF-8 text (such a
    /// request is rendered in Python). KeyError naming a parameter `params` lacks.
    fn render<'py>(
        &self,
        params: &Bound<'py, PyDict>,
        path: &Bound<'py, PyString>,
        raw_target: &Bound<'py, PyString>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let py = params.py();
        let mut values: Vec<Option<Bound<'py, PyString>>> = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            match params.get_item(key.bind(py))? {
                None => values.push(None),
                Some(value) => match value.cast_into::<PyString>() {
                    Ok(text) => values.push(Some(text)),
                    Err(_) => return Ok(None),
                },
            }
        }
        let mut texts: Vec<Option<&str>> = Vec::with_capacity(values.len());
        for value in &values {
            match value {
                None => texts.push(None),
                Some(text) => match text.to_str() {
                    Ok(text) => texts.push(Some(text)),
                    Err(_) => return Ok(None),
                },
            }
        }
        let (Ok(path), Ok(raw_target)) = (path.to_str(), raw_target.to_str()) else {
            return Ok(None);
        };
        match self.inner.render(
            |index| texts.get(index).copied().flatten(),
            path,
            raw_target,
        ) {
            Ok(target) => Ok(Some(PyBytes::new(py, &target))),
            Err(missing) => Err(PyKeyError::new_err(missing.0)),
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTargetTemplate>()
}
