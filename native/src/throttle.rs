//! Token buckets and quota counters, decided together in one call.
//!
//! A request names every bucket that applies to it (account, stage, route, usage-plan key) and at most
//! one quota. `Throttle::acquire` grants it only if every bucket has a token and the quota has room;
//! otherwise nothing is taken, so a refused request never drains the levels that would have let it pass.
//!
//! Time is passed in rather than read here: `now` is monotonic seconds (buckets), `unix_now` is wall-clock
//! seconds (quota periods are UTC calendar periods). Tests and property models drive the clock; the
//! bindings read the real clocks (`monotonic_now`, `unix_now`) when the caller gives none.

use parking_lot::Mutex;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: f64 = 86_400.0;

/// Wall-clock times beyond about 300 000 years from 1970 are refused: it keeps the calendar arithmetic
/// on day numbers far from `i64` overflow without checking every step.
pub const MAX_UNIX_ABS_S: f64 = 1.0e13;

/// Refill is computed in floating point, so a bucket that should hold exactly one token may hold
/// 0.999_999_999_9; this slack keeps such rounding from refusing a request that is due.
pub const TOKEN_EPSILON: f64 = 1e-9;

/// Seconds on a process-wide monotonic clock (its zero is the first call in this process).
pub fn monotonic_now() -> f64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Seconds since the Unix epoch; a system clock set before 1970 reads as negative seconds.
pub fn unix_now() -> f64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The calendar period a quota counts over, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    Day,
    /// ISO week: starts Monday 00:00 UTC.
    Week,
    Month,
}

impl FromStr for QuotaPeriod {
    type Err = ThrottleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "DAY" => Ok(Self::Day),
            "WEEK" => Ok(Self::Week),
            "MONTH" => Ok(Self::Month),
            other => Err(ThrottleError::InvalidPeriod(other.to_owned())),
        }
    }
}

impl QuotaPeriod {
    /// A number that grows by one from each period to the next; `days` counts days since 1970-01-01.
    pub(crate) fn index(self, days: i64) -> i64 {
        match self {
            Self::Day => days,
            // 1970-01-01 was a Thursday, so Monday 1969-12-29 is day -3.
            Self::Week => (days + 3).div_euclid(7),
            Self::Month => {
                let (y, m, _) = civil_from_days(days);
                y * 12 + i64::from(m) - 1
            }
        }
    }

    /// The first day (days since 1970-01-01) of the period with this index.
    pub(crate) fn start_day(self, index: i64) -> i64 {
        match self {
            Self::Day => index,
            Self::Week => index * 7 - 3,
            Self::Month => {
                // rem_euclid(12) is in 0..12, so the cast cannot truncate.
                days_from_civil(index.div_euclid(12), index.rem_euclid(12) as u32 + 1, 1)
            }
        }
    }
}

/// Proleptic Gregorian (year, month 1..=12, day 1..=31) for a day count since 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // The ranges of mp (0..12) and doy (0..366) make these casts exact.
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Outcome of one `acquire`. The discriminants are the values the Python bindings expose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Granted = 0,
    Throttled = 1,
    QuotaExceeded = 2,
}

/// What one `acquire` decided, with what the `RateLimit-*` headers need about the tightest bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub status: Status,
    /// 0 when granted. Throttled: seconds until every refusing bucket holds a token (infinite if one
    /// never will). Quota exceeded: seconds until the quota's next period begins.
    pub retry_after_s: f64,
    /// Burst of the tightest bucket: the one with fewest whole tokens after the decision; among
    /// equals, the slowest to fill up again; then the first named. All three fields are 0 when no
    /// bucket was named.
    pub limit: u32,
    /// Whole tokens left in the tightest bucket after the decision.
    pub remaining: u32,
    /// Seconds until the tightest bucket is full again (infinite if it never refills).
    pub reset_s: f64,
    /// Throttled: the position in the `bucket_ids` given of the first bucket that had no token, so
    /// the caller can tell which level refused. None when granted or refused by the quota.
    pub refused_by: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ThrottleError {
    /// A refill rate that is negative, NaN or infinite.
    InvalidRate(f64),
    InvalidPeriod(String),
    UnknownBucket(usize),
    UnknownQuota(usize),
    /// A NaN or infinite time, or a wall-clock time beyond `MAX_UNIX_ABS_S`.
    InvalidTime,
}

