//! Request path normalisation, shared by the router, throttle keys and cache keys.
//!
//! One reading of a path for everything: the gateway must authorise, route, count and cache
//! exactly the path the upstream receives (Envoy CVE-2019-9901 and APISIX CVE-2021-43557 were
//! bypasses born of two readings). So percent-encoding is never decoded here, since a decoded
//! `%2F` would become a separator that the upstream does not see; only dot segments, including
//! their encoded spellings that an upstream may decode, are resolved, clamped at the root.

use std::borrow::Cow;
use std::fmt;

/// Why a raw request path was refused (the caller answers 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/` (an absolute-form or asterisk-form target, or garbage).
    NotAbsolute,
    /// A control character (NUL, CR, LF, DEL, C1 controls...) at this byte offset.
    ControlCharacter { offset: usize },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotAbsolute => f.write_str("path must start with '/'"),
            PathError::ControlCharacter { offset } => {
                write!(f, "path contains a control character at byte {offset}")
            }
        }
    }
}

impl std::error::Error for PathError {}

/// Normalises a raw request path (without its query string).
///
/// - an empty path becomes `/`; a path not starting with `/` or holding a control character is
///   an error;
/// - a leading run of slashes collapses to one;
/// - dot segments (`.`, `..`, and their percent-encoded spellings such as `%2e` or `.%2E`) are
///   removed as in RFC 3986 section 5.2.4, clamped at the root;
/// - everything else is kept byte for byte: percent-encoding, inner double slashes, a trailing
///   slash.
///
/// The result is idempotent: `normalize(&normalize(p)?)? == normalize(p)?`.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    normalize_cow(raw).map(Cow::into_owned)
}

/// [`normalize`] without an allocation when the path is already normal (the common case).
pub fn normalize_cow(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut maybe_dots = false;
    for (offset, b) in raw.bytes().enumerate() {
        match b {
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter { offset }),
            b'.' | b'%' => maybe_dots = true,
            0x80.. => {
                // C1 controls are multi-byte in UTF-8: check by character from here on.
                if let Some(offset) = control_char_offset(raw) {
                    return Err(PathError::ControlCharacter { offset });
                }
                maybe_dots = true;
                break;
            }
            _ => {}
        }
    }
    let body = raw.trim_start_matches('/');
    if !maybe_dots || !body.split('/').any(|s| dot_count(s).is_some()) {
        // `body` is a suffix of `raw` and a slash precedes it, so this slice keeps exactly one.
        let start = raw.len() - body.len() - 1;
        return Ok(Cow::Borrowed(raw.get(start..).unwrap_or("/")));
    }
    Ok(Cow::Owned(remove_dot_segments(body)))
}

fn control_char_offset(raw: &str) -> Option<usize> {
    raw.char_indices()
        .find(|(_, c)| c.is_control())
        .map(|(i, _)| i)
}

/// `Some(1)` for a `.` segment, `Some(2)` for `..`, counting `%2e`/`%2E` as a dot, else `None`.
fn dot_count(seg: &str) -> Option<usize> {
    let b = seg.as_bytes();
    let mut i = 0;
    let mut dots = 0;
    while i < b.len() {
        if b[i] == b'.' {
            i += 1;
        } else if b[i] == b'%'
            && b.get(i + 1) == Some(&b'2')
            && b.get(i + 2).map(|c| c | 0x20) == Some(b'e')
        {
            i += 3;
        } else {
            return None;
        }
        dots += 1;
        if dots > 2 {
            return None;
        }
    }
    (dots > 0).then_some(dots)
}

/// `true` when a segment is `.` or `..` in any spelling an upstream might decode to one.
pub fn is_dot_segment(seg: &str) -> bool {
    dot_count(seg).is_some()
}

/// RFC 3986 5.2.4 on segments; `body` is the path after its leading slashes.
fn remove_dot_segments(body: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut segs = body.split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match dot_count(seg) {
            Some(dots) => {
                if dots == 2 {
                    out.pop();
                }
                // A dot segment at the end leaves the path ending in a slash, as in the RFC:
                // `/a/b/..` -> `/a/`.
                if last {
                    out.push("");
                }
            }
            None => out.push(seg),
        }
    }
    // Removing `a/..` from `/a/..//b` would leave `//b`; collapse it again so that the result
    // is a fixed point of `normalize`.
    let leading_empty = out.iter().take_while(|s| s.is_empty()).count();
    let keep_from = leading_empty.min(out.len().saturating_sub(1));
    let kept = out.get(keep_from..).unwrap_or(&[]);
    let mut result = String::with_capacity(body.len() + 1);
    result.push('/');
    result.push_str(&kept.join("/"));
    result
}

/// All segments of a normalised path, in order: `/a//b/` gives `a`, ``, `b`, ``; `/` gives ``.
pub fn segments(normalized: &str) -> std::str::Split<'_, char> {
    normalized
        .strip_prefix('/')
        .unwrap_or(normalized)
        .split('/')
}

