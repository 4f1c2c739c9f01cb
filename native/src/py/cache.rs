//! Bindings for `crate::cache`: the cache holds the caller's Python objects and hands back the
//! very object on a hit. Values the cache lets go of are dropped only after the lock is released,
//! since dropping a Python object may run Python code that calls back into this cache.

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::cache::Cache;
use crate::throttle::monotonic_now;

fn clock(now: Option<f64>) -> PyResult<f64> {
    match now {
        None => Ok(monotonic_now()),
        Some(t) if t.is_finite() => Ok(t),
        Some(t) => Err(PyValueError::new_err(format!(
            "now must be finite, got {t}"
        ))),
    }
}

fn non_negative(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {v}")))
}

/// LRU response cache bounded by bytes (key bytes + the size given to `put`), with per-entry TTL.
#[pyclass(frozen, module = "pygw._native", name = "ResponseCache")]
pub struct PyResponseCache {
    inner: Mutex<Cache<Py<PyAny>>>,
}

#[pymethods]
impl PyResponseCache {
    #[new]
    fn new(capacity_bytes: i64) -> PyResult<Self> {
        Ok(Self {
            inner: Mutex::new(Cache::new(non_negative("capacity_bytes", capacity_bytes)?)),
        })
    }

    #[pyo3(signature = (key, now=None))]
    fn get(&self, py: Python<'_>, key: &str, now: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let now = clock(now)?;
        let mut dropped = Vec::new();
        let hit = self
            .inner
            .lock()
            .get_into(key, now, &mut dropped)
            .map(|v| v.clone_ref(py));
        drop(dropped);
        Ok(hit)
    }

    #[pyo3(signature = (key, value, size, ttl_s, now=None))]
    fn put(
        &self,
        key: &str,
        value: Py<PyAny>,
        size: i64,
        ttl_s: f64,
        now: Option<f64>,
    ) -> PyResult<bool> {
        let now = clock(now)?;
        let size = non_negative("size", size)?;
        let mut dropped = Vec::new();
        let stored = self
            .inner
            .lock()
            .insert_into(key, value, size, ttl_s, now, &mut dropped);
        drop(dropped);
        Ok(stored)
    }

    fn invalidate(&self, key: &str) -> bool {
        let removed = self.inner.lock().remove(key);
        removed.is_some()
    }

    fn clear(&self) {
        let mut dropped = Vec::new();
        self.inner.lock().clear_into(&mut dropped);
        drop(dropped);
    }

    /// (hits, misses, evictions, entries, bytes_used)
    fn stats(&self) -> (u64, u64, u64, usize, usize) {
        let s = self.inner.lock().stats();
        (s.hits, s.misses, s.evictions, s.entries, s.bytes)
    }

    fn __len__(&self) -> usize {
        self.inner.lock().len()
    }

    fn __repr__(&self) -> String {
        let c = self.inner.lock();
        format!(
            "ResponseCache(entries={}, bytes_used={}, capacity_bytes={})",
            c.len(),
            c.bytes_used(),
            c.capacity()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyResponseCache>()?;
    Ok(())
}
