//! What of an upstream's response head reaches the client, for an answer relayed whole.
//!
//! Hop-by-hop headers (and those the upstream's Connection header names) belong to the upstream
//! connection; Content-Length is written for the body actually sent; a header the request's own
//! stages set replaces the upstream's. The rest is relayed as received, never decoded into a
//! header map and serialized again. Every proxied answer passes here, with one pass per header;
//! in Python that loop cost about 1 200 instructions per header.

use crate::hop::{connection_values, is_hop_by_hop};

/// An answer's relayed header lines, with what the response writer needs to know about them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Relayed {
    /// `Name: value\r\n` for each relayed header but Vary.
    pub lines: Vec<u8>,
    /// The Vary values joined by ", " (a cache needs them apart from the lines), if any.
    pub vary: Option<Vec<u8>>,
    pub has_content_type: bool,
    pub has_server: bool,
    pub has_date: bool,
}

/// The relayed part of an upstream answer's `headers`, given the names of the headers the
/// request's own stages set (compared ignoring ASCII case).
pub fn relayed_head<N: AsRef<[u8]>>(headers: &[(&[u8], &[u8])], own_names: &[N]) -> Relayed {
    let connection = connection_values(headers);
    let mut relayed = Relayed {
        lines: Vec::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum()),
        ..Relayed::default()
    };
    for &(name, value) in headers {
        if is_hop_by_hop(name, &connection)
            || name.eq_ignore_ascii_case(b"content-length")
            || own_names
                .iter()
                .any(|own| name.eq_ignore_ascii_case(own.as_ref()))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"vary") {
            match relayed.vary.as_mut() {
                Some(vary) => {
                    vary.extend_from_slice(b", ");
                    vary.extend_from_slice(value);
                }
                None => relayed.vary = Some(value.to_vec()),
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            relayed.has_content_type = true;
        } else if name.eq_ignore_ascii_case(b"server") {
            relayed.has_server = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            relayed.has_date = true;
        }
        relayed.lines.extend_from_slice(name);
        relayed.lines.extend_from_slice(b": ");
        relayed.lines.extend_from_slice(value);
        relayed.lines.extend_from_slice(b"\r\n");
    }
    relayed
}

/// Whether the answer's body length is known from its head (Content-Length, or chunked
/// Transfer-Encoding); otherwise the body runs until the upstream closes the connection.
pub fn is_framed(headers: &[(&[u8], &[u8])]) -> bool {
    headers.iter().any(|&(name, value)| {
        name.eq_ignore_ascii_case(b"content-length")
            || (name.eq_ignore_ascii_case(b"transfer-encoding")
                && value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [&[u8]; 0] = [];

    #[test]
    fn a_plain_answer_is_relayed_as_it_came_without_its_length() {
        let head: &[(&[u8], &[u8])] = &[
            (b"Server", b"nginx"),
            (b"Date", b"Thu, 26 Nov 2026 13:00:00 GMT"),
            (b"Content-Type", b"application/json"),
            (b"Content-Length", b"40"),
            (b"Connection", b"keep-alive"),
        ];
        let relayed = relayed_head(head, &NONE);
        assert_eq!(
            relayed.lines,
            b"Server: nginx\r\nDate: Thu, 26 Nov 2026 13:00:00 GMT\r\n\
              Content-Type: application/json\r\n"
                .to_vec()
        );
        assert!(relayed.has_content_type && relayed.has_server && relayed.has_date);
        assert_eq!(relayed.vary, None);
    }

    #[test]
    fn hop_by_hop_named_and_own_headers_stay_behind() {
        let head: &[(&[u8], &[u8])] = &[
            (b"Connection", b"close, X-Internal"),
            (b"x-internal", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Request-Id", b"upstream's"),
            (b"ETag", b"\"v1\""),
        ];
        let relayed = relayed_head(head, &[b"x-request-id"]);
        assert_eq!(relayed.lines, b"ETag: \"v1\"\r\n".to_vec());
        assert!(!relayed.has_content_type && !relayed.has_server && !relayed.has_date);
    }

    #[test]
    fn vary_values_are_joined_apart_from_the_lines() {
        let head: &[(&[u8], &[u8])] = &[(b"Vary", b"Accept"), (b"A", b"1"), (b"vary", b"Origin")];
        let relayed = relayed_head(head, &NONE);
        assert_eq!(relayed.lines, b"A: 1\r\n".to_vec());
        assert_eq!(relayed.vary, Some(b"Accept, Origin".to_vec()));
    }

    #[test]
    fn framing_comes_from_a_length_or_chunked_coding() {
        assert!(is_framed(&[(b"content-length", b"0")]));
        assert!(is_framed(&[(b"Transfer-Encoding", b"gzip, Chunked")]));
        assert!(!is_framed(&[(b"Transfer-Encoding", b"gzip")]));
        assert!(!is_framed(&[(b"Server", b"x")]));
    }
}
