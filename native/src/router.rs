//! Route trie with API Gateway precedence.
//!
//! Layout: Host -> a trie of static prefix segments (base path + stage), the mounts -> at each
//! mount a route trie. Like base-path mappings on a custom domain, the mount is chosen before the
//! route: the deepest mount whose segments lead the request path decides, so that another API's
//! root-level `ANY /{proxy+}` never catches a request under `/shop/v1/...`. Within that mount the
//! kinds of the route segments are compared left to right, static before `{param}` before
//! `{param+}`, then a method-specific route beats `ANY`; when none of its routes matches, the
//! mount's `$default` answers. Only a mount with neither a matching route nor a `$default` hands
//! the request to the next shorter mount.
//!
//! Within one route trie a depth-first search that tries static, then param, then greedy
//! children finds the best route of that trie first, and each trie node is visited at most once
//! per lookup, so the cost follows the path's length, not the number of routes. Static children
//! sit in hash maps with a randomly seeded hasher because the segments come from attackers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::path::{self, is_dot_segment, PathError};

type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// The methods a route key may name besides `ANY`, in display order.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

fn method_index(method: &str) -> Option<usize> {
    METHODS.iter().position(|m| *m == method)
}

/// A route table entry that could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    message: String,
}

impl RouteError {
    fn new(message: String) -> Self {
        Self { message }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RouteError {}

/// The result of a successful lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub route_id: u32,
    /// Path parameters in route-key order, raw (still percent-encoded). A greedy parameter holds
    /// the rest of the path joined with `/`, inner double slashes kept, trailing slash stripped.
    pub params: Vec<(String, String)>,
    /// The normalised path below the prefix, as the integration sees it: starts with `/`, keeps a
    /// trailing slash, drops a double slash right after the prefix.
    pub path: String,
}

/// A match borrowing from the router and the request path; see [`Router::lookup_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRef<'a> {
    pub route_id: u32,
    pub params: Vec<(&'a str, &'a str)>,
    pub path: &'a str,
}

