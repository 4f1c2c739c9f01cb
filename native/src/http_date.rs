//! The `Date` header line of an answer (RFC 9110 IMF-fixdate), formatted once per second.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
/// `Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n`
pub const LINE_LEN: usize = 37;

fn push_two(out: &mut [u8], at: usize, value: u64) {
    out[at] = b'0' + (value / 10 % 10) as u8;
    out[at + 1] = b'0' + (value % 10) as u8;
}

/// The Date line for `secs` seconds after the Unix epoch (years 1970 to 9999).
pub fn date_line_at(secs: u64) -> [u8; LINE_LEN] {
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
    let weekday = DAYS[(days % 7) as usize];
    out[6..9].copy_from_slice(weekday);
    push_two(&mut out, 11, day);
    // `month` is 1..=12 by construction.
    out[14..17].copy_from_slice(MONTHS[((month + 11) % 12) as usize]);
    push_two(&mut out, 18, year / 100);
    push_two(&mut out, 20, year);
    push_two(&mut out, 23, of_day / 3_600);
    push_two(&mut out, 26, of_day / 60 % 60);
    push_two(&mut out, 29, of_day % 60);
    out
}

thread_local! {
    static LAST: Cell<(u64, [u8; LINE_LEN])> = const { Cell::new((u64::MAX, [0; LINE_LEN])) };
}

/// The Date line for now, formatted again only when the second changed.
pub fn date_line_now() -> [u8; LINE_LEN] {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    LAST.with(|last| {
        let (second, line) = last.get();
        if second == secs {
            return line;
        }
        let line = date_line_at(secs);
        last.set((secs, line));
        line
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(&date_line_at(0), b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n");
        assert_eq!(
            &date_line_at(784_111_777),
            b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        );
        assert_eq!(
            &date_line_at(951_782_400),
            b"Date: Tue, 29 Feb 2000 00:00:00 GMT\r\n"
        );
        assert_eq!(
            &date_line_at(1_796_631_161),
            b"Date: Mon, 07 Dec 2026 08:12:41 GMT\r\n"
        );
    }

    #[test]
    fn now_is_a_whole_line() {
        let line = date_line_now();
        assert!(line.starts_with(b"Date: ") && line.ends_with(b" GMT\r\n"));
    }
}
