//! Named parameters of a raw query string with nothing to decode (no `%`, no `+`), read as
//! Python's `parse_qsl(raw, keep_blank_values=True)` reads them: pieces split on `&`, empty
//! pieces skipped, a piece without `=` has the value "". A query string that needs decoding is
//! left to the caller (Python's own percent-decoding is the reference there).

use std::fmt::Write;

/// Whether `raw` has nothing to decode, so that its names and values are the text as sent.
pub fn is_plain(raw: &str) -> bool {
    !raw.bytes().any(|b| b == b'%' || b == b'+')
}

/// The values of `name` in `raw` (a plain query string), in the order sent.
pub fn values<'a>(raw: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    raw.split('&')
        .filter(|piece| !piece.is_empty())
        .filter_map(move |piece| {
            let (found, value) = piece.split_once('=').unwrap_or((piece, ""));
            (found == name).then_some(value)
        })
}

/// A cache key's part from the values of `names` (in their order) in `raw`: for each name,
/// `{len}:{value},` per value, then `;`, where len counts characters (Python's `len`).
pub fn key_part(raw: &str, names: &[&str]) -> String {
    let mut out = String::with_capacity(raw.len() + 4 * names.len());
    for name in names {
        for value in values(raw, name) {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}:{},", value.chars().count(), value);
        }
        out.push(';');
    }
    out
}

/// Whether `raw` (a plain query string) has the parameter `name`, with or without a value.
pub fn has(raw: &str, name: &str) -> bool {
    values(raw, name).next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_means_nothing_to_decode() {
        assert!(is_plain("lang=en&n=1"));
        assert!(is_plain(""));
        assert!(!is_plain("a=%41"));
        assert!(!is_plain("a=b+c"));
    }

    #[test]
    fn values_in_order_blank_and_bare_pieces_kept_empty_pieces_skipped() {
        let raw = "lang=en&&n=1&lang=fr&blank&empty=&x=a=b&langs=no";
        assert_eq!(values(raw, "lang").collect::<Vec<_>>(), ["en", "fr"]);
        assert_eq!(values(raw, "blank").collect::<Vec<_>>(), [""]);
        assert_eq!(values(raw, "empty").collect::<Vec<_>>(), [""]);
        assert_eq!(values(raw, "x").collect::<Vec<_>>(), ["a=b"]);
        assert_eq!(values(raw, "lan").count(), 0);
        assert!(values("=v", "").eq(["v"]));
        assert!(has(raw, "n") && !has(raw, "no"));
    }

    #[test]
    fn key_part_counts_characters() {
        assert_eq!(
            key_part("lang=en&n=x&lang=é", &["lang", "n", "z"]),
            "2:en,1:é,;1:x,;;"
        );
        assert_eq!(key_part("", &["a"]), ";");
        assert_eq!(key_part("a", &["a"]), "0:,;");
    }
}