impl MatchRef<'_> {
    pub fn to_match(&self) -> Match {
        Match {
            route_id: self.route_id,
            params: self
                .params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            path: self.path.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Static,
    Param,
    Greedy,
}

/// Route-table slots per method: ids are indices into `Router::routes`.
#[derive(Debug, Default)]
struct Methods {
    specific: [Option<u32>; METHODS.len()],
    any: Option<u32>,
}

impl Methods {
    fn pick(&self, method: Option<usize>) -> Option<u32> {
        method
            .and_then(|m| self.specific.get(m).copied().flatten())
            .or(self.any)
    }

    fn slot(&mut self, method: Option<usize>) -> &mut Option<u32> {
        match method.and_then(|m| self.specific.get_mut(m)) {
            Some(slot) => slot,
            None => &mut self.any,
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    statics: Map<Node>,
    param: Option<Box<Node>>,
    greedy: Option<Box<Methods>>,
    here: Methods,
}

#[derive(Debug, Default)]
struct Table {
    root: Node,
    default: Option<u32>,
}

#[derive(Debug, Default)]
struct PrefixNode {
    children: Map<PrefixNode>,
    table: Option<Box<Table>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKey {
    Any,
    Exact(String),
    /// Stored as the suffix including its dot: `*.example.com` -> `.example.com`.
    Wildcard(String),
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKey::Any => f.write_str("any host"),
            HostKey::Exact(h) => write!(f, "host {h}"),
            HostKey::Wildcard(s) => write!(f, "host *{s}"),
        }
    }
}

#[derive(Debug)]
struct Route {
    id: u32,
    key: String,
    host: HostKey,
    prefix_segments: Vec<String>,
    /// `None` for `$default`.
    pattern: Option<Vec<Segment>>,
    /// `None` for `ANY` (and `$default`).
    method: Option<usize>,
}

impl Route {
    fn describe(&self) -> String {
        format!("\"{}\" (id {})", self.key, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Static(String),
    Param(String),
    Greedy(String),
}

enum ParsedKey {
    Default,
    Route {
        method: Option<usize>,
        segments: Vec<Segment>,
    },
}

fn key_error(key: &str, why: &str) -> RouteError {
    RouteError::new(format!("invalid route key \"{key}\": {why}"))
}

fn bad_static(seg: &str) -> Option<&'static str> {
    if seg.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("whitespace or a control character in a segment")
    } else if seg.contains(['?', '#']) {
        Some("'?' or '#' in a segment (the path excludes the query string and fragment)")
    } else if is_dot_segment(seg) {
        Some("a '.' or '..' segment can never match (requests are normalised)")
    } else {
        None
    }
}

fn parse_route_key(key: &str) -> Result<ParsedKey, RouteError> {
    if key == "$default" {
        return Ok(ParsedKey::Default);
    }
    let Some((method, path)) = key.split_once(' ') else {
        return Err(key_error(
            key,
            "expected \"METHOD /path\", \"ANY /path\" or \"$default\"",
        ));
    };
    let method = if method == "ANY" {
        None
    } else {
        match method_index(method) {
            Some(i) => Some(i),
            None => {
                return Err(key_error(
                    key,
                    &format!(
                        "unknown method \"{method}\" (use ANY or one of {}, upper-case)",
                        METHODS.join(", ")
                    ),
                ))
            }
        }
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(key_error(key, "the path must start with '/'"));
    };
    let mut segments = Vec::new();
    if rest.is_empty() {
        return Ok(ParsedKey::Route { method, segments });
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let count = parts.len();
    for (i, seg) in parts.into_iter().enumerate() {
        if seg.is_empty() {
            return Err(key_error(
                key,
                "empty segment (no double or trailing slashes in a route key)",
            ));
        }
        let parsed = if let Some(inner) = seg.strip_prefix('{') {
            let Some(inner) = inner.strip_suffix('}') else {
                return Err(key_error(
                    key,
                    &format!("unbalanced braces in segment \"{seg}\""),
                ));
            };
            if inner.contains(['{', '}']) {
                return Err(key_error(
                    key,
                    &format!("unbalanced braces in segment \"{seg}\""),
                ));
            }
            let (name, greedy) = match inner.strip_suffix('+') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if name.is_empty() {
                return Err(key_error(key, "empty parameter name"));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(key_error(
                    key,
                    &format!(
                        "parameter name \"{name}\" may only hold letters, digits, '_' and '-'"
                    ),
                ));
            }
            let taken = segments
                .iter()
                .any(|s| matches!(s, Segment::Param(n) | Segment::Greedy(n) if n == name));
            if taken {
                return Err(key_error(
                    key,
                    &format!("duplicate parameter name \"{name}\""),
                ));
            }
            if greedy {
                if i + 1 != count {
                    return Err(key_error(
                        key,
                        &format!("greedy parameter {{{name}+}} must be the last segment"),
                    ));
                }
                Segment::Greedy(name.to_owned())
            } else {
                Segment::Param(name.to_owned())
            }
        } else if seg.contains(['{', '}']) {
            return Err(key_error(
                key,
                &format!(
                    "unbalanced braces in segment \"{seg}\" (a parameter must be a whole segment)"
                ),
            ));
        } else if let Some(why) = bad_static(seg) {
            return Err(key_error(key, why));
        } else {
            Segment::Static(seg.to_owned())
        };
        segments.push(parsed);
    }
    Ok(ParsedKey::Route { method, segments })
}

fn parse_prefix(prefix: &str) -> Result<Vec<String>, RouteError> {
    let err = |why: &str| RouteError::new(format!("invalid prefix \"{prefix}\": {why}"));
    if prefix.is_empty() || prefix == "/" {
        return Ok(Vec::new());
    }
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err(err("it must be empty or start with '/'"));
    };
    rest.split('/')
        .map(|seg| {
            if seg.is_empty() {
                Err(err("empty segment (no double or trailing slashes)"))
            } else if seg.contains(['{', '}']) {
                Err(err("a base path or stage cannot hold parameters"))
            } else if let Some(why) = bad_static(seg) {
                Err(err(why))
            } else {
                Ok(seg.to_owned())
            }
        })
        .collect()
}

fn parse_host(host: Option<&str>) -> Result<HostKey, RouteError> {
    let Some(raw) = host else {
        return Ok(HostKey::Any);
    };
    let err = |why: &str| RouteError::new(format!("invalid host \"{raw}\": {why}"));
    let lower = raw.to_ascii_lowercase();
    let h = lower.strip_suffix('.').unwrap_or(&lower);
    if h.is_empty() {
        return Err(err("empty host name"));
    }
    if h.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '/' | '@'))
    {
        return Err(err("a host name only (no port, scheme or path)"));
    }
    if let Some(suffix) = h.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') || suffix.starts_with('.') {
            return Err(err("a wildcard is written \"*.example.com\""));
        }
        return Ok(HostKey::Wildcard(format!(".{suffix}")));
    }
    if h.contains('*') {
        return Err(err(
            "'*' is only allowed as the first label (\"*.example.com\")",
        ));
    }
    Ok(HostKey::Exact(h.to_owned()))
}

/// Lower-cased Host header value without its port or a trailing dot.
fn request_host(host: &str) -> Cow<'_, str> {
    let name = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        }
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Collects routes, rejecting bad and conflicting keys as they come.
#[derive(Debug, Default)]
pub struct RouterBuilder {
    exact: Map<PrefixNode>,
    wildcard: Map<PrefixNode>,
    any_host: Option<PrefixNode>,
    routes: Vec<Route>,
}

