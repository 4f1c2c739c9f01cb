//! The lean checks of the stages that check a request from its parsed parts (`check_lean` on a
//! `pygw.pipeline.LeanView`), each in one native step for the usual request: a remembered API
//! key, a key in a usage plan that the buckets let through, every parameter present. Anything
//! else (a key not verified yet, a refusal's message, a query string not seen lately) is left to
//! the stage's own Python `check_lean`, handed over as `fallback`, which decides it exactly as
//! the full way does. Through `TimedChecks` a route's stages then cost no Python frame at all.

use pyo3::intern;
use pyo3::prelude::*;
use std::collections::HashMap;

use foldhash::fast::RandomState;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::request_head::header_value;
use super::throttle::{bucket_index, decision_into, quota_index, PyThrottle};
use crate::query;

/// A native lean check, as `TimedChecks` calls it without a Python call.
pub(crate) enum LeanCheck {
    ApiKey(Py<PyApiKeyCheck>),
    KeyedThrottle(Py<PyKeyedThrottleCheck>),
    Params(Py<PyParamsCheck>),
}

impl LeanCheck {
    /// The native check `check` is, if it is one.
    pub(crate) fn of(check: &Bound<'_, PyAny>) -> Option<Self> {
        if let Ok(found) = check.cast::<PyApiKeyCheck>() {
            return Some(Self::ApiKey(found.clone().unbind()));
        }
        if let Ok(found) = check.cast::<PyKeyedThrottleCheck>() {
            return Some(Self::KeyedThrottle(found.clone().unbind()));
        }
        check
            .cast::<PyParamsCheck>()
            .ok()
            .map(|found| Self::Params(found.clone().unbind()))
    }

    pub(crate) fn check(&self, lean: &Bound<'_, PyAny>) -> PyResult<()> {
        match self {
            Self::ApiKey(check) => check.get().check(lean),
            Self::KeyedThrottle(check) => check.get().check(lean),
            Self::Params(check) => check.get().check(lean),
        }
    }
}

fn fall_back(fallback: &Py<PyAny>, lean: &Bound<'_, PyAny>) -> PyResult<()> {
    fallback.bind(lean.py()).call1((lean,)).map(drop)
}

/// The API key stage's check: the key sent in `header` (lower-cased) among the values already
/// verified (`verified`, the stage's own dict of raw value -> key id) sets `lean.api_key_id`.
#[pyclass(frozen, module = "pygw._native", name = "ApiKeyCheck")]
pub struct PyApiKeyCheck {
    header: Vec<u8>,
    verified: Py<PyDict>,
    fallback: Py<PyAny>,
}

impl PyApiKeyCheck {
    fn check(&self, lean: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = lean.py();
        let headers = lean.getattr(intern!(py, "raw_headers"))?;
        if let Some(value) = header_value(headers.cast::<PyTuple>()?, &self.header)? {
            if !value.as_bytes().is_empty() {
                if let Some(key_id) = self.verified.bind(py).get_item(&value)? {
                    return lean.setattr(intern!(py, "api_key_id"), key_id);
                }
            }
        }
        fall_back(&self.fallback, lean)
    }
}

#[pymethods]
impl PyApiKeyCheck {
    #[new]
    fn new(header: Vec<u8>, verified: Py<PyDict>, fallback: Py<PyAny>) -> Self {
        Self {
            header,
            verified,
            fallback,
        }
    }

    fn __call__(&self, lean: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check(lean)
    }
}

/// What a key in a plan takes from the throttle, resolved once from the stage's `by_key`.
struct KeyPlan {
    bucket_ids: Vec<usize>,
    quota_id: Option<usize>,
    /// Where a refusal is counted, handed to `refuse`.
    refusals: Py<PyAny>,
}

/// The usage-plan throttle's check for a key in a plan: `by_key` (the stage's dict of key id ->
/// (bucket ids, quota id or None, refusals)), read once when the check is made, gives what to
/// take from `throttle`, whose RateLimit-* headers go into `lean.response_headers`; a refusal
/// is raised by `refuse(decision, refusals)`.
#[pyclass(frozen, module = "pygw._native", name = "KeyedThrottleCheck")]
pub struct PyKeyedThrottleCheck {
    throttle: Py<PyThrottle>,
    // Key ids are the configuration's, never a request's: the hasher need not resist flooding,
    // but it is seeded all the same, as everywhere else in the core.
    plans: HashMap<String, KeyPlan, RandomState>,
    refuse: Py<PyAny>,
    fallback: Py<PyAny>,
}

