//! Per-request response header lines (`Name: value\r\n`), written straight into one buffer.
//!
//! A name or value holding CR or LF would end the line early and let the rest pass as a header
//! of its own (response splitting): such a header is refused, never trimmed.

/// A header name or value held a CR or LF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineBreak;

/// Whether `part` holds CR or LF. Branch-free so that it vectorizes: a header is short and
/// almost never has one, and an early exit costs every byte a branch (byte by byte, this check
/// cost a cache hit's answer, with its eight own headers, about 2 000 instructions).
fn has_line_break(part: &[u8]) -> bool {
    part.iter().fold(0u8, |seen, &b| {
        seen | u8::from(b == b'\r') | u8::from(b == b'\n')
    }) != 0
}

/// Appends `name: value\r\n` to `out`; on a line break `out` is left as it was.
pub fn push_header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Result<(), LineBreak> {
    if has_line_break(name) || has_line_break(value) {
        return Err(LineBreak);
    }
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_each_other_in_order() {
        let mut out = Vec::new();
        push_header_line(&mut out, b"X-Cache", b"Hit").unwrap();
        push_header_line(&mut out, b"Age", b"").unwrap();
        assert_eq!(out, b"X-Cache: Hit\r\nAge: \r\n");
    }

    #[test]
    fn a_line_break_anywhere_is_refused_and_leaves_the_buffer_alone() {
        let mut out = b"A: 1\r\n".to_vec();
        for (name, value) in [
            (&b"X"[..], &b"1\r\nSet-Cookie: a=b"[..]),
            (b"X", b"1\n"),
            (b"X\r", b"1"),
            (b"\nX", b"1"),
        ] {
            assert_eq!(push_header_line(&mut out, name, value), Err(LineBreak));
        }
        assert_eq!(out, b"A: 1\r\n");
    }
}