impl RouterBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one route. `host`: `None` for any host, `"api.example.com"` or `"*.example.com"`;
    /// `prefix`: `""` or static segments such as `"/shop/v1"`; `route_key`: `"GET /pets/{id}"`,
    /// `"ANY /{proxy+}"`, `"$default"`. The same `id` may be added under several hosts.
    pub fn add(
        &mut self,
        host: Option<&str>,
        prefix: &str,
        route_key: &str,
        id: u32,
    ) -> Result<(), RouteError> {
        let host_key = parse_host(host)?;
        let prefix_segments = parse_prefix(prefix)?;
        let parsed = parse_route_key(route_key)?;
        let index = u32::try_from(self.routes.len())
            .map_err(|_| RouteError::new("too many routes".to_owned()))?;

        let tree = match &host_key {
            HostKey::Any => self.any_host.get_or_insert_with(PrefixNode::default),
            HostKey::Exact(h) => self.exact.entry(h.as_str().into()).or_default(),
            HostKey::Wildcard(s) => self.wildcard.entry(s.as_str().into()).or_default(),
        };
        let mut pnode = tree;
        for seg in &prefix_segments {
            pnode = pnode.children.entry(seg.as_str().into()).or_default();
        }
        let table = pnode.table.get_or_insert_with(Box::default);

        let (slot, method, pattern) = match parsed {
            ParsedKey::Default => (&mut table.default, None, None),
            ParsedKey::Route { method, segments } => {
                let mut node = &mut table.root;
                let mut greedy = false;
                for seg in &segments {
                    node = match seg {
                        Segment::Static(s) => node.statics.entry(s.as_str().into()).or_default(),
                        Segment::Param(_) => node.param.get_or_insert_with(Box::default),
                        Segment::Greedy(_) => {
                            greedy = true;
                            break;
                        }
                    };
                }
                let methods = if greedy {
                    node.greedy.get_or_insert_with(Box::default)
                } else {
                    &mut node.here
                };
                (methods.slot(method), method, Some(segments))
            }
        };
        if let Some(existing) = *slot {
            let other = self
                .routes
                .get(existing as usize)
                .map(Route::describe)
                .unwrap_or_default();
            let prefix_shown = if prefix_segments.is_empty() {
                "no prefix".to_owned()
            } else {
                format!("prefix /{}", prefix_segments.join("/"))
            };
            return Err(RouteError::new(format!(
                "conflicting routes: \"{route_key}\" (id {id}) and {other} match the same \
                 requests ({host_key}, {prefix_shown}); rename or remove one"
            )));
        }
        *slot = Some(index);
        self.routes.push(Route {
            id,
            key: route_key.to_owned(),
            host: host_key,
            prefix_segments,
            pattern,
            method,
        });
        Ok(())
    }

    pub fn build(self) -> Result<Router, RouteError> {
        let order = precedence(&self.routes);
        Ok(Router {
            exact: self.exact,
            wildcard: self.wildcard,
            any_host: self.any_host,
            routes: self.routes,
            order,
        })
    }
}

/// Display order for `pygw routes`, which is the order lookup tries entries in: hosts (exact,
/// then wildcards longest first, then any host), then within a host the mounts deepest first,
/// then within a mount the route rank and the mount's `$default` last. Ties that lookup never has
/// to break (mounts of one depth, routes that cannot match the same request) go by their text,
/// so the order does not depend on the order of the config file.
fn precedence(routes: &[Route]) -> Vec<u32> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct SortKey<'a> {
        host: (u8, isize, &'a str),
        deeper_mount_first: isize,
        prefix: &'a [String],
        is_default: bool,
        /// Route segments; empty for `$default`.
        elements: Vec<(Kind, &'a str)>,
        is_any: bool,
        method: usize,
        index: usize,
    }
    let mut keyed: Vec<SortKey<'_>> = routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let host = match &r.host {
                HostKey::Exact(h) => (0, 0, h.as_str()),
                HostKey::Wildcard(s) => (1, -(s.len() as isize), s.as_str()),
                HostKey::Any => (2, 0, ""),
            };
            let elements = r
                .pattern
                .iter()
                .flatten()
                .map(|s| match s {
                    Segment::Static(v) => (Kind::Static, v.as_str()),
                    Segment::Param(_) => (Kind::Param, ""),
                    Segment::Greedy(_) => (Kind::Greedy, ""),
                })
                .collect();
            SortKey {
                host,
                deeper_mount_first: -(r.prefix_segments.len() as isize),
                prefix: &r.prefix_segments,
                is_default: r.pattern.is_none(),
                elements,
                is_any: r.method.is_none(),
                method: r.method.unwrap_or(METHODS.len()),
                index,
            }
        })
        .collect();
    keyed.sort();
    let mut seen = std::collections::HashSet::new();
    keyed
        .into_iter()
        .filter_map(|k| routes.get(k.index).map(|r| r.id))
        .filter(|id| seen.insert(*id))
        .collect()
}

/// An immutable route table.
#[derive(Debug)]
pub struct Router {
    exact: Map<PrefixNode>,
    wildcard: Map<PrefixNode>,
    any_host: Option<PrefixNode>,
    routes: Vec<Route>,
    order: Vec<u32>,
}

impl Router {
    /// Number of entries added (a route added under two hosts counts twice).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Distinct route ids in match-precedence order.
    pub fn precedence_order(&self) -> Vec<u32> {
        self.order.clone()
    }

