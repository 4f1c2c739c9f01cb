//! The header block of a proxied request: the client's headers as the upstream should see them,
//! then the X-Forwarded-* headers, the request id and the body framing.
//!
//! Every header of every proxied request passes through here, and a browser sends ten or more:
//! done in Python this cost about 1 500 instructions per header (bench/instructions.py), here
//! about a tenth of that.

use crate::hop::{connection_values, is_hop_by_hop, HOP_BY_HOP};

/// How the request body follows the head.
pub const BODY_NONE: u8 = 0;
/// The client's body, framed by its own Content-Length (forwarded as it came).
pub const BODY_LENGTH: u8 = 1;
/// The client's body, re-chunked (Transfer-Encoding is hop-by-hop, so it is written anew).
pub const BODY_CHUNKED: u8 = 2;
/// Bytes a stage read or produced, framed by a Content-Length written here.
pub const BODY_BYTES: u8 = 3;

/// Client headers never forwarded as they came, beside the hop-by-hop ones: those written below,
/// and Expect (a 100-continue exchange is not relayed, so the upstream must not wait for one).
const GATEWAY_WRITTEN: [&[u8]; 6] = [
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
    b"expect",
];

/// What the gateway adds to a request's head.
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    /// The client's address, appended to any X-Forwarded-For the client sent.
    pub client_ip: &'a [u8],
    pub https: bool,
    pub request_id: &'a [u8],
    /// Set when a stage consumed the client's body: its bytes are sent with their own length,
    /// and the client's Content-Length is dropped.
    pub body_len: Option<usize>,
    /// With `body_len`: the body's type, replacing the client's Content-Type.
    pub content_type: Option<&'a [u8]>,
    /// Set to forward the request's trace: the client's traceparent and X-Amzn-Trace-Id are
    /// replaced by the same trace with the gateway's span as the parent.
    pub trace: Option<Trace<'a>>,
}

/// A trace as forwarded: W3C's 32 hex digits of trace id (X-Ray's root is the same 128 bits,
/// spelled `1-` 8 digits `-` 24 digits), the gateway's 16-digit span id, the sampled flag.
#[derive(Debug, Clone, Copy)]
pub struct Trace<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub sampled: bool,
}

/// Client headers a forwarded trace replaces.
const TRACE_HEADERS: [&[u8]; 2] = [b"traceparent", b"x-amzn-trace-id"];

