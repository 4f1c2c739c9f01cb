//! PyO3 bindings: argument conversion and error mapping only. Each concern is one call
//! with plain arguments and a small result, because a crossing costs more than a lookup.

use pyo3::prelude::*;

mod cache;
mod head;
mod histogram;
mod lean_checks;
mod query;
mod request_head;
mod request_id;
mod router;
mod shared;
mod throttle;
mod trace_id;
mod upstream_head;
mod upstream_target;

#[pymodule(gil_used = false)]
#[pyo3(name = "_native")]
fn pygw_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    router::register(m)?;
    throttle::register(m)?;
    cache::register(m)?;
    shared::register(m)?;
    histogram::register(m)?;
    lean_checks::register(m)?;
    head::register(m)?;
    query::register(m)?;
    request_id::register(m)?;
    request_head::register(m)?;
    trace_id::register(m)?;
    upstream_head::register(m)?;
    upstream_target::register(m)?;
    Ok(())
}