    fn tree_for(&self, host: &str) -> Option<&PrefixNode> {
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return self.any_host.as_ref();
        }
        let host = request_host(host);
        if let Some(tree) = self.exact.get(host.as_ref()) {
            return Some(tree);
        }
        if !self.wildcard.is_empty() {
            // Leftmost dot first gives the longest suffix first.
            for (pos, _) in host.match_indices('.').filter(|(pos, _)| *pos > 0) {
                if let Some(tree) = host.get(pos..).and_then(|s| self.wildcard.get(s)) {
                    return Some(tree);
                }
            }
        }
        self.any_host.as_ref()
    }

    /// Finds the route for a request. `path` is the raw path without the query string.
    pub fn lookup(&self, host: &str, method: &str, path: &str) -> Result<Option<Match>, PathError> {
        self.lookup_with(host, method, path, |m| m.to_match())
    }

    /// [`Router::lookup`] handing a borrowed view of the match to `f`, so that a caller that
    /// converts the result anyway (the Python binding) copies each string once.
    pub fn lookup_with<R>(
        &self,
        host: &str,
        method: &str,
        path: &str,
        f: impl FnOnce(MatchRef<'_>) -> R,
    ) -> Result<Option<R>, PathError> {
        let normalized = path::normalize_cow(path)?;
        let Some(tree) = self.tree_for(host) else {
            return Ok(None);
        };
        let method = method_index(method);
        // Walking the remaining text instead of a vector of segments keeps lookups free of
        // allocations until a match is built. Trailing slashes are ignored for matching.
        let trimmed = normalized.trim_end_matches('/');
        let body = trimmed.strip_prefix('/').unwrap_or(trimmed);
        let rest = Some(body).filter(|b| !b.is_empty());

        let mut captures = Vec::new();
        let Some((route, prefix_end)) = search(tree, body, rest, method, &mut captures) else {
            return Ok(None);
        };
        // Captures were pushed while the search unwound, innermost first.
        captures.reverse();
        let Some(route) = self.routes.get(route as usize) else {
            return Ok(None);
        };
        let names = route.pattern.iter().flatten().filter_map(|s| match s {
            Segment::Static(_) => None,
            Segment::Param(n) | Segment::Greedy(n) => Some(n.as_str()),
        });
        let params = names.zip(captures).collect();
        // A non-empty rest follows a slash: borrow that slash as the leading one.
        let below = normalized.get(prefix_end..).unwrap_or("");
        let trimmed_len = below.trim_start_matches('/').len();
        let path = if trimmed_len == 0 {
            "/"
        } else {
            normalized
                .get(normalized.len() - trimmed_len - 1..)
                .unwrap_or("/")
        };
        Ok(Some(f(MatchRef {
            route_id: route.id,
            params,
            path,
        })))
    }
}

/// The first segment of `rest` and what follows it (`None` when it was the last).
fn split_first(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((seg, tail)) => (seg, Some(tail)),
        None => (rest, None),
    }
}

/// The deepest mount below `pnode` along `rest` that answers, and the byte offset in the
/// normalised path where its prefix ends. Recursing instead of collecting the mounts on the way
/// down keeps the lookup free of allocations, and the depth is bounded by the configured prefixes.
fn search<'p>(
    pnode: &PrefixNode,
    body: &'p str,
    rest: Option<&'p str>,
    method: Option<usize>,
    captures: &mut Vec<&'p str>,
) -> Option<(u32, usize)> {
    if !pnode.children.is_empty() {
        if let Some(r) = rest {
            let (seg, tail) = split_first(r);
            if let Some(found) = pnode
                .children
                .get(seg)
                .and_then(|child| search(child, body, tail, method, captures))
            {
                return Some(found);
            }
        }
    }
    let table = pnode.table.as_deref()?;
    let prefix_end = match rest {
        Some(r) => body.len() - r.len(),
        None => body.len() + 1,
    };
    // A double slash right after the prefix is dropped.
    let route_rest = rest
        .map(|r| r.trim_start_matches('/'))
        .filter(|r| !r.is_empty());
    if let Some(route) = find(&table.root, route_rest, method, captures) {
        return Some((route, prefix_end));
    }
    table.default.map(|d| (d, prefix_end))
}

