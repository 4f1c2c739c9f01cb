//! Bindings for `crate::throttle`: argument conversion, real clocks when none are given, and error
//! mapping (ValueError for bad values, IndexError for unknown ids).

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;

use crate::throttle::{
    monotonic_now, unix_now as wall_clock_now, QuotaPeriod, Status, Throttle, ThrottleError,
};

fn to_py_err(e: ThrottleError) -> PyErr {
    match e {
        ThrottleError::UnknownBucket(_) | ThrottleError::UnknownQuota(_) => {
            PyIndexError::new_err(e.to_string())
        }
        ThrottleError::InvalidRate(_)
        | ThrottleError::InvalidPeriod(_)
        | ThrottleError::InvalidTime => PyValueError::new_err(e.to_string()),
    }
}

fn bucket_index(id: i64) -> PyResult<usize> {
    usize::try_from(id).map_err(|_| PyIndexError::new_err(format!("unknown bucket id {id}")))
}

/// Token buckets and quotas; `acquire` decides one request against several of them at once.
#[pyclass(frozen, module = "pygw._native", name = "Throttle")]
pub struct PyThrottle {
    inner: Throttle,
}

#[pymethods]
impl PyThrottle {
    #[new]
    fn new() -> Self {
        Self {
            inner: Throttle::new(),
        }
    }

    fn add_bucket(&self, rate: f64, burst: i64) -> PyResult<usize> {
        let burst = u32::try_from(burst).map_err(|_| {
            PyValueError::new_err(format!("burst must be in 0..={}, got {burst}", u32::MAX))
        })?;
        self.inner.add_bucket(rate, burst).map_err(to_py_err)
    }

    fn add_quota(&self, limit: i64, period: &str) -> PyResult<usize> {
        let limit = u64::try_from(limit)
            .map_err(|_| PyValueError::new_err(format!("limit must be >= 0, got {limit}")))?;
        let period: QuotaPeriod = period.parse().map_err(to_py_err)?;
        Ok(self.inner.add_quota(limit, period))
    }

    /// Returns (status, retry_after_s, limit, remaining, reset_s, refused_by).
    #[pyo3(signature = (bucket_ids, quota_id=None, now=None, unix_now=None))]
    fn acquire(
        &self,
        bucket_ids: Vec<i64>,
        quota_id: Option<i64>,
        now: Option<f64>,
        unix_now: Option<f64>,
    ) -> PyResult<(u8, f64, u32, u32, f64, Option<usize>)> {
        let ids = bucket_ids
            .into_iter()
            .map(bucket_index)
            .collect::<PyResult<Vec<usize>>>()?;
        let quota = quota_id
            .map(|q| {
                usize::try_from(q)
                    .map_err(|_| PyIndexError::new_err(format!("unknown quota id {q}")))
            })
            .transpose()?;
        let d = self
            .inner
            .acquire(
                &ids,
                quota,
                now.unwrap_or_else(monotonic_now),
                unix_now.unwrap_or_else(wall_clock_now),
            )
            .map_err(to_py_err)?;
        Ok((
            d.status as u8,
            d.retry_after_s,
            d.limit,
            d.remaining,
            d.reset_s,
            d.refused_by,
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "Throttle(buckets={}, quotas={})",
            self.inner.bucket_count(),
            self.inner.quota_count()
        )
    }
}

/// Seconds on the monotonic clock that `Throttle.acquire` and `ResponseCache` use when `now` is None.
#[pyfunction]
fn monotonic() -> f64 {
    monotonic_now()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyThrottle>()?;
    m.add("GRANTED", Status::Granted as u8)?;
    m.add("THROTTLED", Status::Throttled as u8)?;
    m.add("QUOTA_EXCEEDED", Status::QuotaExceeded as u8)?;
    m.add_function(wrap_pyfunction!(monotonic, m)?)?;
    Ok(())
}
