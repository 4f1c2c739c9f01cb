//! Request ids shaped like version-4 UUIDs: a random per-process prefix (drawn by the caller from
//! the OS) followed by a 48-bit sequence, so an id costs a counter step and a few byte writes
//! instead of a read of the OS random source.

pub const PREFIX_LEN: usize = 24;
pub const ID_LEN: usize = 36;
const SEQUENCE_MASK: u64 = 0xFFFF_FFFF_FFFF;
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The prefix as bytes when it is `xxxxxxxx-xxxx-4xxx-Vxxx-` in lower-case hex, V one of 8, 9,
/// a, b (RFC 9562's version and variant), so every id made from it is a well-formed UUID.
pub fn parse_prefix(prefix: &str) -> Result<[u8; PREFIX_LEN], String> {
    let bytes: [u8; PREFIX_LEN] = prefix
        .as_bytes()
        .try_into()
        .map_err(|_| format!("a request id prefix has {PREFIX_LEN} characters, got {prefix:?}"))?;
    let shaped = bytes.iter().enumerate().all(|(i, &b)| match i {
        8 | 13 | 18 | 23 => b == b'-',
        14 => b == b'4',
        19 => matches!(b, b'8' | b'9' | b'a' | b'b'),
        _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
    });
    if !shaped {
        return Err(format!(
            "a request id prefix looks like 'xxxxxxxx-xxxx-4xxx-8xxx-' (lower-case hex), got {prefix:?}"
        ));
    }
    Ok(bytes)
}

/// The id for `sequence` (its low 48 bits, as 12 lower-case hex digits) after `prefix`.
pub fn format_id(prefix: &[u8; PREFIX_LEN], sequence: u64) -> [u8; ID_LEN] {
    let mut id = [0u8; ID_LEN];
    id[..PREFIX_LEN].copy_from_slice(prefix);
    let mut rest = sequence & SEQUENCE_MASK;
    for slot in id[PREFIX_LEN..].iter_mut().rev() {
        *slot = HEX[(rest & 0xF) as usize];
        rest >>= 4;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "0a1b2c3d-4e5f-4a6b-8c7d-";

    #[test]
    fn ids_are_the_prefix_and_twelve_hex_digits() {
        let prefix = parse_prefix(PREFIX).unwrap();
        assert_eq!(
            &format_id(&prefix, 0),
            b"0a1b2c3d-4e5f-4a6b-8c7d-000000000000"
        );
        assert_eq!(
            &format_id(&prefix, 0xabc),
            b"0a1b2c3d-4e5f-4a6b-8c7d-000000000abc"
        );
        // The sequence wraps at 48 bits rather than growing the id.
        assert_eq!(
            &format_id(&prefix, 1 << 48),
            b"0a1b2c3d-4e5f-4a6b-8c7d-000000000000"
        );
        assert_eq!(
            &format_id(&prefix, u64::MAX),
            b"0a1b2c3d-4e5f-4a6b-8c7d-ffffffffffff"
        );
    }

    #[test]
    fn prefixes_that_would_not_make_a_uuid_are_refused() {
        for bad in [
            "",
            "0a1b2c3d-4e5f-4a6b-8c7d",
            "0a1b2c3d-4e5f-4a6b-8c7d--",
            "0A1B2C3D-4e5f-4a6b-8c7d-",
            "0a1b2c3d-4e5f-5a6b-8c7d-",
            "0a1b2c3d-4e5f-4a6b-cc7d-",
            "0a1b2c3d_4e5f-4a6b-8c7d-",
            "0a1b2c3d-4e5f-4a6b-8c7dé",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