/// The segments a route is matched against: [`segments`] without the trailing empty ones, so
/// that a trailing slash (or a run of them) is ignored. `/` gives no segment at all; inner empty
/// segments (double slashes) are kept.
pub fn match_segments(normalized: &str) -> Vec<&str> {
    let trimmed = normalized.trim_end_matches('/');
    if trimmed.is_empty() {
        return Vec::new();
    }
    segments(trimmed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        match normalize(p) {
            Ok(s) => s,
            Err(e) => panic!("normalize({p:?}) failed: {e}"),
        }
    }

    #[test]
    fn empty_and_root() {
        assert_eq!(n(""), "/");
        assert_eq!(n("/"), "/");
        assert_eq!(n("//"), "/");
        assert_eq!(n("///"), "/");
        assert!(matches!(normalize_cow("/"), Ok(Cow::Borrowed("/"))));
    }

    #[test]
    fn trailing_slash_kept() {
        assert_eq!(n("/a/"), "/a/");
        assert_eq!(n("/a//"), "/a//");
        assert_eq!(match_segments("/a/"), vec!["a"]);
        assert_eq!(match_segments("/a//"), vec!["a"]);
        assert_eq!(match_segments("/"), Vec::<&str>::new());
    }

    #[test]
    fn double_slash_inside_kept() {
        assert_eq!(
            n("/proxy-value//double-slash"),
            "/proxy-value//double-slash"
        );
        assert_eq!(
            match_segments("/proxy-value//double-slash"),
            vec!["proxy-value", "", "double-slash"]
        );
    }

    #[test]
    fn leading_double_slash_collapsed() {
        assert_eq!(n("//stage/proxy-value"), "/stage/proxy-value");
        assert_eq!(n("////x//y"), "/x//y");
        assert!(matches!(normalize_cow("//x"), Ok(Cow::Borrowed("/x"))));
    }

    #[test]
    fn encoded_characters_kept() {
        let p = "/proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com";
        assert_eq!(n(p), p);
        assert_eq!(n("/a%2Fb/%20/%C3%A9/é"), "/a%2Fb/%20/%C3%A9/é");
        // Not a dot segment: only whole segments of dots are.
        assert_eq!(
            n("/a/.b/..c/%2e%2e%2e/.well-known"),
            "/a/.b/..c/%2e%2e%2e/.well-known"
        );
    }

    #[test]
    fn dot_segments_removed_and_clamped() {
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/b/."), "/a/b/");
        assert_eq!(n("/a/b/../c"), "/a/c");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/v1/../../admin"), "/admin");
        assert_eq!(n("/a/..//b"), "/b");
        assert_eq!(n("/a//../b"), "/a/b");
        assert_eq!(n("/a/../"), "/");
    }

    #[test]
    fn encoded_dot_segments_removed() {
        assert_eq!(n("/a/%2e%2e/b"), "/b");
        assert_eq!(n("/a/%2E%2E/b"), "/b");
        assert_eq!(n("/a/.%2e/b"), "/b");
        assert_eq!(n("/a/%2E./b"), "/b");
        assert_eq!(n("/a/%2e/b"), "/a/b");
        assert_eq!(n("/v1/%2e%2e/%2e%2e/secret"), "/secret");
        assert!(is_dot_segment("%2e"));
        assert!(!is_dot_segment("%2"));
        assert!(!is_dot_segment("%2f"));
        assert!(!is_dot_segment(""));
    }

    #[test]
    fn idempotent() {
        for p in [
            "/a/..//b",
            "//a/./..//../b/",
            "/a/%2e%2e/%2e/",
            "/x//y/../z/..",
        ] {
            let once = n(p);
            assert_eq!(n(&once), once, "{p}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(normalize("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("http://x/a"), Err(PathError::NotAbsolute));
        assert_eq!(
            normalize("/a\0b"),
            Err(PathError::ControlCharacter { offset: 2 })
        );
        assert!(normalize("/a\r\nX-Injected: 1").is_err());
        assert!(normalize("/a\tb").is_err());
        assert!(normalize("/a\u{7f}").is_err());
        assert!(normalize("/é\u{85}").is_err());
        assert_eq!(
            PathError::NotAbsolute.to_string(),
            "path must start with '/'"
        );
    }

    #[test]
    fn very_long_paths() {
        let long = format!("/{}", "a/".repeat(32 * 1024));
        assert_eq!(long.len(), 64 * 1024 + 1);
        assert_eq!(n(&long), long);
        assert_eq!(match_segments(&long).len(), 32 * 1024);
        let dots = format!("/x{}", "/..".repeat(20_000));
        assert_eq!(n(&dots), "/");
        let one_segment = format!("/{}", "z".repeat(64 * 1024));
        assert_eq!(n(&one_segment), one_segment);
    }
}
