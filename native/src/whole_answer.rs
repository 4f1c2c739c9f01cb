//! An upstream's answer that arrived whole in one read, taken apart in one call.
//!
//! The usual proxied answer (a head, a Content-Length body, nothing after it) comes in one read
//! from the socket. Parsed by callbacks, its status, every header, its body and its end each
//! cost a call into Python; here the head is parsed (httparse), the relayed header lines are
//! built (`upstream_head::relayed_head`) and the body is cut out in one pass. Anything unusual
//! (an incomplete or malformed head, an interim or bodiless status, chunked or unframed bodies,
//! bytes after the body, a bare LF, a head too large) is left to the callback parser, which
//! knows every rule: this only takes answers whose meaning no parser could read otherwise.

use crate::hop::{plain_line_ends, trim};
use crate::upstream_head::{relayed_head, Relayed};

/// More header lines than this go the callback parser's way.
const MAX_HEADERS: usize = 64;

/// An answer taken apart: what the response writer needs to relay it.
#[derive(Debug, PartialEq, Eq)]
pub struct WholeAnswer<'a> {
    pub status: u16,
    /// The reason phrase as sent (possibly empty).
    pub reason: &'a [u8],
    pub relayed: Relayed,
    pub body: &'a [u8],
    /// Whether the upstream keeps the connection open after this answer.
    pub keep_alive: bool,
}

/// `data` as one whole answer with a Content-Length body, or None when it is anything else.
/// `own_names` are the headers the request's stages set (they replace the upstream's);
/// `max_head` bounds the header block (name, value and four bytes per line).
pub fn whole_answer<'a, N: AsRef<[u8]>>(
    data: &'a [u8],
    own_names: &[N],
    max_head: usize,
) -> Option<WholeAnswer<'a>> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let head_len = match response.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    let status = response.code?;
    if !(200..=599).contains(&status) || status == 204 || status == 304 {
        return None;
    }
    let version = response.version?;
    let head = &data[..head_len];
    if !plain_line_ends(head) {
        return None;
    }
    let headers: Vec<(&[u8], &[u8])> = response
        .headers
        .iter()
        .map(|h| (h.name.as_bytes(), h.value))
        .collect();
    if headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum::<usize>()
        > max_head
    {
        return None;
    }
    let mut length: Option<usize> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    for &(name, value) in &headers {
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() || value.is_empty() || value.len() > 18 {
                return None;
            }
            if !value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let mut n: usize = 0;
            for &digit in value {
                n = n.checked_mul(10)?.checked_add(usize::from(digit - b'0'))?;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        }
    }
    let length = length?;
    if data.len() - head_len != length {
        return None;
    }
    let keep_alive = !close && (version == 1 || keep_alive_token);
    let status_line_end = head.windows(2).position(|w| w == b"\r\n")?;
    // "HTTP/1.x NNN" then, after a space, the reason.
    let reason = head.get(13..status_line_end).unwrap_or(&[]);
    Some(WholeAnswer {
        status,
        reason,
        relayed: relayed_head(&headers, own_names),
        body: &data[head_len..],
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [&str; 0] = [];

    #[test]
    fn a_plain_answer_is_taken_apart() {
        let data = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";
        let got = whole_answer(data, &NONE, 65536).expect("whole");
        assert_eq!(got.status, 200);
        assert_eq!(got.reason, b"OK");
        assert_eq!(got.body, b"hello");
        assert!(got.keep_alive);
        assert_eq!(
            got.relayed.lines,
            b"Server: nginx\r\nContent-Type: text/plain\r\n".to_vec()
        );
        assert!(got.relayed.has_content_type && got.relayed.has_server);
    }

    #[test]
    fn own_names_replace_the_upstreams() {
        let data = b"HTTP/1.1 201 Created\r\nX-Request-Id: up\r\nContent-Length: 0\r\n\r\n";
        let got = whole_answer(data, &["x-request-id"], 65536).expect("whole");
        assert_eq!(got.status, 201);
        assert_eq!(got.reason, b"Created");
        assert!(got.relayed.lines.is_empty());
        assert!(got.body.is_empty());
    }

    #[test]
    fn connection_tokens_decide_keep_alive() {
        let close = b"HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n";
        assert!(!whole_answer(close, &NONE, 65536).expect("whole").keep_alive);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(!whole_answer(old, &NONE, 65536).expect("whole").keep_alive);
        let old_kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(
            whole_answer(old_kept, &NONE, 65536)
                .expect("whole")
                .keep_alive
        );
    }

    #[test]
    fn anything_unusual_is_left_to_the_callback_parser() {
        let cases: [&[u8]; 13] = [
            b"HTTP/1.1 200 OK\r\nX-Trailing: a \r\nContent-Length: 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello!",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
            b"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nBad Name: x\r\n\r\nx",
        ];
        for data in cases {
            assert!(
                whole_answer(data, &NONE, 65536).is_none(),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn a_head_over_the_bound_is_left_alone() {
        let data = b"HTTP/1.1 200 OK\r\nX-Big: 0123456789\r\nContent-Length: 0\r\n\r\n";
        assert!(whole_answer(data, &NONE, 20).is_none());
        assert!(whole_answer(data, &NONE, 65536).is_some());
    }

    #[test]
    fn a_missing_reason_is_empty() {
        let data = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(whole_answer(data, &NONE, 65536).expect("whole").reason, b"");
        // A blank after the status is llhttp's to read.
        assert!(
            whole_answer(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", &NONE, 65536).is_none()
        );
    }
}
