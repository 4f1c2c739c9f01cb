//! Bindings for `crate::histogram`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::histogram::Histogram;
use crate::throttle::monotonic_now;

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

    /// Records the time since `started` (seconds on `monotonic()`) and returns the time now:
    /// one call per timed step, the end of one step being the start of the next.
    fn lap(&self, started: f64) -> f64 {
        let now = monotonic_now();
        self.inner.observe(now - started);
        now
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

/// A route's three per-request histograms, updated in one call: latency, integration latency
/// and the gateway's own share (latency minus integration latency, never below 0).
#[pyclass(frozen, module = "pygw._native", name = "RequestTimings")]
pub struct PyRequestTimings {
    latency: Py<PyHistogram>,
    integration: Py<PyHistogram>,
    overhead: Py<PyHistogram>,
}

#[pymethods]
impl PyRequestTimings {
    #[new]
    fn new(
        latency: Py<PyHistogram>,
        integration: Py<PyHistogram>,
        overhead: Py<PyHistogram>,
    ) -> Self {
        Self {
            latency,
            integration,
            overhead,
        }
    }

    fn observe(&self, latency_s: f64, integration_s: f64) {
        self.latency.get().inner.observe(latency_s);
        self.integration.get().inner.observe(integration_s);
        let overhead_s = latency_s - integration_s;
        // NaN compares false: it is recorded as 0, like a negative difference.
        self.overhead
            .get()
            .inner
            .observe(if overhead_s > 0.0 { overhead_s } else { 0.0 });
    }
}

/// A pipeline's checks (stages that never wait), called in order with the request context until
/// one answers, each timed into its own histogram, whether it passes, answers or raises. The
/// same loop in Python cost a frame, a tuple unpacking and a `lap` call per stage.
#[pyclass(frozen, module = "pygw._native", name = "TimedChecks")]
pub struct PyTimedChecks {
    steps: Vec<(Py<PyAny>, Py<PyHistogram>)>,
}

#[pymethods]
impl PyTimedChecks {
    #[new]
    fn new(checks: Vec<Py<PyAny>>, timers: Vec<Py<PyHistogram>>) -> PyResult<Self> {
        if checks.len() != timers.len() {
            return Err(PyValueError::new_err(format!(
                "{} checks but {} timers: each check needs its own",
                checks.len(),
                timers.len()
            )));
        }
        Ok(Self {
            steps: checks.into_iter().zip(timers).collect(),
        })
    }

    /// The first answer (not None) of a check, or None when every check let the request on.
    /// A check's exception propagates after its time is recorded.
    fn run(&self, py: Python<'_>, ctx: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let mut started = monotonic_now();
        for (check, timer) in &self.steps {
            let answered = check.bind(py).call1((ctx,));
            let now = monotonic_now();
            timer.get().inner.observe(now - started);
            started = now;
            let answered = answered?;
            if !answered.is_none() {
                return Ok(answered.unbind());
            }
        }
        Ok(py.None())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyHistogram>()?;
    m.add_class::<PyRequestTimings>()?;
    m.add_class::<PyTimedChecks>()
}
