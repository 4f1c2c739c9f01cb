//! Bindings for `crate::throttle`: argument conversion, real clocks when none are given, and error
//! mapping (ValueError for bad values, IndexError for unknown ids).

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::throttle::{
    monotonic_now, unix_now as wall_clock_now, Decision, QuotaPeriod, Status, Throttle,
    ThrottleError,
};

/// What `acquire` returns: (status, retry_after_s, limit, remaining, reset_s, refused_by).
pub(crate) type DecisionTuple = (u8, f64, u32, u32, f64, Option<usize>);

pub(crate) fn decision_tuple(d: &Decision) -> DecisionTuple {
    (
        d.status as u8,
        d.retry_after_s,
        d.limit,
        d.remaining,
        d.reset_s,
        d.refused_by,
    )
}

/// The longest reset announced: a bucket that never refills has no meaningful reset time.
const MAX_RESET_S: i64 = 86_400;

/// Whole seconds, rounded up, within 0..=cap (a NaN or infinite time is the cap).
fn whole_seconds(seconds: f64, cap: i64) -> i64 {
    if (0.0..=cap as f64).contains(&seconds) {
        seconds.ceil() as i64
    } else if !seconds.is_finite() {
        cap
    } else {
        (seconds.ceil() as i64).clamp(0, cap)
    }
}

/// Writes the RateLimit-* headers of a decision's tightest bucket into `headers`, unless no
/// bucket was involved (all three figures 0). The one place these headers are formatted: the
/// native throttles call it, and the Redis backend's decisions through `rate_limit_headers`.
fn write_rate_limit_headers(
    headers: &Bound<'_, PyDict>,
    limit: u32,
    remaining: u32,
    reset_s: f64,
) -> PyResult<()> {
    if limit == 0 && remaining == 0 && reset_s == 0.0 {
        return Ok(());
    }
    let py = headers.py();
    let mut digits = itoa::Buffer::new();
    // Interned names: made and hashed once, not on every request.
    headers.set_item(intern!(py, "RateLimit-Limit"), digits.format(limit))?;
    headers.set_item(intern!(py, "RateLimit-Remaining"), digits.format(remaining))?;
    headers.set_item(
        intern!(py, "RateLimit-Reset"),
        digits.format(whole_seconds(reset_s, MAX_RESET_S)),
    )
}

/// `rate_limit_headers(headers, limit, remaining, reset_s)`: the RateLimit-* headers of a
/// decision made outside the native throttles (the Redis backend's).
#[pyfunction]
fn rate_limit_headers(
    headers: &Bound<'_, PyDict>,
    limit: u32,
    remaining: u32,
    reset_s: f64,
) -> PyResult<()> {
    write_rate_limit_headers(headers, limit, remaining, reset_s)
}

/// Writes a decision's RateLimit-* headers into `headers` and gives None when it granted the
/// request, the decision tuple when it refused, for the caller to count and answer (without
/// building and unpacking the tuple on the usual path).
pub(crate) fn decision_into(
    d: &Decision,
    headers: &Bound<'_, PyDict>,
) -> PyResult<Option<DecisionTuple>> {
    write_rate_limit_headers(headers, d.limit, d.remaining, d.reset_s)?;
    Ok(if d.status == Status::Granted {
        None
    } else {
        Some(decision_tuple(d))
    })
}

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

pub(crate) fn bucket_index(id: i64) -> PyResult<usize> {
    usize::try_from(id).map_err(|_| PyIndexError::new_err(format!("unknown bucket id {id}")))
}

pub(crate) fn quota_index(id: i64) -> PyResult<usize> {
    usize::try_from(id).map_err(|_| PyIndexError::new_err(format!("unknown quota id {id}")))
}

/// Token buckets and quotas; `acquire` decides one request against several of them at once.
#[pyclass(frozen, module = "pygw._native", name = "Throttle")]
pub struct PyThrottle {
    inner: Throttle,
}

impl PyThrottle {
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
            .map(bucket_index)
            .collect::<PyResult<Vec<usize>>>()?;
        self.decide_ids(&ids, quota_id.map(quota_index).transpose()?, now, unix_now)
    }

    /// `decide` for ids already checked.
    pub(crate) fn decide_ids(
        &self,
        ids: &[usize],
        quota: Option<usize>,
        now: Option<f64>,
        unix_now: Option<f64>,
    ) -> PyResult<Decision> {
        self.inner
            .acquire(
                ids,
                quota,
                now.unwrap_or_else(monotonic_now),
                unix_now.unwrap_or_else(wall_clock_now),
            )
            .map_err(to_py_err)
    }
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
        let d = self.decide(bucket_ids, quota_id, now, unix_now)?;
        Ok(decision_tuple(&d))
    }

    /// `acquire`, with the decision's RateLimit-* headers written into `headers`: None when the
    /// request is granted, else the decision tuple.
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
    m.add_function(wrap_pyfunction!(rate_limit_headers, m)?)?;
    Ok(())
}
