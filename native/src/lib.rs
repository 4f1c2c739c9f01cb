//! pygw's hot path. The modules below are plain Rust with plain Rust tests; only the
//! `py` bindings (behind the `python` feature, enabled by maturin) know about Python.

pub mod cache;
pub mod head;
pub mod histogram;
pub mod hop;
pub mod http_date;
pub mod path;
pub mod query;
pub mod request_head;
pub mod request_id;
pub mod router;
pub mod shared;
pub mod simple_request;
pub mod stored_head;
pub mod throttle;
pub mod trace_id;
pub mod upstream_head;
pub mod upstream_target;
pub mod whole_answer;

#[cfg(feature = "python")]
mod py;
