//! Bindings for `crate::cache`: the cache holds the caller's Python objects and hands back the
//! very object on a hit. Values the cache lets go of are dropped only after the lock is released,
//! since dropping a Python object may run Python code that calls back into this cache.

use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::cache::Cache;
use crate::shared::host_monotonic_now;
use crate::stored_head;
use crate::throttle::monotonic_now;

/// What an entry is charged per stored header line (and once for its head) beyond the bytes
/// themselves: the objects that hold them.
const STORED_LINE_OVERHEAD: usize = 32;

/// The names in `names` as text, borrowed from the tuple's strings.
fn names_of<'py>(names: &Bound<'py, PyTuple>) -> PyResult<Vec<Bound<'py, PyString>>> {
    names
        .iter()
        .map(|name| Ok(name.cast_into::<PyString>()?))
        .collect()
}

fn stored<'py>(
    lines: &[u8],
    names: &[Bound<'py, PyString>],
) -> PyResult<Result<(Vec<u8>, usize), stored_head::NotStorable>> {
    let names = names
        .iter()
        .map(|name| name.to_str())
        .collect::<PyResult<Vec<&str>>>()?;
    Ok(stored_head::stored_lines(lines, &names))
}

/// `(lines, count)`: the header lines of `lines` (CRLF-terminated) that a cache entry keeps,
/// given the names of the headers the request's own stages set; None when the answer may not
/// be stored at all (Set-Cookie; Cache-Control no-store, private or no-cache).
#[pyfunction]
fn stored_lines<'py>(
    py: Python<'py>,
    lines: &[u8],
    own_names: &Bound<'py, PyTuple>,
) -> PyResult<Option<(Bound<'py, PyBytes>, usize)>> {
    let names = names_of(own_names)?;
    Ok(stored(lines, &names)?
        .ok()
        .map(|(kept, count)| (PyBytes::new(py, &kept), count)))
}

fn clock(now: Option<f64>) -> PyResult<f64> {
    match now {
        None => Ok(monotonic_now()),
        Some(t) if t.is_finite() => Ok(t),
        Some(t) => Err(PyValueError::new_err(format!(
            "now must be finite, got {t}"
        ))),
    }
}

/// Sets a hit's own headers in `own`: `X-Cache: Hit`, and `Age`, the whole seconds since
/// `stored_at` (on Python's `time.monotonic()` clock, which entries are stamped on); 0 for an
/// entry that seems to come from the future.
fn stamp_hit(own: &Bound<'_, PyDict>, stored_at: f64) -> PyResult<()> {
    let py = own.py();
    own.set_item(intern!(py, "X-Cache"), intern!(py, "Hit"))?;
    let age = host_monotonic_now() - stored_at;
    // `as` truncates toward zero and saturates, as the seconds a header can say must.
    let whole = if age > 0.0 { age as u64 } else { 0 };
    let mut digits = itoa::Buffer::new();
    own.set_item(intern!(py, "Age"), digits.format(whole))
}

/// `hit_headers(own, stored_at)`: the X-Cache and Age headers of an answer from the cache.
#[pyfunction]
fn hit_headers(own: &Bound<'_, PyDict>, stored_at: f64) -> PyResult<()> {
    stamp_hit(own, stored_at)
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

    /// `get`, for a GET answered from the cache when it can: an entry sent from its stored head
    /// (a 6-tuple whose item 4 is not None, as `keep_whole` makes) gets the hit's headers set in
    /// `own` (`hit_headers`). Anything else is returned as `get` returns it, `own` untouched.
    fn hit(
        &self,
        py: Python<'_>,
        key: &str,
        own: &Bound<'_, PyDict>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let found = self.get(py, key, None)?;
        if let Some(entry) = &found {
            if let Ok(entry) = entry.bind(py).cast::<PyTuple>() {
                if entry.len() == 6 && !entry.get_item(4)?.is_none() {
                    stamp_hit(own, entry.get_item(3)?.extract()?)?;
                }
            }
        }
        Ok(found)
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

    /// Stores a whole 200 answer to a GET whose upstream head has no Vary, as the entry
    /// `(200, (), body, stored_at, stored_head, own_names)`, and returns the entry; None (storing
    /// nothing) when the head forbids storing it. `head` is the answer's
    /// `(lines, None, has_content_type, has_server, has_date)`; the entry keeps the lines
    /// `stored_lines` keeps, and no Date. `stored_at` is the caller's time.monotonic() (the
    /// clock an entry's Age is read on).
    fn keep_whole<'py>(
        &self,
        key: &str,
        head: &Bound<'py, PyTuple>,
        body: &Bound<'py, PyBytes>,
        own_names: &Bound<'py, PyTuple>,
        ttl_s: f64,
        stored_at: f64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let py = head.py();
        if head.len() != 5 {
            return Err(PyValueError::new_err("head must be a 5-tuple"));
        }
        let lines = head.get_item(0)?.cast_into::<PyBytes>()?;
        if !head.get_item(1)?.is_none() {
            return Err(PyValueError::new_err(
                "keep_whole is for answers without Vary",
            ));
        }
        let (has_content_type, has_server) = (head.get_item(2)?, head.get_item(3)?);
        let names = names_of(own_names)?;
        let Ok((kept, count)) = stored(lines.as_bytes(), &names)? else {
            return Ok(None);
        };
        // Nothing filtered out (the usual head): the entry shares the answer's bytes.
        let kept_lines = if kept.len() == lines.as_bytes().len() {
            lines
        } else {
            PyBytes::new(py, &kept)
        };
        let size = body.as_bytes().len() + kept.len() + STORED_LINE_OVERHEAD * count;
        let stored_head = PyTuple::new(
            py,
            [
                kept_lines.into_any(),
                py.None().into_bound(py),
                has_content_type,
                has_server,
                false.into_pyobject(py)?.to_owned().into_any(),
            ],
        )?;
        let entry = PyTuple::new(
            py,
            [
                200u16.into_pyobject(py)?.into_any(),
                PyTuple::empty(py).into_any(),
                body.clone().into_any(),
                stored_at.into_pyobject(py)?.into_any(),
                stored_head.into_any(),
                own_names.clone().into_any(),
            ],
        )?;
        let now = monotonic_now();
        let mut dropped = Vec::new();
        self.inner.lock().insert_into(
            key,
            entry.clone().unbind().into_any(),
            size,
            ttl_s,
            now,
            &mut dropped,
        );
        drop(dropped);
        Ok(Some(entry))
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
    m.add_function(wrap_pyfunction!(stored_lines, m)?)?;
    m.add_function(wrap_pyfunction!(hit_headers, m)?)?;
    m.add("STORED_LINE_OVERHEAD", STORED_LINE_OVERHEAD)?;
    Ok(())
}