impl fmt::Display for ThrottleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRate(r) => write!(f, "rate must be a finite number >= 0, got {r}"),
            Self::InvalidPeriod(p) => {
                write!(f, "quota period must be DAY, WEEK or MONTH, got {p:?}")
            }
            Self::UnknownBucket(id) => write!(f, "unknown bucket id {id}"),
            Self::UnknownQuota(id) => write!(f, "unknown quota id {id}"),
            Self::InvalidTime => write!(
                f,
                "times must be finite (and wall-clock times within {MAX_UNIX_ABS_S} s of 1970)"
            ),
        }
    }
}

impl std::error::Error for ThrottleError {}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: u32,
    tokens: f64,
    /// Latest time seen; None until the first acquire, so a bucket starts full whatever the clock's origin.
    last: Option<f64>,
}

impl Bucket {
    fn refill(&mut self, now: f64) {
        match self.last {
            Some(last) if now > last => {
                // rate > 0 keeps a gap that overflows to infinity from meeting rate 0 (inf * 0 = NaN).
                if self.rate > 0.0 {
                    self.tokens =
                        (self.tokens + (now - last) * self.rate).min(f64::from(self.burst));
                }
                self.last = Some(now);
            }
            // A clock that went backwards refills nothing and the later time is kept, so the same
            // interval is never credited twice.
            Some(_) => {}
            None => self.last = Some(now),
        }
    }

    fn has_token(&self) -> bool {
        self.tokens >= 1.0 - TOKEN_EPSILON
    }

    fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    fn wait_for_token_s(&self) -> f64 {
        if self.has_token() {
            0.0
        } else if self.rate <= 0.0 || self.burst == 0 {
            f64::INFINITY
        } else {
            (1.0 - self.tokens) / self.rate
        }
    }

    fn whole_tokens(&self) -> u32 {
        // Clamped to 0..=burst, so the cast cannot truncate.
        (self.tokens + TOKEN_EPSILON)
            .floor()
            .clamp(0.0, f64::from(self.burst)) as u32
    }

    fn reset_s(&self) -> f64 {
        let burst = f64::from(self.burst);
        if self.tokens >= burst {
            0.0
        } else if self.rate <= 0.0 {
            f64::INFINITY
        } else {
            (burst - self.tokens) / self.rate
        }
    }
}

#[derive(Debug)]
struct Quota {
    limit: u64,
    period: QuotaPeriod,
    /// Index of the latest period seen (None before the first check).
    current: Option<i64>,
    used: u64,
}

impl Quota {
    /// Rolls to the period of `unix_now` (never back to an earlier one) and says whether one more
    /// request fits, with the seconds until the next period begins.
    fn check(&mut self, unix_now: f64) -> (bool, f64) {
        // unix_now is finite and bounded by MAX_UNIX_ABS_S, so the day count fits an i64.
        let days = (unix_now / SECS_PER_DAY).floor() as i64;
        let index = self.period.index(days);
        let current = match self.current {
            Some(cur) if index <= cur => cur,
            _ => {
                self.current = Some(index);
                self.used = 0;
                index
            }
        };
        let next_start = self.period.start_day(current + 1) as f64 * SECS_PER_DAY;
        (self.used < self.limit, next_start - unix_now)
    }
}

#[derive(Debug, Default)]
struct State {
    buckets: Vec<Bucket>,
    quotas: Vec<Quota>,
}

/// Buckets and quotas behind one lock, held only for the span of a single call.
#[derive(Debug, Default)]
pub struct Throttle {
    state: Mutex<State>,
}

impl Throttle {
    pub fn new() -> Self {
        Self::default()
    }