/// The request head after the request line and Host: `\r\nName: value` for each forwarded client
/// header, then the added ones and the closing blank line; with the body mode (`BODY_*`).
pub fn request_head_tail(headers: &[(&[u8], &[u8])], added: &Added<'_>) -> (Vec<u8>, u8) {
    let connection = connection_values(headers);
    // The trace lines are about 140 bytes: counted, so adding them never grows the buffer.
    let trace_len = added
        .trace
        .map_or(0, |t| 2 * t.trace_id.len() + 2 * t.span_id.len() + 80);
    let mut out =
        Vec::with_capacity(header_block_size(headers) + added.request_id.len() + 160 + trace_len);
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut client_host: Option<&[u8]> = None;
    let mut body_mode = BODY_NONE;
    for &(name, value) in headers {
        if HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
            || GATEWAY_WRITTEN
                .iter()
                .any(|known| name.eq_ignore_ascii_case(known))
        {
            if name.eq_ignore_ascii_case(b"x-forwarded-for") {
                match forwarded_for.as_mut() {
                    Some(list) => {
                        list.extend_from_slice(b", ");
                        list.extend_from_slice(value);
                    }
                    None => forwarded_for = Some(value.to_vec()),
                }
            } else if name.eq_ignore_ascii_case(b"host") {
                client_host = Some(value);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                body_mode = BODY_CHUNKED;
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if added.body_len.is_some() {
                continue;
            }
            if body_mode == BODY_NONE {
                body_mode = BODY_LENGTH;
            }
        } else if (!connection.is_empty() && is_hop_by_hop(name, &connection))
            || (added.content_type.is_some() && name.eq_ignore_ascii_case(b"content-type"))
            || (added.trace.is_some()
                && TRACE_HEADERS
                    .iter()
                    .any(|known| name.eq_ignore_ascii_case(known)))
        {
            continue;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"\r\nX-Forwarded-For: ");
    if let Some(list) = forwarded_for {
        out.extend_from_slice(&list);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(added.client_ip);
    out.extend_from_slice(if added.https {
        b"\r\nX-Forwarded-Proto: https"
    } else {
        b"\r\nX-Forwarded-Proto: http"
    });
    if let Some(host) = client_host {
        out.extend_from_slice(b"\r\nX-Forwarded-Host: ");
        out.extend_from_slice(host);
    }
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(added.request_id);
    if let Some(trace) = added.trace {
        write_trace(&mut out, &trace);
    }
    if let Some(length) = added.body_len {
        body_mode = BODY_BYTES;
        if let Some(content_type) = added.content_type {
            out.extend_from_slice(b"\r\nContent-Type: ");
            out.extend_from_slice(content_type);
        }
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    } else if body_mode == BODY_CHUNKED {
        out.extend_from_slice(b"\r\nTransfer-Encoding: chunked");
    }
    out.extend_from_slice(b"\r\n\r\n");
    (out, body_mode)
}

/// `traceparent` and `X-Amzn-Trace-Id` naming one trace, with the gateway's span as the parent.
fn write_trace(out: &mut Vec<u8>, trace: &Trace<'_>) {
    let id = trace.trace_id;
    out.extend_from_slice(b"\r\ntraceparent: 00-");
    out.extend_from_slice(id);
    out.push(b'-');
    out.extend_from_slice(trace.span_id);
    out.extend_from_slice(if trace.sampled { b"-01" } else { b"-00" });
    out.extend_from_slice(b"\r\nX-Amzn-Trace-Id: Root=1-");
    let split = id.len().min(8);
    out.extend_from_slice(&id[..split]);
    out.push(b'-');
    out.extend_from_slice(&id[split..]);
    out.extend_from_slice(b";Parent=");
    out.extend_from_slice(trace.span_id);
    out.extend_from_slice(if trace.sampled {
        b";Sampled=1"
    } else {
        b";Sampled=0"
    });
}

/// The size of a request's header block as the limit counts it: each line's name and value,
/// with its `: ` and line end.
pub fn header_block_size(headers: &[(&[u8], &[u8])]) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
}

/// Whether a header `name` as sent is `lower_name` (given lower-cased): `name.lower() ==
/// lower_name` in Python, ASCII letters only folded. A `lower_name` with an upper-case letter
/// never matches, as there.
pub fn is_named(name: &[u8], lower_name: &[u8]) -> bool {
    name.len() == lower_name.len()
        && name
            .iter()
            .zip(lower_name)
            .all(|(sent, lower)| sent.to_ascii_lowercase() == *lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_their_lower_case_form_only() {
        assert!(is_named(b"X-Api-Key", b"x-api-key"));
        assert!(is_named(b"x-api-key", b"x-api-key"));
        assert!(!is_named(b"x-api-key", b"X-Api-Key"));
        assert!(!is_named(b"x-api-keys", b"x-api-key"));
        assert!(!is_named(b"x-api-ke", b"x-api-key"));
        // Only ASCII letters fold: bytes above 0x7f compare as they are.
        assert!(is_named(b"\xc9", b"\xc9"));
        assert!(!is_named(b"\xc9", b"\xe9"));
        assert!(is_named(b"", b""));
    }

    const PLAIN: Added<'static> = Added {
        client_ip: b"10.0.0.7",
        https: false,
        request_id: b"req-1",
        body_len: None,
        content_type: None,
        trace: None,
    };

    fn tail(headers: &[(&[u8], &[u8])], added: &Added<'_>) -> (String, u8) {
        let (out, mode) = request_head_tail(headers, added);
        (String::from_utf8(out).unwrap(), mode)
    }

    #[test]
    fn end_to_end_headers_pass_and_added_ones_follow() {
        let (out, mode) = tail(
            &[
                (b"Host", b"api.example.com"),
                (b"Accept", b"*/*"),
                (b"X-Api-Key", b"k"),
            ],
            &PLAIN,
        );
        assert_eq!(
            out,
            "\r\nAccept: */*\r\nX-Api-Key: k\r\nX-Forwarded-For: 10.0.0.7\
             \r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: api.example.com\
             \r\nx-request-id: req-1\r\n\r\n"
        );
        assert_eq!(mode, BODY_NONE);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_stay_behind() {
        let (out, _) = tail(
            &[
                (b"Connection", b"keep-alive, X-Secret"),
                (b"connection", b" Also-This "),
                (b"x-secret", b"1"),
                (b"Also-This", b"2"),
                (b"Keep-Alive", b"timeout=5"),
                (b"TE", b"trailers"),
                (b"Upgrade", b"h2c"),
                (b"Proxy-Authorization", b"Basic x"),
                (b"Expect", b"100-continue"),
                (b"X-Request-Id", b"forged"),
                (b"X-Forwarded-Proto", b"https"),
                (b"Kept", b"yes"),
            ],
            &PLAIN,
        );
        assert!(
            out.starts_with("\r\nKept: yes\r\nX-Forwarded-For: 10.0.0.7\r\n"),
            "{out}"
        );
        assert!(!out.contains("forged") && !out.contains("secret") && !out.contains("Also"));
        assert!(out.contains("X-Forwarded-Proto: http\r\n"));
    }

    #[test]
    fn forwarded_for_lists_grow_by_the_client_address() {
        let (out, _) = tail(
            &[
                (b"X-Forwarded-For", b"1.1.1.1"),
                (b"x-forwarded-for", b"2.2.2.2"),
            ],
            &Added {
                https: true,
                ..PLAIN
            },
        );
        assert!(out.starts_with(
            "\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.7\r\nX-Forwarded-Proto: https\r\n"
        ));
    }

    #[test]
    fn body_framing_follows_the_client_unless_a_stage_took_the_body() {
        let length: &[(&[u8], &[u8])] = &[(b"Content-Length", b"5"), (b"Content-Type", b"a/b")];
        let (out, mode) = tail(length, &PLAIN);
        assert_eq!(mode, BODY_LENGTH);
        assert!(out.starts_with("\r\nContent-Length: 5\r\nContent-Type: a/b\r\n"));

        let (out, mode) = tail(&[(b"Transfer-Encoding", b"chunked")], &PLAIN);
        assert_eq!(mode, BODY_CHUNKED);
        assert!(out.ends_with("\r\nTransfer-Encoding: chunked\r\n\r\n"));

        let taken = Added {
            body_len: Some(12),
            content_type: Some(b"application/json"),
            ..PLAIN
        };
        let (out, mode) = tail(length, &taken);
        assert_eq!(mode, BODY_BYTES);
        assert!(!out.contains("a/b") && !out.contains("Length: 5"));
        assert!(out.ends_with("\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"));
    }

    #[test]
    fn a_forwarded_trace_replaces_the_clients_trace_headers() {
        let traced = Added {
            trace: Some(Trace {
                trace_id: b"5759e988bd862e3fe1be46a994272793",
                span_id: b"53995c3f42cd8ad8",
                sampled: true,
            }),
            ..PLAIN
        };
        let (out, _) = tail(
            &[
                (b"TraceParent", b"00-old-old-01"),
                (b"X-Amzn-Trace-Id", b"Root=old"),
                (b"tracestate", b"a=b"),
            ],
            &traced,
        );
        assert!(!out.contains("old"), "{out}");
        assert!(out.starts_with("\r\ntracestate: a=b\r\n"), "{out}");
        assert!(out.ends_with(
            "\r\ntraceparent: 00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01\
             \r\nX-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;\
             Parent=53995c3f42cd8ad8;Sampled=1\r\n\r\n"
        ));
        // Without a trace to forward, the client's headers pass as they came.
        let (out, _) = tail(&[(b"traceparent", b"00-kept")], &PLAIN);
        assert!(out.contains("traceparent: 00-kept"));
    }

    #[test]
    fn block_size_counts_each_line_with_its_separators() {
        assert_eq!(header_block_size(&[(b"A", b"bc"), (b"Host", b"")]), 7 + 8);
        assert_eq!(header_block_size(&[]), 0);
    }
}
