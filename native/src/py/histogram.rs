//! Bindings for `crate::histogram`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyType;

use super::lean_checks::LeanCheck;
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

/// A pipeline's checks, called in order with the request context until one answers, each
/// timed into its own histogram, whether it passes, answers or raises. The same loop in Python
/// cost a frame, a tuple unpacking and a `lap` call per stage.
///
/// A check of a stage that waits only sometimes (a JWT authorizer whose token is not yet
/// verified) returns an instance of `later` instead of an answer: the rest of the request is
/// then `resume(ctx, index, later, started)`'s, which awaits it, records that stage's time from
/// `started` (a `monotonic()` reading) and goes on with the checks after `index`.
///
/// A check that is one of the native lean checks (`pygw._native.ApiKeyCheck` and its kin) is
/// run without a Python call.
#[pyclass(frozen, module = "pygw._native", name = "TimedChecks")]
pub struct PyTimedChecks {
    steps: Vec<(Step, Py<PyHistogram>)>,
    later: Py<PyType>,
    resume: Py<PyAny>,
}

enum Step {
    Python(Py<PyAny>),
    Native(LeanCheck),
}

#[pymethods]
impl PyTimedChecks {
    #[new]
    fn new(
        py: Python<'_>,
        checks: Vec<Py<PyAny>>,
        timers: Vec<Py<PyHistogram>>,
        later: Py<PyType>,
        resume: Py<PyAny>,
    ) -> PyResult<Self> {
        if checks.len() != timers.len() {
            return Err(PyValueError::new_err(format!(
                "{} checks but {} timers: each check needs its own",
                checks.len(),
                timers.len()
            )));
        }
        let steps = checks
            .into_iter()
            .map(|check| match LeanCheck::of(check.bind(py)) {
                Some(native) => Step::Native(native),
                None => Step::Python(check),
            })
            .zip(timers)
            .collect();
        Ok(Self {
            steps,
            later,
            resume,
        })
    }

    /// The first answer (not None) of a check, `resume`'s result for a check that waits, or
    /// None when every check let the request on. A check's exception propagates after its time
    /// is recorded.
    fn run(&self, py: Python<'_>, ctx: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let mut started = monotonic_now();
        for (index, (step, timer)) in self.steps.iter().enumerate() {
            let answered = match step {
                Step::Python(check) => check.bind(py).call1((ctx,)),
                Step::Native(check) => check.check(ctx).map(|()| py.None().into_bound(py)),
            };
            if let Ok(pending) = &answered {
                if !pending.is_none() && pending.is_instance(self.later.bind(py))? {
                    // Timed by `resume`, once the stage is done.
                    return Ok(self
                        .resume
                        .bind(py)
                        .call1((ctx, index, pending, started))?
                        .unbind());
                }
            }
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
