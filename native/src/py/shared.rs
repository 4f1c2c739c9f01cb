//! Bindings for `crate::shared`: the same `acquire` as `Throttle`'s, over buckets and quotas shared
//! by the worker processes of a host. ValueError for bad values and for a file made for another
//! table, OSError for file system failures, IndexError for unknown ids.

use std::path::PathBuf;

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::throttle::{decision_into, decision_tuple, DecisionTuple};
use crate::shared::{host_monotonic_now, SharedError, SharedThrottle};
use crate::throttle::{unix_now as wall_clock_now, Decision, QuotaPeriod, ThrottleError};

fn throttle_err(e: ThrottleError) -> PyErr {
    match e {
        ThrottleError::UnknownBucket(_) | ThrottleError::UnknownQuota(_) => {
            PyIndexError::new_err(e.to_string())
        }
        ThrottleError::InvalidRate(_)
        | ThrottleError::InvalidPeriod(_)
        | ThrottleError::InvalidTime => PyValueError::new_err(e.to_string()),
    }
}

fn shared_err(e: SharedError) -> PyErr {
    match e {
        SharedError::Config(m) | SharedError::Layout(m) => PyValueError::new_err(m),
        SharedError::Io(e) => e.into(),
    }
}

fn index(id: i64, what: &str) -> PyResult<usize> {
    usize::try_from(id).map_err(|_| PyIndexError::new_err(format!("unknown {what} id {id}")))
}

/// Token buckets and quotas in a file mapping shared by every worker process that opens the same
/// path with the same table; ids are indexes into `buckets` and `quotas`.
#[pyclass(frozen, module = "pygw._native", name = "SharedThrottle")]
pub struct PySharedThrottle {
    inner: SharedThrottle,
}

impl PySharedThrottle {
    /// One decision, with Python's ids checked and the real clocks where none are given.
    fn decide(
        &self,
        bucket_ids: Vec<i64>,
        quota_id: Option<i64>,
        now: Option<f64>,
        unix_now: Option<f64>,
    ) -> PyResult<Decision> {
        let ids = bucket_ids
            .into_iter()
            .map(|id| index(id, "bucket"))
            .collect::<PyResult<Vec<usize>>>()?;
        let quota = quota_id.map(|q| index(q, "quota")).transpose()?;
        self.inner
            .acquire(
                &ids,
                quota,
                now.unwrap_or_else(host_monotonic_now),
                unix_now.unwrap_or_else(wall_clock_now),
            )
            .map_err(throttle_err)
    }
}

#[pymethods]
impl PySharedThrottle {
    /// Creates the file at `path` (every bucket full) or attaches to it. `buckets` are
    /// (rate per second, burst), `quotas` are (limit, "DAY" | "WEEK" | "MONTH").
    #[new]
    #[pyo3(signature = (path, buckets, quotas=Vec::new()))]
    fn new(path: PathBuf, buckets: Vec<(f64, i64)>, quotas: Vec<(i64, String)>) -> PyResult<Self> {
        let buckets = buckets
            .into_iter()
            .map(|(rate, burst)| {
                u32::try_from(burst).map(|b| (rate, b)).map_err(|_| {
                    PyValueError::new_err(format!("burst must be in 0..={}, got {burst}", u32::MAX))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let quotas = quotas
            .into_iter()
            .map(|(limit, period)| {
                let limit = u64::try_from(limit).map_err(|_| {
                    PyValueError::new_err(format!("limit must be >= 0, got {limit}"))
                })?;
                let period: QuotaPeriod = period.parse().map_err(throttle_err)?;
                Ok((limit, period))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let inner = SharedThrottle::open(&path, &buckets, &quotas).map_err(shared_err)?;
        Ok(Self { inner })
    }

    /// Returns (status, retry_after_s, limit, remaining, reset_s, refused_by), like
    /// `Throttle.acquire`. `now` defaults to `host_monotonic()`, `unix_now` to the wall clock.
    #[pyo3(signature = (bucket_ids, quota_id=None, now=None, unix_now=None))]
    fn acquire(
        &self,
        bucket_ids: Vec<i64>,
        quota_id: Option<i64>,
        now: Option<f64>,
        unix_now: Option<f64>,
    ) -> PyResult<(u8, f64, u32, u32, f64, Option<usize>)> {
        let d = self.decide(bucket_ids, quota_id, now, unix_now)?;
        Ok(decision_tuple(&d))
    }

    /// `acquire`, with the decision's RateLimit-* headers written into `headers`: None when the
    /// request is granted, else the decision tuple (as `Throttle.acquire_into`).
    #[pyo3(signature = (bucket_ids, headers, quota_id=None, now=None, unix_now=None))]
    fn acquire_into(
        &self,
        bucket_ids: Vec<i64>,
        headers: &Bound<'_, PyDict>,
        quota_id: Option<i64>,
        now: Option<f64>,
        unix_now: Option<f64>,
    ) -> PyResult<Option<DecisionTuple>> {
        let d = self.decide(bucket_ids, quota_id, now, unix_now)?;
        decision_into(&d, headers)
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    /// The hash of the bucket/quota table that every process sharing the file must agree on.
    #[getter]
    fn layout(&self) -> u64 {
        self.inner.layout()
    }

    #[getter]
    fn bucket_count(&self) -> usize {
        self.inner.bucket_count()
    }

    #[getter]
    fn quota_count(&self) -> usize {
        self.inner.quota_count()
    }

    fn __repr__(&self) -> String {
        format!(
            "SharedThrottle({:?}, buckets={}, quotas={}, layout={:016x})",
            self.inner.path().display().to_string(),
            self.inner.bucket_count(),
            self.inner.quota_count(),
            self.inner.layout()
        )
    }
}

/// Seconds on the host-wide monotonic clock that `SharedThrottle.acquire` uses when `now` is None
/// (on Linux the same clock as `time.monotonic()`).
#[pyfunction]
fn host_monotonic() -> f64 {
    host_monotonic_now()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySharedThrottle>()?;
    m.add_function(wrap_pyfunction!(host_monotonic, m)?)?;
    Ok(())
}