    /// A bucket holding at most `burst` tokens, refilled at `rate` tokens per second, starting full.
    /// Rate 0 gives `burst` requests and then no more; burst 0 refuses everything.
    pub fn add_bucket(&self, rate: f64, burst: u32) -> Result<usize, ThrottleError> {
        if !rate.is_finite() || rate < 0.0 {
            return Err(ThrottleError::InvalidRate(rate));
        }
        let mut st = self.state.lock();
        st.buckets.push(Bucket {
            rate,
            burst,
            tokens: f64::from(burst),
            last: None,
        });
        Ok(st.buckets.len() - 1)
    }

    /// A counter allowing `limit` requests per UTC `period`.
    pub fn add_quota(&self, limit: u64, period: QuotaPeriod) -> usize {
        let mut st = self.state.lock();
        st.quotas.push(Quota {
            limit,
            period,
            current: None,
            used: 0,
        });
        st.quotas.len() - 1
    }

    pub fn bucket_count(&self) -> usize {
        self.state.lock().buckets.len()
    }

    pub fn quota_count(&self) -> usize {
        self.state.lock().quotas.len()
    }

    /// Decides one request: granted only if every named bucket has a token and the quota has room,
    /// and then one token is taken from each bucket and one unit from the quota; otherwise nothing
    /// is taken. Buckets are checked before the quota. An id named twice counts once. A throttled
    /// decision names the first refusing bucket by its position in `bucket_ids`. Errors (unknown
    /// ids, non-finite times) change no state.
    pub fn acquire(
        &self,
        bucket_ids: &[usize],
        quota_id: Option<usize>,
        now: f64,
        unix_now: f64,
    ) -> Result<Decision, ThrottleError> {
        if !now.is_finite() || !unix_now.is_finite() || unix_now.abs() > MAX_UNIX_ABS_S {
            return Err(ThrottleError::InvalidTime);
        }
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if let Some(&id) = bucket_ids.iter().find(|&&id| id >= st.buckets.len()) {
            return Err(ThrottleError::UnknownBucket(id));
        }
        if let Some(q) = quota_id {
            if q >= st.quotas.len() {
                return Err(ThrottleError::UnknownQuota(q));
            }
        }
        // A request names a handful of levels, so a quadratic scan beats building a set.
        let first_mention = |i: usize| !bucket_ids[..i].contains(&bucket_ids[i]);

        let mut refused_by: Option<usize> = None;
        let mut wait_s: f64 = 0.0;
        for (i, &id) in bucket_ids.iter().enumerate() {
            if !first_mention(i) {
                continue;
            }
            let b = &mut st.buckets[id];
            b.refill(now);
            if !b.has_token() {
                refused_by = refused_by.or(Some(i));
                wait_s = wait_s.max(b.wait_for_token_s());
            }
        }

        let (status, retry_after_s) = if refused_by.is_some() {
            (Status::Throttled, wait_s)
        } else {
            let quota_verdict = quota_id.map(|q| {
                let quota = &mut st.quotas[q];
                let (room, retry) = quota.check(unix_now);
                if room {
                    quota.used += 1;
                }
                (room, retry)
            });
            match quota_verdict {
                Some((false, retry)) => (Status::QuotaExceeded, retry),
                _ => {
                    for (i, &id) in bucket_ids.iter().enumerate() {
                        if first_mention(i) {
                            st.buckets[id].take();
                        }
                    }
                    (Status::Granted, 0.0)
                }
            }
        };

        let mut tightest: Option<&Bucket> = None;
        for &id in bucket_ids {
            let b = &st.buckets[id];
            let tighter = match tightest {
                Some(t) => (b.whole_tokens(), -b.reset_s()) < (t.whole_tokens(), -t.reset_s()),
                None => true,
            };
            if tighter {
                tightest = Some(b);
            }
        }
        let (limit, remaining, reset_s) =
            tightest.map_or((0, 0, 0.0), |b| (b.burst, b.whole_tokens(), b.reset_s()));
        Ok(Decision {
            status,
            retry_after_s,
            limit,
            remaining,
            reset_s,
            refused_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01 00:00:00 UTC, a Monday.
    const JAN_1_2024: f64 = 1_704_067_200.0;

    fn unix(y: i64, m: u32, d: u32, secs: f64) -> f64 {
        days_from_civil(y, m, d) as f64 * SECS_PER_DAY + secs
    }

    fn acq(t: &Throttle, ids: &[usize], now: f64) -> Decision {
        t.acquire(ids, None, now, JAN_1_2024).unwrap()
    }

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(unix(2024, 1, 1, 0.0), JAN_1_2024);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(
            civil_from_days(days_from_civil(2024, 2, 29) + 1),
            (2024, 3, 1)
        );
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn bucket_starts_full_and_refills() {
        let t = Throttle::new();
        let b = t.add_bucket(2.0, 3).unwrap();
        for left in [2, 1, 0] {
            let d = acq(&t, &[b], 100.0);
            assert_eq!(d.status, Status::Granted);
            assert_eq!((d.limit, d.remaining), (3, left));
            assert_eq!(d.retry_after_s, 0.0);
        }
        let d = acq(&t, &[b], 100.0);
        assert_eq!(d.status, Status::Throttled);
        assert!((d.retry_after_s - 0.5).abs() < 1e-12);
        assert!((d.reset_s - 1.5).abs() < 1e-12);
        assert_eq!(acq(&t, &[b], 100.5).status, Status::Granted);
        assert_eq!(acq(&t, &[b], 100.5).status, Status::Throttled);
        // A long gap fills to burst and no further.
        let d = acq(&t, &[b], 1.0e9);
        assert_eq!((d.status, d.remaining), (Status::Granted, 2));
    }

    #[test]
    fn fractional_rate() {
        let t = Throttle::new();
        let b = t.add_bucket(0.1, 1).unwrap();
        assert_eq!(acq(&t, &[b], 0.0).status, Status::Granted);
        let d = acq(&t, &[b], 5.0);
        assert_eq!(d.status, Status::Throttled);
        assert!((d.retry_after_s - 5.0).abs() < 1e-9);
        assert_eq!(acq(&t, &[b], 10.0).status, Status::Granted);
    }

    #[test]
    fn refill_rounding_does_not_refuse_a_due_token() {
        let t = Throttle::new();
        let b = t.add_bucket(10.0, 1).unwrap();
        let start = 12_345.578;
        assert_eq!(acq(&t, &[b], start).status, Status::Granted);
        // 12345.678 - 12345.578 is slightly under 0.1 in binary floating point.
        assert_eq!(acq(&t, &[b], 12_345.678).status, Status::Granted);
    }

    #[test]
    fn all_or_nothing() {
        let t = Throttle::new();
        let a = t.add_bucket(0.0, 5).unwrap();
        let empty = t.add_bucket(1.0, 1).unwrap();
        let c = t.add_bucket(0.0, 5).unwrap();
        assert_eq!(acq(&t, &[empty], 0.0).status, Status::Granted);
        for _ in 0..10 {
            let d = acq(&t, &[a, empty, c], 0.0);
            assert_eq!(d.status, Status::Throttled);
            assert_eq!((d.limit, d.remaining), (1, 0));
        }
        let d = acq(&t, &[a, c], 0.0);
        assert_eq!((d.status, d.limit, d.remaining), (Status::Granted, 5, 4));
    }

    #[test]
    fn refusal_names_the_first_refusing_bucket() {
        let t = Throttle::new();
        let open = t.add_bucket(0.0, 5).unwrap();
        let empty = t.add_bucket(0.0, 0).unwrap();
        let one = t.add_bucket(0.0, 1).unwrap();
        let q = t.add_quota(0, QuotaPeriod::Day);
        let d = acq(&t, &[open, one], 0.0);
        assert_eq!((d.status, d.refused_by), (Status::Granted, None));
        // Positions in the ids given, not bucket ids; the first refusing one in that order.
        assert_eq!(acq(&t, &[open, empty], 0.0).refused_by, Some(1));
        assert_eq!(acq(&t, &[open, one, empty], 0.0).refused_by, Some(1));
        assert_eq!(acq(&t, &[empty, open, one], 0.0).refused_by, Some(0));
        assert_eq!(acq(&t, &[open, open, empty, one], 0.0).refused_by, Some(2));
        // A duplicate is reported at its first mention.
        assert_eq!(acq(&t, &[open, one, open, one], 0.0).refused_by, Some(1));
        // The quota refuses with no bucket named, and only once every bucket has a token.
        let d = t.acquire(&[open], Some(q), 0.0, JAN_1_2024).unwrap();
        assert_eq!((d.status, d.refused_by), (Status::QuotaExceeded, None));
        let d = t.acquire(&[open, empty], Some(q), 0.0, JAN_1_2024).unwrap();
        assert_eq!((d.status, d.refused_by), (Status::Throttled, Some(1)));
        // Only the first grant took a token.
        assert_eq!(acq(&t, &[open], 0.0).remaining, 3);
    }

    #[test]
    fn quota_refusal_takes_no_tokens() {
        let t = Throttle::new();
        let b = t.add_bucket(0.0, 10).unwrap();
        let q = t.add_quota(1, QuotaPeriod::Day);
        let d = t.acquire(&[b], Some(q), 0.0, JAN_1_2024).unwrap();
        assert_eq!((d.status, d.remaining), (Status::Granted, 9));
        let d = t.acquire(&[b], Some(q), 0.0, JAN_1_2024 + 3600.0).unwrap();
        assert_eq!((d.status, d.remaining), (Status::QuotaExceeded, 9));
        assert!((d.retry_after_s - 23.0 * 3600.0).abs() < 1e-6);
    }

    #[test]
    fn throttle_is_checked_before_quota() {
        let t = Throttle::new();
        let b = t.add_bucket(1.0, 0).unwrap();
        let q = t.add_quota(0, QuotaPeriod::Day);
        let d = t.acquire(&[b], Some(q), 0.0, JAN_1_2024).unwrap();
        assert_eq!(d.status, Status::Throttled);
        let q2 = t.add_quota(1, QuotaPeriod::Day);
        // The throttled request did not use the quota.
        assert_eq!(
            t.acquire(&[b], Some(q2), 0.0, JAN_1_2024).unwrap().status,
            Status::Throttled
        );
        assert_eq!(
            t.acquire(&[], Some(q2), 0.0, JAN_1_2024).unwrap().status,
            Status::Granted
        );
    }

    #[test]
    fn retry_after_is_the_slowest_refusing_bucket() {
        let t = Throttle::new();
        let fast = t.add_bucket(4.0, 1).unwrap();
        let slow = t.add_bucket(0.5, 1).unwrap();
        assert_eq!(acq(&t, &[fast, slow], 0.0).status, Status::Granted);
        let d = acq(&t, &[fast, slow], 0.0);
        assert_eq!(d.status, Status::Throttled);
        assert!((d.retry_after_s - 2.0).abs() < 1e-12);
        let never = t.add_bucket(0.0, 1).unwrap();
        assert_eq!(acq(&t, &[never], 0.0).status, Status::Granted);
        let d = acq(&t, &[fast, never], 0.0);
        assert_eq!(d.retry_after_s, f64::INFINITY);
        assert_eq!(d.reset_s, f64::INFINITY);
    }

    #[test]
    fn rate_zero_gives_burst_then_never() {
        let t = Throttle::new();
        let b = t.add_bucket(0.0, 2).unwrap();
        assert_eq!(acq(&t, &[b], 0.0).status, Status::Granted);
        assert_eq!(acq(&t, &[b], 1.0).status, Status::Granted);
        for now in [2.0, 1e6, 1e300, f64::MAX] {
            let d = acq(&t, &[b], now);
            assert_eq!(d.status, Status::Throttled);
            assert_eq!(d.retry_after_s, f64::INFINITY);
        }
    }

    #[test]
    fn burst_zero_always_refused() {
        let t = Throttle::new();
        let b = t.add_bucket(1000.0, 0).unwrap();
        for now in [0.0, 10.0, 1e9] {
            let d = acq(&t, &[b], now);
            assert_eq!(d.status, Status::Throttled);
            assert_eq!(d.retry_after_s, f64::INFINITY);
            assert_eq!((d.limit, d.remaining, d.reset_s), (0, 0, 0.0));
        }
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let t = Throttle::new();
        let b = t.add_bucket(1.0, 1).unwrap();
        assert_eq!(acq(&t, &[b], 100.0).status, Status::Granted);
        assert_eq!(acq(&t, &[b], 50.0).status, Status::Throttled);
        // Time from 50 to 100.5 is not credited: the bucket remembers 100.
        let d = acq(&t, &[b], 100.5);
        assert_eq!(d.status, Status::Throttled);
        assert!((d.retry_after_s - 0.5).abs() < 1e-12);
        assert_eq!(acq(&t, &[b], 101.0).status, Status::Granted);
    }

    #[test]
    fn huge_gaps_do_not_overflow() {
        let t = Throttle::new();
        let b = t.add_bucket(1e300, 4).unwrap();
        assert_eq!(acq(&t, &[b], -f64::MAX).status, Status::Granted);
        let d = acq(&t, &[b], f64::MAX);
        assert_eq!((d.status, d.remaining), (Status::Granted, 3));
    }

    #[test]
    fn invalid_input_is_an_error() {
        let t = Throttle::new();
        for rate in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                t.add_bucket(rate, 1),
                Err(ThrottleError::InvalidRate(_))
            ));
        }
        let b = t.add_bucket(1.0, 1).unwrap();
        assert_eq!(
            t.acquire(&[b, 7], None, 0.0, 0.0),
            Err(ThrottleError::UnknownBucket(7))
        );
        assert_eq!(
            t.acquire(&[b], Some(0), 0.0, 0.0),
            Err(ThrottleError::UnknownQuota(0))
        );
        for (now, unix) in [
            (f64::NAN, 0.0),
            (f64::INFINITY, 0.0),
            (0.0, f64::NAN),
            (0.0, 1e14),
        ] {
            assert_eq!(
                t.acquire(&[b], None, now, unix),
                Err(ThrottleError::InvalidTime)
            );
        }
        // None of the errors took the token.
        assert_eq!(acq(&t, &[b], 0.0).status, Status::Granted);
        assert!("HOUR".parse::<QuotaPeriod>().is_err());
        assert_eq!("WEEK".parse::<QuotaPeriod>(), Ok(QuotaPeriod::Week));
    }

