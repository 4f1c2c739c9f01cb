//! A client's bodiless request that arrived whole in one read, taken apart in one call.
//!
//! The connection's callback parser (llhttp, through httptools) calls into Python for the start
//! of every message, its target, each header line, the end of its head and its end. The usual
//! request (a GET with a handful of headers, alone in its read) is parsed here instead, with the
//! same filtering the callbacks do. This is a gate, not a second parser to trust: anything but
//! the plainest shape (a body or any framing header, Expect, Upgrade, an absolute-form target,
//! a method llhttp does not know, a bare LF, folded lines, a missing or repeated Host, a head
//! over the limits, bytes after the head) is left to the callback parser, which refuses or
//! reads it by every rule. A request taken here is one llhttp reads the same way.

use crate::hop::{plain_line_ends, trim};

/// Header lines beyond this are left to the callback parser.
const MAX_HEADERS: usize = 100;

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// The connection's rules for header lines (pygw.http1.ConnectionLimits and the peer's trust).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_header_bytes: usize,
    pub max_header_count: usize,
    pub allow_underscores: bool,
    /// A trusted proxy may say who the client is (Forwarded, X-Real-IP); others may not.
    pub trusted_peer: bool,
}

/// A request taken apart, with the headers the connection notes for the dispatcher.
#[derive(Debug, PartialEq, Eq)]
pub struct SimpleRequest<'a> {
    pub method: &'a str,
    pub target: &'a [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// As received, in order, less the lines the connection drops.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub host: &'a [u8],
    pub request_id: Option<&'a [u8]>,
    pub traceparent: Option<&'a [u8]>,
    pub amzn_trace: Option<&'a [u8]>,
    pub keep_alive: bool,
}

