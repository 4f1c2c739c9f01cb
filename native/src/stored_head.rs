//! Which header lines of an upstream's answer a response-cache entry keeps.
//!
//! Framing, date, age and connection headers are never stored (a hit sets its own), nor the
//! headers the request's own stages set (theirs replace the upstream's, as on a miss). A
//! Set-Cookie, or a Cache-Control of no-store, private or no-cache, means the answer must not be
//! stored at all. Every stored miss runs this on its head; done in Python, with a memo to spare
//! the filtering, it was about a tenth of a miss's cost in the gateway.

use crate::hop::{trim, trim_matching};

/// Never kept in an entry: recomputed for every answer, or per connection.
const NOT_STORED: [&[u8]; 7] = [
    b"content-length",
    b"transfer-encoding",
    b"date",
    b"age",
    b"connection",
    b"keep-alive",
    b"x-cache",
];
/// Cache-Control directives that forbid storing the answer.
const NEVER_STORE: [&[u8]; 3] = [b"no-store", b"private", b"no-cache"];

/// The pieces of `data` between CRLFs (a lone CR or LF stays inside its piece).
struct CrlfLines<'a>(&'a [u8]);

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.windows(2).position(|pair| pair == b"\r\n") {
            Some(end) => {
                let line = &self.0[..end];
                self.0 = &self.0[end + 2..];
                Some(line)
            }
            None => Some(std::mem::take(&mut self.0)),
        }
    }
}

/// `trim` for a header value read as Latin-1 text: Python's str.strip() also takes the
/// information separators (0x1C-0x1F), NEL (0x85) and the no-break space (0xA0).
fn trim_text(text: &[u8]) -> &[u8] {
    trim_matching(text, |b| {
        b.is_ascii_whitespace() || matches!(b, 0x0b | 0x1c..=0x1f | 0x85 | 0xa0)
    })
}

/// The answer may not be stored (Set-Cookie, or Cache-Control no-store, private or no-cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotStorable;

/// The lines an entry keeps, each ending in CRLF (empty when none is kept), and how many
/// lines that is plus one (the cache charges a fixed overhead per line, and one for the head).
/// `own_names` are the names of the headers the request's stages set, compared ignoring ASCII
/// case.
pub fn stored_lines<N: AsRef<[u8]>>(
    lines: &[u8],
    own_names: &[N],
) -> Result<(Vec<u8>, usize), NotStorable> {
    let mut kept = Vec::with_capacity(lines.len());
    let mut count = 1;
    for line in CrlfLines(lines) {
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':');
        let name = trim(colon.map_or(line, |at| &line[..at]));
        if NOT_STORED
            .iter()
            .any(|known| name.eq_ignore_ascii_case(known))
            || own_names
                .iter()
                .any(|own| name.eq_ignore_ascii_case(own.as_ref()))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"set-cookie") {
            return Err(NotStorable);
        }
        if name.eq_ignore_ascii_case(b"cache-control") {
            let value = colon.map_or(&b""[..], |at| &line[at + 1..]);
            let forbids = value.split(|&b| b == b',').any(|token| {
                let directive = token.split(|&b| b == b'=').next().unwrap_or(token);
                NEVER_STORE
                    .iter()
                    .any(|never| trim_text(directive).eq_ignore_ascii_case(never))
            });
            if forbids {
                return Err(NotStorable);
            }
        }
        kept.extend_from_slice(line);
        kept.extend_from_slice(b"\r\n");
        count += 1;
    }
    Ok((kept, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [&[u8]; 0] = [];

    fn kept(lines: &[u8], own: &[&str]) -> Result<(String, usize), NotStorable> {
        let own: Vec<&[u8]> = own.iter().map(|name| name.as_bytes()).collect();
        stored_lines(lines, &own).map(|(out, n)| (String::from_utf8(out).unwrap(), n))
    }

    #[test]
    fn framing_date_and_connection_lines_are_left_out() {
        let head = b"Server: up\r\nDate: Thu, 26 Nov 2026 13:00:00 GMT\r\nContent-Length: 9\r\n\
                     Connection: keep-alive\r\nAge: 4\r\nX-Cache: Miss\r\nETag: \"v1\"\r\n";
        assert_eq!(
            kept(head, &[]).unwrap(),
            ("Server: up\r\nETag: \"v1\"\r\n".into(), 3)
        );
    }

    #[test]
    fn the_requests_own_headers_are_left_out_in_any_case() {
        let head = b"x-request-id: up\r\nRATELIMIT-LIMIT: 9\r\nContent-Type: a/b\r\n";
        let (out, n) = kept(head, &["X-Request-Id", "RateLimit-Limit", "Age"]).unwrap();
        assert_eq!(out, "Content-Type: a/b\r\n");
        assert_eq!(n, 2);
    }

    #[test]
    fn cookies_and_forbidding_cache_control_refuse_the_answer() {
        assert_eq!(kept(b"A: 1\r\nSet-Cookie: s=1\r\n", &[]), Err(NotStorable));
        for value in [
            "no-store",
            "max-age=5, Private",
            " no-cache=\"x\"",
            "NO-STORE",
        ] {
            let head = format!("Cache-Control: {value}\r\n");
            assert_eq!(kept(head.as_bytes(), &[]), Err(NotStorable), "{value}");
        }
        let allowed = kept(b"Cache-Control: public, max-age=60\r\n", &[]).unwrap();
        assert_eq!(allowed, ("Cache-Control: public, max-age=60\r\n".into(), 2));
    }

    #[test]
    fn an_empty_head_keeps_nothing() {
        assert_eq!(stored_lines(b"", &NONE), Ok((Vec::new(), 1)));
        assert_eq!(stored_lines(b"\r\n\r\n", &NONE), Ok((Vec::new(), 1)));
    }
}