    #[test]
    fn duplicate_ids_count_once() {
        let t = Throttle::new();
        let b = t.add_bucket(0.0, 2).unwrap();
        assert_eq!(acq(&t, &[b, b, b], 0.0).remaining, 1);
        assert_eq!(acq(&t, &[b, b], 0.0).remaining, 0);
    }

    #[test]
    fn tightest_bucket_reported() {
        let t = Throttle::new();
        let big = t.add_bucket(100.0, 100).unwrap();
        let small = t.add_bucket(1.0, 3).unwrap();
        let d = acq(&t, &[big, small], 0.0);
        assert_eq!((d.limit, d.remaining), (3, 2));
        assert!((d.reset_s - 1.0).abs() < 1e-12);
        assert_eq!(acq(&t, &[], 0.0).limit, 0);
    }

    fn spend(t: &Throttle, q: usize, unix_now: f64) -> Status {
        t.acquire(&[], Some(q), 0.0, unix_now).unwrap().status
    }

    #[test]
    fn quota_day_rolls_over_at_utc_midnight_leap_day() {
        let t = Throttle::new();
        let q = t.add_quota(2, QuotaPeriod::Day);
        let leap = unix(2024, 2, 29, 0.0);
        assert_eq!(spend(&t, q, leap + 10.0), Status::Granted);
        assert_eq!(spend(&t, q, leap + 86_399.0), Status::Granted);
        let d = t.acquire(&[], Some(q), 0.0, leap + 86_399.5).unwrap();
        assert_eq!(d.status, Status::QuotaExceeded);
        assert!((d.retry_after_s - 0.5).abs() < 1e-6);
        assert_eq!(spend(&t, q, unix(2024, 3, 1, 0.0)), Status::Granted);
    }