/// `data` as one whole bodiless request of the plainest shape, or None.
pub fn simple_request<'a>(data: &'a [u8], rules: &Rules) -> Option<SimpleRequest<'a>> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    match request.parse(data) {
        Ok(httparse::Status::Complete(len)) if len == data.len() => {}
        _ => return None,
    }
    if !plain_line_ends(data) {
        return None;
    }
    let method = request.method?;
    if !METHODS.contains(&method) {
        return None;
    }
    let target = request.path?.as_bytes();
    if target.first() != Some(&b'/')
        || target.len() > rules.max_header_bytes
        || !target.iter().all(|&b| (0x21..0x7f).contains(&b))
    {
        return None;
    }
    let minor = request.version?;
    if request.headers.len() > rules.max_header_count {
        return None;
    }
    let mut header_bytes = 0usize;
    let mut headers = Vec::with_capacity(request.headers.len());
    let mut host: Option<&[u8]> = None;
    let mut request_id = None;
    let mut traceparent = None;
    let mut amzn_trace = None;
    let mut close = false;
    let mut keep_alive_token = false;
    for header in request.headers.iter() {
        let name = header.name.as_bytes();
        let value = header.value;
        header_bytes += name.len() + value.len() + 4;
        if header_bytes > rules.max_header_bytes {
            return None;
        }
        let named = |wanted: &[u8]| name.eq_ignore_ascii_case(wanted);
        if named(b"transfer-encoding")
            || named(b"content-length")
            || named(b"expect")
            || named(b"upgrade")
        {
            return None;
        }
        if named(b"host") {
            if host.is_some() {
                return None;
            }
            host = Some(value);
        } else if named(b"x-request-id") {
            request_id = Some(value);
        } else if named(b"traceparent") {
            traceparent = Some(value);
        } else if named(b"x-amzn-trace-id") {
            amzn_trace = Some(value);
        } else if named(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return None;
                }
            }
        } else if name.contains(&b'_') && !rules.allow_underscores {
            // As nginx does: a backend may read Content_Length as Content-Length.
            continue;
        } else if (named(b"forwarded") || named(b"x-real-ip")) && !rules.trusted_peer {
            continue;
        }
        headers.push((name, value));
    }
    let host = host?;
    Some(SimpleRequest {
        method,
        target,
        minor,
        headers,
        host,
        request_id,
        traceparent,
        amzn_trace,
        keep_alive: !close && (minor == 1 || keep_alive_token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        max_header_bytes: 16_384,
        max_header_count: 100,
        allow_underscores: false,
        trusted_peer: false,
    };

    #[test]
    fn a_plain_get_is_taken_apart() {
        let data = b"GET /items/1?x=2 HTTP/1.1\r\nHost: gw\r\nX-Request-Id: abc\r\ntraceparent: t\r\nAccept: */*\r\n\r\n";
        let got = simple_request(data, &RULES).expect("simple");
        assert_eq!(got.method, "GET");
        assert_eq!(got.target, b"/items/1?x=2");
        assert_eq!(got.minor, 1);
        assert_eq!(got.host, b"gw");
        assert_eq!(got.request_id, Some(&b"abc"[..]));
        assert_eq!(got.traceparent, Some(&b"t"[..]));
        assert_eq!(got.amzn_trace, None);
        assert!(got.keep_alive);
        assert_eq!(got.headers.len(), 4);
    }

    #[test]
    fn dropped_lines_are_the_callbacks_ones() {
        let data = b"GET / HTTP/1.1\r\nHost: gw\r\nX_Secret: 1\r\nX-Real-IP: 1.2.3.4\r\nForwarded: for=x\r\n\r\n";
        let got = simple_request(data, &RULES).expect("simple");
        assert_eq!(got.headers, vec![(&b"Host"[..], &b"gw"[..])]);
        let trusting = Rules {
            allow_underscores: true,
            trusted_peer: true,
            ..RULES
        };
        assert_eq!(
            simple_request(data, &trusting)
                .expect("simple")
                .headers
                .len(),
            4
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let old = b"GET / HTTP/1.0\r\nHost: gw\r\n\r\n";
        assert!(!simple_request(old, &RULES).expect("simple").keep_alive);
        let old_kept = b"GET / HTTP/1.0\r\nHost: gw\r\nConnection: Keep-Alive\r\n\r\n";
        assert!(simple_request(old_kept, &RULES).expect("simple").keep_alive);
        let closing = b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: foo, close\r\n\r\n";
        assert!(!simple_request(closing, &RULES).expect("simple").keep_alive);
    }

    #[test]
    fn anything_but_the_plainest_shape_is_left_to_the_callback_parser() {
        let cases: [&[u8]; 20] = [
            b"GET / HTTP/1.1\r\nHost: gw\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\r\n\r\nGET / HTTP/1.1\r\nHost: gw\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: upgrade\r\n\r\n",
            b"GET http://gw/ HTTP/1.1\r\nHost: gw\r\n\r\n",
            b"FOO / HTTP/1.1\r\nHost: gw\r\n\r\n",
            b"GET / HTTP/1.1\nHost: gw\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\n\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\r\nX-Folded: a\r\n b\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: gw\r\n\r\n",
            b"GET /\x80 HTTP/1.1\r\nHost: gw\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: gw\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : gw\r\n\r\n",
        ];
        for data in cases {
            assert!(
                simple_request(data, &RULES).is_none(),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn leading_blanks_are_trimmed_and_trailing_ones_left_to_llhttp() {
        let data = b"GET / HTTP/1.1\r\nHost:  gw\r\nX-A:\t a b\r\n\r\n";
        let got = simple_request(data, &RULES).expect("simple");
        assert_eq!(
            got.headers,
            vec![(&b"Host"[..], &b"gw"[..]), (&b"X-A"[..], &b"a b"[..])]
        );
        // llhttp keeps a value's trailing blanks, httparse drops them.
        assert!(simple_request(b"GET / HTTP/1.1\r\nHost: gw \r\n\r\n", &RULES).is_none());
        assert!(simple_request(b"GET / HTTP/1.1\r\nHost: gw\t\r\n\r\n", &RULES).is_none());
    }

    #[test]
    fn limits_leave_requests_to_the_callback_parser() {
        let data = b"GET / HTTP/1.1\r\nHost: gw\r\nX-A: 0123456789\r\n\r\n";
        let tight = Rules {
            max_header_bytes: 20,
            ..RULES
        };
        assert!(simple_request(data, &tight).is_none());
        let few = Rules {
            max_header_count: 1,
            ..RULES
        };
        assert!(simple_request(data, &few).is_none());
        assert!(simple_request(data, &RULES).is_some());
    }
}
