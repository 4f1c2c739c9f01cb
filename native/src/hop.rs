//! Hop-by-hop headers (RFC 9110 section 7.6.1): they describe one connection, so a proxy never
//! passes them on, in either direction, and neither does it pass the headers a message's
//! Connection header names.

/// Always hop-by-hop: RFC 9110's list, plus the non-standard Proxy-Connection some clients still
/// send.
pub const HOP_BY_HOP: [&[u8]; 9] = [
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"proxy-connection",
];

/// `text` without the leading and trailing bytes `blank` accepts.
pub fn trim_matching(text: &[u8], blank: impl Fn(u8) -> bool) -> &[u8] {
    let start = text.iter().position(|&b| !blank(b)).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|&b| !blank(b))
        .map_or(start, |i| i + 1);
    &text[start..end]
}

/// Python's bytes.strip(): ASCII whitespace, vertical tab and form feed included.
pub fn trim(token: &[u8]) -> &[u8] {
    trim_matching(token, |b| {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
    })
}

/// Whether every line of a message head ends in CRLF with no blank before it. httparse takes
/// a bare LF as a line end and trims the blanks that end a header value; llhttp refuses the
/// one and keeps the other, so a head with either is left to it.
pub fn plain_line_ends(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head)
        .all(|i| i >= 1 && head[i - 1] == b'\r' && (i < 2 || !matches!(head[i - 2], b' ' | b'\t')))
}

/// The values of a message's Connection headers.
pub fn connection_values<'a>(headers: &[(&'a [u8], &'a [u8])]) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .map(|&(_, value)| value)
        .collect()
}

/// Whether `name` is hop-by-hop for a message whose Connection headers hold `connection`: on
/// RFC 9110's list, or named by one of them (compared ignoring ASCII case).
pub fn is_hop_by_hop(name: &[u8], connection: &[&[u8]]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
        || connection.iter().any(|value| {
            value
                .split(|&b| b == b',')
                .map(trim)
                .any(|token| !token.is_empty() && token.eq_ignore_ascii_case(name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_and_connection_named_headers_are_hop_by_hop() {
        let connection: [&[u8]; 2] = [b"keep-alive, X-Secret", b" , also-this "];
        for name in [
            &b"TE"[..],
            b"Upgrade",
            b"x-secret",
            b"Also-This",
            b"connection",
        ] {
            assert!(is_hop_by_hop(name, &connection), "{name:?}");
        }
        assert!(!is_hop_by_hop(b"X-Kept", &connection));
        assert!(!is_hop_by_hop(b"", &connection));
    }

    #[test]
    fn trimming_stops_at_the_first_kept_byte_from_each_end() {
        assert_eq!(trim(b" \t\x0bab c\r\n"), b"ab c");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim_matching(b"xxaxx", |b| b == b'x'), b"a");
    }
}