    #[test]
    fn quota_week_starts_monday() {
        let t = Throttle::new();
        let q = t.add_quota(1, QuotaPeriod::Week);
        // 2024-01-07 is a Sunday, 2024-01-08 a Monday.
        assert_eq!(spend(&t, q, unix(2024, 1, 1, 0.0)), Status::Granted);
        let d = t
            .acquire(&[], Some(q), 0.0, unix(2024, 1, 7, 86_399.0))
            .unwrap();
        assert_eq!(d.status, Status::QuotaExceeded);
        assert!((d.retry_after_s - 1.0).abs() < 1e-6);
        assert_eq!(spend(&t, q, unix(2024, 1, 8, 0.0)), Status::Granted);
        // A week straddling a year end is one period: Mon 2024-12-30 to Sun 2025-01-05.
        assert_eq!(spend(&t, q, unix(2024, 12, 30, 0.0)), Status::Granted);
        assert_eq!(spend(&t, q, unix(2025, 1, 5, 1.0)), Status::QuotaExceeded);
        assert_eq!(spend(&t, q, unix(2025, 1, 6, 0.0)), Status::Granted);
        // The epoch's week began on Monday 1969-12-29.
        let q2 = t.add_quota(1, QuotaPeriod::Week);
        assert_eq!(spend(&t, q2, unix(1969, 12, 29, 0.0)), Status::Granted);
        assert_eq!(spend(&t, q2, unix(1970, 1, 4, 0.0)), Status::QuotaExceeded);
        assert_eq!(spend(&t, q2, unix(1970, 1, 5, 0.0)), Status::Granted);
    }