impl PyKeyedThrottleCheck {
    fn check(&self, lean: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = lean.py();
        let key_id = lean.getattr(intern!(py, "api_key_id"))?;
        let Ok(key_id) = key_id.cast::<PyString>() else {
            return fall_back(&self.fallback, lean); // None: no key (or not a key id at all)
        };
        let Some(plan) = self.plans.get(key_id.to_str()?) else {
            return fall_back(&self.fallback, lean);
        };
        let headers = lean.getattr(intern!(py, "response_headers"))?;
        let decision =
            self.throttle
                .get()
                .decide_ids(&plan.bucket_ids, plan.quota_id, None, None)?;
        match decision_into(&decision, headers.cast::<PyDict>()?)? {
            None => Ok(()),
            Some(refused) => self
                .refuse
                .bind(py)
                .call1((refused, plan.refusals.bind(py)))
                .map(drop),
        }
    }
}

#[pymethods]
impl PyKeyedThrottleCheck {
    #[new]
    fn new(
        throttle: Py<PyThrottle>,
        by_key: &Bound<'_, PyDict>,
        refuse: Py<PyAny>,
        fallback: Py<PyAny>,
    ) -> PyResult<Self> {
        let mut plans = HashMap::with_hasher(RandomState::default());
        for (key_id, found) in by_key.iter() {
            let (bucket_ids, quota_id, refusals): (Vec<i64>, Option<i64>, Py<PyAny>) =
                found.extract()?;
            let plan = KeyPlan {
                bucket_ids: bucket_ids
                    .into_iter()
                    .map(bucket_index)
                    .collect::<PyResult<_>>()?,
                quota_id: quota_id.map(quota_index).transpose()?,
                refusals,
            };
            plans.insert(key_id.extract::<String>()?, plan);
        }
        Ok(Self {
            throttle,
            plans,
            refuse,
            fallback,
        })
    }

    fn __call__(&self, lean: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check(lean)
    }
}

/// Parameter validation's check: each of `headers` (lower-cased names) sent, each of `path`
/// a non-empty path parameter, and each of `query` in a query string with nothing to decode
/// (one that has, Python's percent-decoding decides).
#[pyclass(frozen, module = "pygw._native", name = "ParamsCheck")]
pub struct PyParamsCheck {
    headers: Vec<Vec<u8>>,
    path: Vec<Py<PyString>>,
    query: Vec<String>,
    fallback: Py<PyAny>,
}

impl PyParamsCheck {
    fn all_present(&self, lean: &Bound<'_, PyAny>) -> PyResult<bool> {
        let py = lean.py();
        if !self.headers.is_empty() {
            let raw_headers = lean.getattr(intern!(py, "raw_headers"))?;
            let raw_headers = raw_headers.cast::<PyTuple>()?;
            for name in &self.headers {
                if header_value(raw_headers, name)?.is_none() {
                    return Ok(false);
                }
            }
        }
        if !self.path.is_empty() {
            let params = lean.getattr(intern!(py, "params"))?;
            let params = params.cast::<PyDict>()?;
            for name in &self.path {
                match params.get_item(name.bind(py))? {
                    Some(value) if value.is_truthy()? => {}
                    _ => return Ok(false),
                }
            }
        }
        if !self.query.is_empty() {
            let raw_query = lean.getattr(intern!(py, "raw_query"))?;
            let Ok(raw_query) = raw_query.cast::<PyString>()?.to_str() else {
                return Ok(false);
            };
            if !query::is_plain(raw_query) {
                return Ok(false);
            }
            if !self.query.iter().all(|name| query::has(raw_query, name)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn check(&self, lean: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.all_present(lean)? {
            return Ok(());
        }
        fall_back(&self.fallback, lean)
    }
}

#[pymethods]
impl PyParamsCheck {
    #[new]
    fn new(
        headers: Vec<Vec<u8>>,
        path: Vec<Py<PyString>>,
        query: Vec<String>,
        fallback: Py<PyAny>,
    ) -> Self {
        Self {
            headers,
            path,
            query,
            fallback,
        }
    }

    fn __call__(&self, lean: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check(lean)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyApiKeyCheck>()?;
    m.add_class::<PyKeyedThrottleCheck>()?;
    m.add_class::<PyParamsCheck>()
}