/// Depth-first search in precedence order. `rest` is the unmatched part of the path (`None`
/// when every segment is consumed). On a match `captures` receives each parameter's value, a
/// greedy one being all of `rest`, last parameter first: pushing only while unwinding from a
/// match leaves it untouched (and unallocated) by the branches that fail.
fn find<'p>(
    node: &Node,
    rest: Option<&'p str>,
    method: Option<usize>,
    captures: &mut Vec<&'p str>,
) -> Option<u32> {
    let Some(rest) = rest else {
        return node.here.pick(method);
    };
    let (seg, tail) = split_first(rest);
    if !seg.is_empty() {
        if !node.statics.is_empty() {
            if let Some(r) = node
                .statics
                .get(seg)
                .and_then(|child| find(child, tail, method, captures))
            {
                return Some(r);
            }
        }
        if let Some(r) = node
            .param
            .as_deref()
            .and_then(|child| find(child, tail, method, captures))
        {
            captures.push(seg);
            return Some(r);
        }
    }
    if let Some(r) = node.greedy.as_ref().and_then(|g| g.pick(method)) {
        captures.push(rest);
        return Some(r);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    type Table<'a> = &'a [(Option<&'a str>, &'a str, &'a str, u32)];

    fn router(routes: Table<'_>) -> Router {
        let mut b = RouterBuilder::new();
        for (host, prefix, key, id) in routes {
            if let Err(e) = b.add(*host, prefix, key, *id) {
                panic!("add {key}: {e}");
            }
        }
        match b.build() {
            Ok(r) => r,
            Err(e) => panic!("build: {e}"),
        }
    }

    fn simple(keys: &[&str]) -> Router {
        let table: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (None, "", *k, i as u32))
            .collect();
        router(&table)
    }

    fn get(r: &Router, method: &str, path: &str) -> Option<Match> {
        match r.lookup("example.com", method, path) {
            Ok(m) => m,
            Err(e) => panic!("lookup {path}: {e}"),
        }
    }

    fn id(r: &Router, method: &str, path: &str) -> Option<u32> {
        get(r, method, path).map(|m| m.route_id)
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn add_err(routes: Table<'_>) -> String {
        let mut b = RouterBuilder::new();
        for (host, prefix, key, id) in routes {
            if let Err(e) = b.add(*host, prefix, key, *id) {
                return e.to_string();
            }
        }
        panic!("expected an error for {routes:?}");
    }

    #[test]
    fn static_beats_param_beats_greedy() {
        let r = simple(&[
            "GET /{proxy+}",
            "GET /pets/{id}",
            "GET /pets/dog",
            "GET /{a}/dog",
        ]);
        assert_eq!(id(&r, "GET", "/pets/dog"), Some(2));
        assert_eq!(id(&r, "GET", "/pets/cat"), Some(1));
        assert_eq!(id(&r, "GET", "/cats/dog"), Some(3));
        assert_eq!(id(&r, "GET", "/cats/cat"), Some(0));
        assert_eq!(id(&r, "GET", "/x"), Some(0));
        assert_eq!(id(&r, "GET", "/"), None);
    }

    #[test]
    fn leftmost_static_wins() {
        // /a/{x} has its static segment first: it beats /{x}/b for /a/b.
        let r = simple(&["GET /{x}/b", "GET /a/{x}"]);
        assert_eq!(id(&r, "GET", "/a/b"), Some(1));
        let r = simple(&["GET /a/{x}", "GET /{x}/b"]);
        assert_eq!(id(&r, "GET", "/a/b"), Some(0));
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let keys = [
            "ANY /{p+}",
            "GET /a/{x}",
            "GET /a/b",
            "ANY /a/b",
            "GET /{x}/b",
        ];
        let forward = simple(&keys);
        let mut rev: Vec<(Option<&str>, &str, &str, u32)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (None, "", *k, i as u32))
            .collect();
        rev.reverse();
        let backward = router(&rev);
        for (m, p) in [
            ("GET", "/a/b"),
            ("POST", "/a/b"),
            ("GET", "/a/c"),
            ("PUT", "/z/b"),
        ] {
            assert_eq!(id(&forward, m, p), id(&backward, m, p), "{m} {p}");
        }
        assert_eq!(forward.precedence_order(), backward.precedence_order());
        assert_eq!(forward.precedence_order(), vec![2, 3, 1, 4, 0]);
    }

    #[test]
    fn method_beats_any_and_wrong_method_is_no_match() {
        let r = simple(&["ANY /items", "GET /items", "POST /orders"]);
        assert_eq!(id(&r, "GET", "/items"), Some(1));
        assert_eq!(id(&r, "DELETE", "/items"), Some(0));
        assert_eq!(id(&r, "BREW", "/items"), Some(0));
        assert_eq!(id(&r, "POST", "/orders"), Some(2));
        assert_eq!(id(&r, "GET", "/orders"), None);
        // Methods are case-sensitive tokens.
        assert_eq!(id(&r, "post", "/orders"), None);
    }

    #[test]
    fn more_static_segments_beat_method_specific() {
        let r = simple(&["GET /a/{x}", "ANY /a/b"]);
        assert_eq!(id(&r, "GET", "/a/b"), Some(1));
    }

    #[test]
    fn backtracking() {
        let r = simple(&["GET /a/b/c", "GET /a/{x}/d", "POST /a/b/{y}", "GET /{p+}"]);
        assert_eq!(id(&r, "GET", "/a/b/d"), Some(1));
        assert_eq!(
            get(&r, "GET", "/a/b/d").map(|m| m.params),
            Some(params(&[("x", "b")]))
        );
        // The static branch has /a/b/{y} for POST only: GET falls back to the param branch.
        assert_eq!(id(&r, "POST", "/a/b/z"), Some(2));
        assert_eq!(id(&r, "GET", "/a/b/z"), Some(3));
        assert_eq!(
            get(&r, "GET", "/a/b/z").map(|m| m.params),
            Some(params(&[("p", "a/b/z")]))
        );
        // A wrong method on a known path may still match another route.
        assert_eq!(id(&r, "POST", "/a/b/c"), Some(2));
    }

    #[test]
    fn params_raw_and_renamed_per_route() {
        let r = simple(&["GET /u/{id}", "POST /u/{user}/{rest+}"]);
        let m = get(&r, "GET", "/u/a%2Fb").map(|m| m.params);
        assert_eq!(m, Some(params(&[("id", "a%2Fb")])));
        let m = get(&r, "POST", "/u/7/x//y/").map(|m| m.params);
        assert_eq!(m, Some(params(&[("user", "7"), ("rest", "x//y")])));
    }

    #[test]
    fn root_route() {
        let r = simple(&["GET /", "GET /{p+}"]);
        assert_eq!(id(&r, "GET", "/"), Some(0));
        assert_eq!(id(&r, "GET", ""), Some(0));
        assert_eq!(id(&r, "GET", "//"), Some(0));
        assert_eq!(id(&r, "GET", "/x"), Some(1));
        let r = simple(&["ANY /{p+}"]);
        assert_eq!(id(&r, "GET", "/"), None);
    }

    #[test]
    fn aws_recorded_paths() {
        let r = router(&[
            (None, "/stage", "ANY /{proxy+}", 1),
            (None, "/stage", "GET /hardcoded", 2),
        ]);
        let cases = [
            ("/stage/proxy-value", 1, "proxy-value", "/proxy-value"),
            ("/stage/proxy-value/", 1, "proxy-value", "/proxy-value/"),
            (
                "/stage/proxy-value//double-slash",
                1,
                "proxy-value//double-slash",
                "/proxy-value//double-slash",
            ),
            ("//stage/proxy-value", 1, "proxy-value", "/proxy-value"),
            ("/stage//proxy-value", 1, "proxy-value", "/proxy-value"),
            (
                "/stage/proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com",
                1,
                "proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com",
                "/proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com",
            ),
            ("/stage//hardcoded", 2, "", "/hardcoded"),
        ];
        for (path, want, proxy, seen) in cases {
            let m = get(&r, "GET", path);
            let Some(m) = m else {
                panic!("no match for {path}");
            };
            assert_eq!(m.route_id, want, "{path}");
            assert_eq!(m.path, seen, "{path}");
            if want == 1 {
                assert_eq!(m.params, params(&[("proxy", proxy)]), "{path}");
            } else {
                assert!(m.params.is_empty());
            }
        }
    }

    #[test]
    fn trailing_slash_ignored_for_matching_kept_in_path() {
        let r = simple(&["GET /items", "GET /items/{id}"]);
        let m = get(&r, "GET", "/items/");
        assert_eq!(m.as_ref().map(|m| m.route_id), Some(0));
        assert_eq!(m.map(|m| m.path), Some("/items/".to_owned()));
        let m = get(&r, "GET", "/items/5/");
        assert_eq!(
            m.as_ref().map(|m| m.params.clone()),
            Some(params(&[("id", "5")]))
        );
        assert_eq!(m.map(|m| m.path), Some("/items/5/".to_owned()));
    }

    #[test]
    fn double_slash_inside_is_a_segment() {
        let r = simple(&["GET /a/{x}/b", "GET /a/{p+}"]);
        // `{x}` cannot match an empty segment: the greedy route takes it.
        let m = get(&r, "GET", "/a//b");
        assert_eq!(m.as_ref().map(|m| m.route_id), Some(1));
        assert_eq!(m.map(|m| m.params), Some(params(&[("p", "/b")])));
        assert_eq!(id(&r, "GET", "/a/q/b"), Some(0));
    }

    #[test]
    fn dot_segments_never_escape_prefix() {
        let r = router(&[
            (None, "/v1", "GET /public/{p+}", 1),
            (None, "", "GET /admin", 2),
        ]);
        assert_eq!(id(&r, "GET", "/v1/public/../../admin"), Some(2));
        let m = get(&r, "GET", "/v1/public/a/%2e%2e/b");
        assert_eq!(m.map(|m| m.params), Some(params(&[("p", "b")])));
        assert_eq!(id(&r, "GET", "/v1/public/%2e%2e"), None);
    }

    #[test]
    fn invalid_paths_are_errors() {
        let r = simple(&["ANY /{p+}"]);
        assert!(r.lookup("h", "GET", "nope").is_err());
        assert!(r.lookup("h", "GET", "/a\nb").is_err());
    }

    #[test]
    fn encoded_characters_match_raw() {
        let r = simple(&["GET /a%20b", "GET /{x}"]);
        assert_eq!(id(&r, "GET", "/a%20b"), Some(0));
        assert_eq!(id(&r, "GET", "/a b"), Some(1));
        assert_eq!(id(&r, "GET", "/A%20b"), Some(1));
    }

    #[test]
    fn case_sensitive_paths() {
        let r = simple(&["GET /Pets"]);
        assert_eq!(id(&r, "GET", "/Pets"), Some(0));
        assert_eq!(id(&r, "GET", "/pets"), None);
    }

    #[test]
    fn very_long_paths() {
        let r = simple(&["GET /a/{p+}", "GET /a/{x}"]);
        let long = format!("/a/{}", "seg/".repeat(16 * 1024));
        let m = get(&r, "GET", &long);
        assert_eq!(m.as_ref().map(|m| m.route_id), Some(0));
        assert_eq!(
            m.and_then(|m| m.params.into_iter().next())
                .map(|(_, v)| v.len()),
            Some(16 * 1024 * 4 - 1)
        );
        let huge = format!("/a/{}", "x".repeat(64 * 1024));
        assert_eq!(id(&r, "GET", &huge), Some(1));
        let no = format!("/{}", "b/".repeat(32 * 1024));
        assert_eq!(id(&r, "GET", &no), None);
    }

    #[test]
    fn hosts_exact_wildcard_and_no_fall_through() {
        let r = router(&[
            (Some("API.example.com"), "", "GET /a", 1),
            (Some("*.example.com"), "", "GET /b", 2),
            (Some("*.eu.example.com"), "", "GET /c", 3),
            (None, "", "GET /{p+}", 4),
        ]);
        let at = |host: &str, path: &str| match r.lookup(host, "GET", path) {
            Ok(m) => m.map(|m| m.route_id),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(at("api.example.com", "/a"), Some(1));
        assert_eq!(at("Api.Example.COM:8443", "/a"), Some(1));
        assert_eq!(at("api.example.com.", "/a"), Some(1));
        // Exact host found: only its routes, no fall-through to the wildcard or host-less ones.
        assert_eq!(at("api.example.com", "/b"), None);
        assert_eq!(at("api.example.com", "/zzz"), None);
        assert_eq!(at("x.example.com", "/b"), Some(2));
        assert_eq!(at("x.y.z.example.com", "/b"), Some(2));
        assert_eq!(at("x.eu.example.com", "/c"), Some(3));
        assert_eq!(at("x.eu.example.com", "/b"), None);
        assert_eq!(at("eu.example.com", "/b"), Some(2));
        // The wildcard needs at least one label in front: example.com is served host-less.
        assert_eq!(at("example.com", "/b"), Some(4));
        assert_eq!(at("other.org", "/b"), Some(4));
        assert_eq!(at("[::1]:8080", "/b"), Some(4));
        assert_eq!(at("", "/b"), Some(4));
        let only_hosts = router(&[(Some("a.test"), "", "GET /x", 1)]);
        assert_eq!(only_hosts.lookup("b.test", "GET", "/x"), Ok(None));
    }

    #[test]
    fn example_com_without_wildcard_label_uses_hostless() {
        let r = router(&[
            (Some("*.example.com"), "", "GET /b", 2),
            (None, "", "GET /b", 4),
        ]);
        assert_eq!(
            r.lookup("example.com", "GET", "/b")
                .map(|m| m.map(|m| m.route_id)),
            Ok(Some(4))
        );
    }

    #[test]
    fn prefixes_and_defaults() {
        let r = router(&[
            (None, "/shop/v1", "GET /items", 1),
            (None, "/shop/v1", "$default", 2),
            (None, "/shop", "$default", 3),
            (None, "", "$default", 4),
            (None, "", "GET /shop/v1/special", 5),
        ]);
        let m = get(&r, "GET", "/shop/v1/items").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((1, "/items".to_owned())));
        let m = get(&r, "GET", "/shop/v1//items/").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((1, "/items/".to_owned())));
        let m = get(&r, "POST", "/shop/v1/items").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((2, "/items".to_owned())));
        let m = get(&r, "GET", "/shop/v1").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((2, "/".to_owned())));
        let m = get(&r, "GET", "/shop/v1/").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((2, "/".to_owned())));
        let m = get(&r, "GET", "/shop/v2/x").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((3, "/v2/x".to_owned())));
        let m = get(&r, "GET", "/shopping").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((4, "/shopping".to_owned())));
        // The deepest mount decides: its $default beats a shallower mount's exact route.
        let m = get(&r, "GET", "/shop/v1/special").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((2, "/special".to_owned())));
        // A mount with only routes and no match hands over to the shorter mount's $default.
        let r = router(&[(None, "/v1", "GET /a", 1), (None, "", "$default", 9)]);
        assert_eq!(id(&r, "GET", "/v1/a"), Some(1));
        let m = get(&r, "GET", "/v1/b").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((9, "/v1/b".to_owned())));
    }

    #[test]
    fn deepest_mount_decides() {
        let r = router(&[
            (None, "", "ANY /{proxy+}", 1),
            (None, "/v1", "GET /a", 2),
            (None, "/v1", "$default", 3),
        ]);
        let m = get(&r, "GET", "/v1/x").map(|m| (m.route_id, m.params, m.path));
        assert_eq!(m, Some((3, Vec::new(), "/x".to_owned())));
        let m = get(&r, "GET", "/v1/a").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((2, "/a".to_owned())));
        assert_eq!(id(&r, "POST", "/v1/a"), Some(3));
        assert_eq!(id(&r, "GET", "/v1"), Some(3));
        assert_eq!(id(&r, "GET", "/v1a/x"), Some(1));
        let m = get(&r, "GET", "/v2/x").map(|m| (m.route_id, m.params, m.path));
        assert_eq!(
            m,
            Some((1, params(&[("proxy", "v2/x")]), "/v2/x".to_owned()))
        );

        // Without a $default the mount yields nothing for /v1/x, and the root answers.
        let r = router(&[(None, "", "ANY /{proxy+}", 1), (None, "/v1", "GET /a", 2)]);
        let m = get(&r, "GET", "/v1/x").map(|m| (m.route_id, m.params, m.path));
        assert_eq!(
            m,
            Some((1, params(&[("proxy", "v1/x")]), "/v1/x".to_owned()))
        );

        // A greedy route of the deeper mount beats a static route of the root.
        let r = router(&[
            (None, "/v1", "ANY /{p+}", 1),
            (None, "", "GET /v1/items", 2),
            (None, "", "GET /v1", 3),
        ]);
        assert_eq!(id(&r, "GET", "/v1/items"), Some(1));
        // The mount's routes cannot match an empty rest; the root's route for /v1 can.
        assert_eq!(id(&r, "GET", "/v1"), Some(3));
        // Same path from two mounts: the deeper one, whatever the methods.
        let r = router(&[
            (None, "/v1", "ANY /items", 2),
            (None, "", "GET /v1/items", 1),
        ]);
        assert_eq!(id(&r, "GET", "/v1/items"), Some(2));
    }

    #[test]
    fn nested_mounts_fall_through_in_depth_order() {
        let r = router(&[
            (None, "/a/b", "GET /x", 1),
            (None, "/a", "GET /b/{y}", 2),
            (None, "", "GET /a/b/{z}/{w}", 3),
        ]);
        let m = get(&r, "GET", "/a/b/x").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((1, "/x".to_owned())));
        let m = get(&r, "GET", "/a/b/z/").map(|m| (m.route_id, m.params, m.path));
        assert_eq!(m, Some((2, params(&[("y", "z")]), "/b/z/".to_owned())));
        // The empty segment is not the /a/b mount, and a double slash after /a is dropped.
        let m = get(&r, "GET", "/a//b/z").map(|m| (m.route_id, m.path));
        assert_eq!(m, Some((2, "/b/z".to_owned())));
        assert_eq!(id(&r, "GET", "/a/b//z"), None);
        let m = get(&r, "GET", "/a/b/z/w").map(|m| (m.route_id, m.params));
        assert_eq!(m, Some((3, params(&[("z", "z"), ("w", "w")]))));
        assert_eq!(id(&r, "GET", "/a/b/z/w/v"), None);
        assert_eq!(id(&r, "POST", "/a/b/x"), None);
    }

    #[test]
    fn conflicts_are_named() {
        let e = add_err(&[(None, "", "GET /a/{x}", 1), (None, "", "GET /a/{y}", 2)]);
        assert!(e.contains("\"GET /a/{y}\" (id 2)"), "{e}");
        assert!(e.contains("\"GET /a/{x}\" (id 1)"), "{e}");
        let e = add_err(&[(None, "/v1", "$default", 1), (None, "/v1", "$default", 2)]);
        assert!(
            e.contains("(id 1)") && e.contains("(id 2)") && e.contains("/v1"),
            "{e}"
        );
        let e = add_err(&[(None, "", "ANY /{p+}", 1), (None, "", "ANY /{q+}", 2)]);
        assert!(e.contains("conflicting"), "{e}");
        let e = add_err(&[
            (Some("a.com"), "", "GET /x", 1),
            (Some("A.com"), "", "GET /x", 2),
        ]);
        assert!(e.contains("host a.com"), "{e}");
        // Not conflicts: other method, other host, other prefix, ANY next to GET.
        router(&[
            (None, "", "GET /a/{x}", 1),
            (None, "", "POST /a/{y}", 2),
            (None, "", "ANY /a/{z}", 3),
            (Some("h.com"), "", "GET /a/{x}", 4),
            (Some("*.h.com"), "", "GET /a/{x}", 5),
            (None, "/v1", "GET /a/{x}", 6),
            (None, "/v1", "$default", 7),
            (None, "", "$default", 8),
            (None, "", "GET /a/{x}/{y+}", 9),
        ]);
    }

    #[test]
    fn bad_keys_are_named() {
        for (key, why) in [
            ("GET /a/{b", "unbalanced"),
            ("GET /a/b}", "unbalanced"),
            ("GET /a/x{b}", "unbalanced"),
            ("GET /a/{{b}}", "unbalanced"),
            ("GET /{p+}/a", "last segment"),
            ("GET /{a}/{a}", "duplicate"),
            ("GET /{a}/{a+}", "duplicate"),
            ("GET /{}", "empty parameter"),
            ("GET /{+}", "empty parameter"),
            ("GET a", "start with '/'"),
            ("get /a", "unknown method"),
            ("FETCH /a", "unknown method"),
            ("GET", "expected"),
            ("", "expected"),
            ("GET  /a", "start with '/'"),
            ("GET /a/", "empty segment"),
            ("GET /a//b", "empty segment"),
            ("GET /a/../b", "can never match"),
            ("GET /a b", "whitespace"),
            ("GET /a?b=1", "query"),
            ("GET /{a.b}", "parameter name"),
        ] {
            let e = add_err(&[(None, "", key, 1)]);
            assert!(e.contains(&format!("\"{key}\"")), "{key}: {e}");
            assert!(e.contains(why), "{key}: {e}");
        }
        for prefix in ["v1", "/v1/", "/v1//x", "/{stage}", "/./x"] {
            let e = add_err(&[(None, prefix, "GET /a", 1)]);
            assert!(e.contains("invalid prefix"), "{prefix}: {e}");
        }
        for host in ["", "*", "a.*.com", "x.com:80", "*.", "http://x.com"] {
            let e = add_err(&[(Some(host), "", "GET /a", 1)]);
            assert!(e.contains("invalid host"), "{host}: {e}");
        }
    }

    #[test]
    fn len_and_precedence_order() {
        let r = router(&[
            (None, "", "$default", 10),
            (None, "", "ANY /{p+}", 11),
            (None, "/v1", "GET /a", 12),
            (None, "", "GET /v1/{x}", 13),
            (Some("*.x.com"), "", "GET /a", 14),
            (Some("a.x.com"), "", "GET /a", 15),
            (Some("a.x.com"), "", "GET /b", 11),
            (None, "/v1", "$default", 16),
        ]);
        assert_eq!(r.len(), 8);
        assert!(!r.is_empty());
        // Mounts deepest first, each with its $default after its routes.
        assert_eq!(r.precedence_order(), vec![15, 11, 14, 12, 16, 13, 10]);
    }

    #[test]
    fn hundred_thousand_routes() {
        let mut b = RouterBuilder::new();
        for i in 0..100_000u32 {
            let key = match i % 3 {
                0 => format!("GET /svc{i}/items/{{id}}"),
                1 => format!("POST /{{tenant}}/svc{i}/items"),
                _ => format!("ANY /static/svc{i}/{{rest+}}"),
            };
            if let Err(e) = b.add(None, "", &key, i) {
                panic!("{e}");
            }
        }
        let r = match b.build() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.len(), 100_000);
        for i in (0..100_000u32).step_by(997) {
            let (method, path, want) = match i % 3 {
                0 => ("GET", format!("/svc{i}/items/42"), vec![("id", "42")]),
                1 => (
                    "POST",
                    format!("/acme/svc{i}/items"),
                    vec![("tenant", "acme")],
                ),
                _ => (
                    "PUT",
                    format!("/static/svc{i}/a//b/"),
                    vec![("rest", "a//b")],
                ),
            };
            let m = get(&r, method, &path);
            assert_eq!(m.as_ref().map(|m| m.route_id), Some(i), "{path}");
            assert_eq!(m.map(|m| m.params), Some(params(&want)), "{path}");
        }
        assert_eq!(id(&r, "GET", "/svc100000/items/1"), None);
        assert_eq!(id(&r, "DELETE", "/svc0/items/1"), None);
        assert_eq!(r.precedence_order().len(), 100_000);
    }
}