    #[test]
    fn quota_month_rollovers() {
        let t = Throttle::new();
        let q = t.add_quota(1, QuotaPeriod::Month);
        assert_eq!(spend(&t, q, unix(2024, 2, 1, 0.0)), Status::Granted);
        let d = t
            .acquire(&[], Some(q), 0.0, unix(2024, 2, 29, 86_000.0))
            .unwrap();
        assert_eq!(d.status, Status::QuotaExceeded);
        assert!((d.retry_after_s - 400.0).abs() < 1e-6);
        assert_eq!(spend(&t, q, unix(2024, 3, 1, 0.0)), Status::Granted);
        assert_eq!(spend(&t, q, unix(2024, 12, 31, 86_399.0)), Status::Granted);
        let d = t
            .acquire(&[], Some(q), 0.0, unix(2024, 12, 31, 86_399.75))
            .unwrap();
        assert_eq!(d.status, Status::QuotaExceeded);
        assert!((d.retry_after_s - 0.25).abs() < 1e-6);
        assert_eq!(spend(&t, q, unix(2025, 1, 1, 0.0)), Status::Granted);
    }

    #[test]
    fn quota_never_rolls_back() {
        let t = Throttle::new();
        let q = t.add_quota(1, QuotaPeriod::Day);
        assert_eq!(spend(&t, q, unix(2024, 5, 1, 0.0)), Status::Granted);
        assert_eq!(spend(&t, q, unix(2024, 5, 2, 0.0)), Status::Granted);
        // The wall clock stepped back a day: still counted against May 2nd.
        let d = t.acquire(&[], Some(q), 0.0, unix(2024, 5, 1, 0.0)).unwrap();
        assert_eq!(d.status, Status::QuotaExceeded);
        assert!((d.retry_after_s - 2.0 * 86_400.0).abs() < 1e-6);
    }

    #[test]
    fn zero_limit_quota_refuses() {
        let t = Throttle::new();
        let q = t.add_quota(0, QuotaPeriod::Month);
        assert_eq!(spend(&t, q, JAN_1_2024), Status::QuotaExceeded);
    }

    #[test]
    fn concurrent_acquires_never_overissue() {
        let t = std::sync::Arc::new(Throttle::new());
        let b = t.add_bucket(0.0, 1000).unwrap();
        let q = t.add_quota(700, QuotaPeriod::Day);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| {
                            t.acquire(&[b], Some(q), 0.0, JAN_1_2024).unwrap().status
                                == Status::Granted
                        })
                        .count()
                })
            })
            .collect();
        let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(granted, 700);
        assert_eq!(acq(&t, &[b], 0.0).remaining, 299);
    }

    #[test]
    fn clocks_are_sane() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(b >= a);
        assert!(unix_now() > JAN_1_2024);
    }
}
