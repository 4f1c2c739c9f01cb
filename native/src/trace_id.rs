//! Trace ids for requests that arrive without one: X-Ray's rule (the first 8 hex digits are the
//! epoch second, 24 random ones follow), which W3C Trace Context accepts as any 32 digits, and a
//! 16-digit span id. The random bits come from wyrand, a 64-bit generator seeded from the OS by
//! the caller: trace ids must be unique and unguessable enough not to collide, not secret, and a
//! draw costs a multiply instead of a read of the OS random source.

pub const TRACE_LEN: usize = 32;
pub const SPAN_LEN: usize = 16;
const HEX: &[u8; 16] = b"0123456789abcdef";
const INCREMENT: u64 = 0xa076_1d64_78bd_642f;
const MIX: u64 = 0xe703_7ed1_a0b4_28db;

/// One wyrand output for the state `state` (the caller advances the state by `INCREMENT`).
pub fn wyrand(state: u64) -> u64 {
    let t = u128::from(state).wrapping_mul(u128::from(state ^ MIX));
    ((t >> 64) as u64) ^ (t as u64)
}

/// The state step between two draws.
pub const STEP: u64 = INCREMENT;

fn hex_into(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = HEX[(value & 0xF) as usize];
        value >>= 4;
    }
}

/// The trace id for `epoch_s` and 96 random bits (`high`'s low 32 and `low`), and the span id
/// for `span` (never all zeros: W3C refuses a zero parent id).
pub fn format_trace(
    epoch_s: u32,
    high: u64,
    low: u64,
    span: u64,
) -> ([u8; TRACE_LEN], [u8; SPAN_LEN]) {
    let mut trace = [0u8; TRACE_LEN];
    hex_into(&mut trace[..8], u64::from(epoch_s));
    hex_into(&mut trace[8..16], high & 0xFFFF_FFFF);
    hex_into(&mut trace[16..], low);
    let mut span_id = [0u8; SPAN_LEN];
    hex_into(&mut span_id, if span == 0 { 1 } else { span });
    (trace, span_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_epoch_second_then_random_digits() {
        let (trace, span) = format_trace(
            0x5759_e988,
            0xffff_ffff_bd86_2e3f,
            0xe1be_46a9_9427_2793,
            0x5399_5c3f_42cd_8ad8,
        );
        assert_eq!(&trace, b"5759e988bd862e3fe1be46a994272793");
        assert_eq!(&span, b"53995c3f42cd8ad8");
        let (_, zero) = format_trace(0, 0, 0, 0);
        assert_eq!(&zero, b"0000000000000001");
    }

    #[test]
    fn draws_differ() {
        let mut state = 42u64;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            state = state.wrapping_add(STEP);
            assert!(seen.insert(wyrand(state)));
        }
    }
}
