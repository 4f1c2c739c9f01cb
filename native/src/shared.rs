//! Token buckets and quota counters shared by the worker processes of one host.
//!
//! Same decisions as `crate::throttle::Throttle`, but the state lives in a file mapping (normally under
//! /dev/shm) that every worker maps, so an API limited to R requests per second is limited to R in
//! total rather than R per worker. No lock is ever taken: each bucket and each quota is one `AtomicU64`
//! updated by compare-and-swap, so a worker that dies at any instruction leaves every slot either
//! before or after its update, never half-written.
//!
//! # File layout
//! A header of two cache lines (magic, format version, a hash of the bucket/quota table, the table's
//! sizes, the boot the file belongs to, and the latest monotonic time any worker has seen), then one
//! cache line per bucket and per quota, so that workers hammering different buckets do not fight over
//! the same line. A zero-filled slot is a fresh one (bucket full, quota unused), so the creator only
//! writes the header. The file becomes visible under its name only once complete (written under a
//! temporary name, then hard-linked into place, which fails if another worker got there first), so an
//! attaching worker never sees a half-written header, and workers built from different tables refuse
//! to share a file (`SharedError::Layout`).
//!
//! # Buckets
//! A bucket with rate > 0 stores its "theoretical arrival time" (GCRA): the monotonic time, in
//! nanoseconds, at which it would be full again. Tokens are `burst - max(0, tat - now) / interval` with
//! `interval = 1 / rate`, which is the same token bucket as `Throttle`'s (start full, refill at `rate`,
//! cap at `burst`) in a single 64-bit word with no wrapping clock field. A take moves `tat` forward by
//! one interval (never past `now + burst * interval`: a bucket holds no fewer than 0 tokens). A rate-0
//! bucket stores how many tokens it has handed out; a burst-0 bucket has no state at all.
//!
//! The interval is rounded to whole nanoseconds, which changes the rate by at most `0.5e-9 * rate`
//! (relative): 5e-6 at 10 000 requests per second. Rates above 1e9 per second are refused, and rates
//! below one per ~31 years behave as one per ~31 years.
//!
//! # Several buckets at once, and workers that die
//! A request takes one token from each bucket it names, in id order. If a bucket refuses, the tokens
//! already taken are given back (added back, capped at `burst`); if the quota then refuses, all of them
//! are. Other workers may see those tokens missing for the instant between take and give-back, which
//! can refuse a request that a single lock would have let through, never grant one too many. A worker
//! that dies between a take and its give-back leaks the tokens of that one request (at most one per
//! bucket it named); they come back at the bucket's refill rate like any spent token.
//!
//! # Time
//! `now` is seconds on the host's monotonic clock (`host_monotonic_now`, CLOCK_MONOTONIC: the clock
//! Python's `time.monotonic()` reads on Linux), so readings from different workers are comparable.
//! The header keeps the latest `now` any worker used; an earlier reading (a worker that was descheduled
//! between reading the clock and deciding) is treated as that latest time, so time never runs backwards
//! for a bucket. Quotas count UTC calendar periods of `unix_now` exactly like `Throttle`'s.
//!
//! A file outlives the workers but not the boot: CLOCK_MONOTONIC restarts at boot, so a file created
//! under an earlier boot (possible only outside /dev/shm) is refused rather than trusted.

use crate::throttle::{
    Decision, QuotaPeriod, Status, ThrottleError, MAX_UNIX_ABS_S, TOKEN_EPSILON,
};
use memmap2::{MmapOptions, MmapRaw};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// "PYGWSHT1", so a file of anything else is refused rather than misread.
const MAGIC: u64 = u64::from_le_bytes(*b"PYGWSHT1");
/// Bumped whenever the meaning of a header word or slot changes.
pub const FORMAT_VERSION: u64 = 1;

const WORD_BYTES: usize = 8;
/// Two cache lines: the constant words, then the clock that every acquire updates.
const HEADER_WORDS: usize = 16;
/// One cache line per slot; only its first word is used.
const SLOT_WORDS: usize = 8;

const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_LAYOUT: usize = 2;
const H_COUNTS: usize = 3;
const H_BOOT: usize = 4;
const H_CLOCK: usize = 8;

/// Above this the refill interval would be under a nanosecond.
pub const MAX_SHARED_RATE: f64 = 1e9;
/// ~31.7 years: keeps `burst * interval` far from `i64` overflow in i128 arithmetic and in storage.
const MAX_INTERVAL_NS: f64 = 1e18;
/// A quota's count shares its word with the period index.
pub const MAX_SHARED_QUOTA_LIMIT: u64 = u32::MAX as u64;
/// Nanosecond times are kept within ±2^62 (±146 years), far from the ends of `i64`.
const MAX_ABS_NS: f64 = 4.611_686_018_427_388e18;

const SECS_PER_DAY: f64 = 86_400.0;

/// Seconds on the host-wide monotonic clock.
///
/// On Linux CLOCK_MONOTONIC counts from boot and is one clock for the whole host, not a per-process
/// one (it is the clock behind `std::time::Instant` and Python's `time.monotonic()`), and wall-clock
/// steps do not move it. So the readings of two worker processes are directly comparable, which is
/// what lets them share bucket times. `Instant` itself cannot be used: its value cannot be read out.
pub fn host_monotonic_now() -> f64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[derive(Debug)]
pub enum SharedError {
    /// A bucket or quota that the shared backend cannot represent.
    Config(String),
    /// The file exists but was made for another table, format or boot, or is not such a file.
    Layout(String),
    Io(io::Error),
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(m) | Self::Layout(m) => f.write_str(m),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SharedError {}

impl From<io::Error> for SharedError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Burst 0: refuses everything and has no state.
    Closed,
    /// Rate 0: the slot counts tokens handed out.
    Fixed,
    /// The slot holds the biased time (ns) at which the bucket is full again.
    Refill { interval_ns: i64 },
}

#[derive(Clone, Copy, Debug)]
struct BucketDef {
    burst: u32,
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
struct QuotaDef {
    limit: u32,
    period: QuotaPeriod,
}

/// What a take did to a bucket, so that it can be undone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Taken {
    id: usize,
    /// Nanoseconds added to the full-again time (refill buckets) or 1 (rate-0 buckets).
    amount: i64,
}

/// A bucket's level at one instant, in `Throttle`'s terms.
#[derive(Clone, Copy, Debug)]
struct Level {
    burst: u32,
    tokens: f64,
    /// Seconds until the bucket holds a token (0 if it does).
    wait_s: f64,
    /// Seconds until the bucket is full.
    reset_s: f64,
}

impl Level {
    fn whole_tokens(&self) -> u32 {
        // Clamped to 0..=burst, so the cast cannot truncate.
        (self.tokens + TOKEN_EPSILON)
            .floor()
            .clamp(0.0, f64::from(self.burst)) as u32
    }
}

/// Signed times are stored with the sign bit flipped so that unsigned order is time order (for
/// `fetch_max`) and an all-zero word is the earliest time: "full since forever".
fn encode_time(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

fn decode_time(w: u64) -> i64 {
    (w ^ (1 << 63)) as i64
}

fn seconds_to_ns(s: f64) -> i64 {
    // Clamped first, so the cast is exact in range.
    (s * 1e9).round().clamp(-MAX_ABS_NS, MAX_ABS_NS) as i64
}

fn clamp_i64(v: i128) -> i64 {
    // Clamped to the i64 range, so the cast cannot truncate.
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Quota words: the period index (biased by 2^31, so 0 means "no period yet") in the high half, the
/// count in the low half.
fn pack_quota(index: i64, used: u32) -> u64 {
    // Period indexes of times within MAX_UNIX_ABS_S are within ±2^28, so the biased value fits in u32.
    let biased = (index + (1 << 31)).clamp(1, i64::from(u32::MAX)) as u64;
    (biased << 32) | u64::from(used)
}

fn unpack_quota(w: u64) -> (Option<i64>, u32) {
    let biased = (w >> 32) as i64;
    let used = (w & 0xFFFF_FFFF) as u32;
    if biased == 0 {
        (None, used)
    } else {
        (Some(biased - (1 << 31)), used)
    }
}

/// FNV-1a: stable across builds and platforms, unlike the std and foldhash hashers.
fn fnv1a(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Identifies the current boot, so a file from an earlier boot (whose monotonic times mean nothing
/// now) is noticed. 0 where the kernel does not say.
fn boot_id() -> u64 {
    match fs::read("/proc/sys/kernel/random/boot_id") {
        Ok(bytes) => fnv1a(&bytes.iter().map(|&b| u64::from(b)).collect::<Vec<_>>()),
        Err(_) => 0,
    }
}

/// The hash that two workers' tables must share to use the same file. Depends only on the table.
pub fn layout_hash(buckets: &[(f64, u32)], quotas: &[(u64, QuotaPeriod)]) -> u64 {
    let mut words = vec![FORMAT_VERSION, buckets.len() as u64];
    for &(rate, burst) in buckets {
        // 0.0 and -0.0 are the same rate.
        words.push((rate + 0.0).to_bits());
        words.push(u64::from(burst));
    }
    words.push(quotas.len() as u64);
    for &(limit, period) in quotas {
        words.push(limit);
        words.push(period as u64);
    }
    fnv1a(&words)
}

fn bucket_def(rate: f64, burst: u32) -> Result<BucketDef, SharedError> {
    if !rate.is_finite() || rate < 0.0 {
        return Err(SharedError::Config(
            ThrottleError::InvalidRate(rate).to_string(),
        ));
    }
    if rate > MAX_SHARED_RATE {
        return Err(SharedError::Config(format!(
            "rate must be at most {MAX_SHARED_RATE} per second with the shared backend, got {rate}"
        )));
    }
    let kind = if burst == 0 {
        Kind::Closed
    } else if rate == 0.0 {
        Kind::Fixed
    } else {
        // Clamped to 1..=1e18, so the cast is exact.
        let interval_ns = (1e9 / rate).round().clamp(1.0, MAX_INTERVAL_NS) as i64;
        Kind::Refill { interval_ns }
    };
    Ok(BucketDef { burst, kind })
}

fn file_bytes(bucket_count: usize, quota_count: usize) -> usize {
    (HEADER_WORDS + SLOT_WORDS * (bucket_count + quota_count)) * WORD_BYTES
}

/// Token buckets and quotas in a file mapping shared by every process that opens the same path with
/// the same table. Bucket and quota ids are indexes into the tables given to `open`.
pub struct SharedThrottle {
    map: MmapRaw,
    words: usize,
    path: PathBuf,
    layout: u64,
    buckets: Vec<BucketDef>,
    quotas: Vec<QuotaDef>,
}

impl fmt::Debug for SharedThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedThrottle")
            .field("path", &self.path)
            .field("layout", &format_args!("{:016x}", self.layout))
            .field("buckets", &self.buckets.len())
            .field("quotas", &self.quotas.len())
            .finish()
    }
}

impl SharedThrottle {
    /// Maps the file at `path`, creating it (every bucket full, every quota unused) if it does not
    /// exist. `buckets` are (rate per second, burst), `quotas` are (limit per period, period).
    /// Every process must pass the same table: a file made for another table is refused.
    pub fn open(
        path: &Path,
        buckets: &[(f64, u32)],
        quotas: &[(u64, QuotaPeriod)],
    ) -> Result<Self, SharedError> {
        let defs = buckets
            .iter()
            .map(|&(rate, burst)| bucket_def(rate, burst))
            .collect::<Result<Vec<_>, _>>()?;
        let quota_defs = quotas
            .iter()
            .map(|&(limit, period)| {
                u32::try_from(limit)
                    .map(|limit| QuotaDef { limit, period })
                    .map_err(|_| {
                        SharedError::Config(format!(
                            "quota limit must be at most {MAX_SHARED_QUOTA_LIMIT} with the shared \
                             backend, got {limit}"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let layout = layout_hash(buckets, quotas);
        let size = file_bytes(defs.len(), quota_defs.len());
        let boot = boot_id();
        if !path.exists() {
            create(path, size, layout, defs.len(), quota_defs.len(), boot)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let actual = file.metadata()?.len();
        let show = path.display();
        if actual < (HEADER_WORDS * WORD_BYTES) as u64 {
            return Err(SharedError::Layout(format!(
                "{show} is not a pygw shared throttle file (only {actual} bytes)"
            )));
        }
        let map = map_file(&file, actual)?;
        let st = Self {
            words: map.len() / WORD_BYTES,
            map,
            path: path.to_path_buf(),
            layout,
            buckets: defs,
            quotas: quota_defs,
        };
        let w = st.words();
        let word = |i: usize| w[i].load(Ordering::Acquire);
        if word(H_MAGIC) != MAGIC {
            return Err(SharedError::Layout(format!(
                "{show} is not a pygw shared throttle file"
            )));
        }
        if word(H_VERSION) != FORMAT_VERSION {
            return Err(SharedError::Layout(format!(
                "{show} has format version {}, this build uses {FORMAT_VERSION}; stop the other \
                 workers and remove the file",
                word(H_VERSION)
            )));
        }
        if word(H_LAYOUT) != layout
            || word(H_COUNTS) != counts_word(st.buckets.len(), st.quotas.len())
            || actual != size as u64
        {
            return Err(SharedError::Layout(format!(
                "{show} was made for another bucket/quota table (layout {:016x}, this one is \
                 {layout:016x}): every worker sharing it must load the same configuration",
                word(H_LAYOUT)
            )));
        }
        if word(H_BOOT) != boot {
            return Err(SharedError::Layout(format!(
                "{show} was made before the host last booted, so its times mean nothing now; \
                 remove it (files under /dev/shm do not survive a boot)"
            )));
        }
        Ok(st)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn layout(&self) -> u64 {
        self.layout
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn quota_count(&self) -> usize {
        self.quotas.len()
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the pointer comes from a live mapping owned by `self`, so it stays valid for the
        // borrow of `self`; mmap returns page-aligned memory, which satisfies AtomicU64's alignment;
        // `words * 8` bytes were mapped; AtomicU64 has u64's size and every bit pattern is a valid
        // value. Other processes touch the bytes only through the same atomics. A process that
        // shrank the file behind our back would cause SIGBUS, not undefined behaviour in Rust terms
        // (see `MmapRaw::as_ptr`); the file is created 0600 for the gateway's user alone.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.words) }
    }

    fn bucket_word(&self, id: usize) -> &AtomicU64 {
        &self.words()[HEADER_WORDS + SLOT_WORDS * id]
    }

    fn quota_word(&self, id: usize) -> &AtomicU64 {
        &self.words()[HEADER_WORDS + SLOT_WORDS * (self.buckets.len() + id)]
    }

    /// The time this call decides at: `now_ns`, or the latest time any worker has used if later.
    fn advance_clock(&self, now_ns: i64) -> i64 {
        let prev = self.words()[H_CLOCK].fetch_max(encode_time(now_ns), Ordering::AcqRel);
        decode_time(prev).max(now_ns)
    }

    fn level(&self, id: usize, now: i64) -> Level {
        let def = self.buckets[id];
        let burst = f64::from(def.burst);
        match def.kind {
            Kind::Closed => Level {
                burst: 0,
                tokens: 0.0,
                wait_s: f64::INFINITY,
                reset_s: 0.0,
            },
            Kind::Fixed => {
                let used = self.bucket_word(id).load(Ordering::Acquire);
                let tokens = (burst - used as f64).max(0.0);
                Level {
                    burst: def.burst,
                    tokens,
                    wait_s: if tokens >= 1.0 { 0.0 } else { f64::INFINITY },
                    reset_s: if used == 0 { 0.0 } else { f64::INFINITY },
                }
            }
            Kind::Refill { interval_ns } => {
                let tat = decode_time(self.bucket_word(id).load(Ordering::Acquire));
                let short_ns = (i128::from(tat) - i128::from(now)).max(0);
                let free_ns = i128::from(def.burst - 1) * i128::from(interval_ns);
                Level {
                    burst: def.burst,
                    tokens: (burst - short_ns as f64 / interval_ns as f64).max(0.0),
                    wait_s: (short_ns - free_ns).max(0) as f64 * 1e-9,
                    reset_s: short_ns as f64 * 1e-9,
                }
            }
        }
    }

    /// Takes one token from bucket `id`, or says how long until it has one.
    fn take(&self, id: usize, now: i64) -> Result<Taken, f64> {
        let def = self.buckets[id];
        let word = self.bucket_word(id);
        match def.kind {
            Kind::Closed => Err(f64::INFINITY),
            Kind::Fixed => word
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    (used < u64::from(def.burst)).then_some(used + 1)
                })
                .map(|_| Taken { id, amount: 1 })
                .map_err(|_| f64::INFINITY),
            Kind::Refill { interval_ns } => {
                let interval = i128::from(interval_ns);
                let now = i128::from(now);
                let free_ns = i128::from(def.burst - 1) * interval;
                // Tolerance for a bucket that is a hair short of a token, as in `Throttle`.
                let slack = (TOKEN_EPSILON * interval_ns as f64) as i128;
                let mut current = word.load(Ordering::Acquire);
                loop {
                    let tat = i128::from(decode_time(current));
                    let base = tat.max(now);
                    let short_ns = base - now;
                    if short_ns > free_ns + slack {
                        return Err((short_ns - free_ns) as f64 * 1e-9);
                    }
                    let next = (base + interval).min(now + free_ns + interval);
                    let next = clamp_i64(next);
                    match word.compare_exchange_weak(
                        current,
                        encode_time(next),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            return Ok(Taken {
                                id,
                                amount: clamp_i64(i128::from(next) - base),
                            })
                        }
                        Err(seen) => current = seen,
                    }
                }
            }
        }
    }

    /// Undoes a take; the bucket never goes above its burst, whatever happened in between.
    fn give_back(&self, taken: Taken) {
        let word = self.bucket_word(taken.id);
        match self.buckets[taken.id].kind {
            Kind::Closed => {}
            Kind::Fixed => {
                // The closure never refuses, so the result carries nothing to handle.
                let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    Some(used.saturating_sub(taken.amount.unsigned_abs()))
                });
            }
            Kind::Refill { .. } => {
                // A full-again time in the past already means "full": subtracting more cannot add
                // tokens beyond the burst.
                let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                    Some(encode_time(decode_time(w).saturating_sub(taken.amount)))
                });
            }
        }
    }

    /// Rolls quota `id` to the period of `unix_now` (never back) and counts one request if it fits.
    /// Returns whether it fitted and the seconds until the next period begins.
    fn count_quota(&self, id: usize, unix_now: f64) -> (bool, f64) {
        let def = self.quotas[id];
        // unix_now is finite and bounded by MAX_UNIX_ABS_S, so the day count fits an i64.
        let days = (unix_now / SECS_PER_DAY).floor() as i64;
        let index = QuotaPeriod::index(def.period, days);
        let word = self.quota_word(id);
        let mut current = word.load(Ordering::Acquire);
        loop {
            let (seen, used) = unpack_quota(current);
            let (period, used) = match seen {
                Some(p) if index <= p => (p, used),
                _ => (index, 0),
            };
            let room = used < def.limit;
            let next = pack_quota(period, if room { used + 1 } else { used });
            let retry =
                QuotaPeriod::start_day(def.period, period + 1) as f64 * SECS_PER_DAY - unix_now;
            if next == current {
                return (room, retry);
            }
            match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return (room, retry),
                Err(w) => current = w,
            }
        }
    }

    /// Decides one request exactly as `Throttle::acquire` does, against the shared state: granted
    /// only if every named bucket has a token and the quota has room, and then one token is taken
    /// from each and one unit from the quota; otherwise nothing is kept. An id named twice counts
    /// once. `now` is `host_monotonic_now()` seconds; `unix_now` wall-clock seconds.
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
        if let Some(&id) = bucket_ids.iter().find(|&&id| id >= self.buckets.len()) {
            return Err(ThrottleError::UnknownBucket(id));
        }
        if let Some(q) = quota_id {
            if q >= self.quotas.len() {
                return Err(ThrottleError::UnknownQuota(q));
            }
        }
        let now = self.advance_clock(seconds_to_ns(now));
        let mut unique: Vec<usize> = Vec::with_capacity(bucket_ids.len());
        for &id in bucket_ids {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        let mut in_order = unique.clone();
        in_order.sort_unstable();

        let mut taken: Vec<Taken> = Vec::with_capacity(in_order.len());
        // Buckets are taken in id order, but the refusal is reported as `Throttle` does: the first
        // refusing bucket in the order the caller named them.
        let mut refused_by: Option<usize> = None;
        let mut wait_s: f64 = 0.0;
        for &id in &in_order {
            if refused_by.is_some() {
                // Only to report the longest wait and the first refusing level: nothing more is
                // taken once one bucket refused.
                let level = self.level(id, now);
                if level.tokens < 1.0 - TOKEN_EPSILON {
                    wait_s = wait_s.max(level.wait_s);
                    refused_by = first_named(refused_by, bucket_ids, id);
                }
                continue;
            }
            match self.take(id, now) {
                Ok(t) => taken.push(t),
                Err(wait) => {
                    refused_by = first_named(refused_by, bucket_ids, id);
                    wait_s = wait_s.max(wait);
                }
            }
        }

        let (status, retry_after_s) = if refused_by.is_some() {
            (Status::Throttled, wait_s)
        } else {
            match quota_id.map(|q| self.count_quota(q, unix_now)) {
                Some((false, retry)) => (Status::QuotaExceeded, retry),
                _ => (Status::Granted, 0.0),
            }
        };
        if status != Status::Granted {
            for t in taken {
                self.give_back(t);
            }
        }

        let mut tightest: Option<Level> = None;
        for &id in &unique {
            let l = self.level(id, now);
            let tighter = match tightest {
                Some(t) => (l.whole_tokens(), -l.reset_s) < (t.whole_tokens(), -t.reset_s),
                None => true,
            };
            if tighter {
                tightest = Some(l);
            }
        }
        let (limit, remaining, reset_s) =
            tightest.map_or((0, 0, 0.0), |l| (l.burst, l.whole_tokens(), l.reset_s));
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

/// The earlier of `seen` and the first position of bucket `id` in `bucket_ids`.
fn first_named(seen: Option<usize>, bucket_ids: &[usize], id: usize) -> Option<usize> {
    let at = bucket_ids.iter().position(|&named| named == id);
    match (seen, at) {
        (Some(seen), Some(at)) => Some(seen.min(at)),
        (seen, at) => seen.or(at),
    }
}

fn counts_word(buckets: usize, quotas: usize) -> u64 {
    ((buckets as u64) << 32) | quotas as u64
}

fn map_file(file: &File, len: u64) -> Result<MmapRaw, SharedError> {
    let len = usize::try_from(len)
        .map_err(|_| SharedError::Layout(format!("a {len}-byte file cannot be mapped")))?;
    Ok(MmapOptions::new().len(len).map_raw(file)?)
}

/// Writes a complete file under a temporary name and links it into place, so that a file visible at
/// `path` is always complete. Losing the race to another worker is not an error: its file is used.
fn create(
    path: &Path,
    size: usize,
    layout: u64,
    bucket_count: usize,
    quota_count: usize,
    boot: u64,
) -> Result<(), SharedError> {
    let name = path
        .file_name()
        .ok_or_else(|| SharedError::Config(format!("{} is not a file path", path.display())))?;
    let stamp = host_monotonic_now().to_bits();
    let tmp = path.with_file_name(format!(
        ".{}.{}.{stamp:x}.init",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut bytes = vec![0u8; size];
    let mut put = |i: usize, w: u64| {
        bytes[i * WORD_BYTES..(i + 1) * WORD_BYTES].copy_from_slice(&w.to_ne_bytes());
    };
    put(H_MAGIC, MAGIC);
    put(H_VERSION, FORMAT_VERSION);
    put(H_LAYOUT, layout);
    put(H_COUNTS, counts_word(bucket_count, quota_count));
    put(H_BOOT, boot);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        match fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    // The temporary name is only a staging step; failing to remove it changes nothing shared.
    let _ = fs::remove_file(&tmp);
    result.map_err(SharedError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::Throttle;

    /// 2024-01-01 00:00:00 UTC, a Monday.
    const JAN_1_2024: f64 = 1_704_067_200.0;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "pygw-shared-{tag}-{}-{:x}",
                std::process::id(),
                host_monotonic_now().to_bits()
            ));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("throttle")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn open(
        dir: &TempDir,
        buckets: &[(f64, u32)],
        quotas: &[(u64, QuotaPeriod)],
    ) -> SharedThrottle {
        SharedThrottle::open(&dir.file(), buckets, quotas).unwrap()
    }

    fn acq(t: &SharedThrottle, ids: &[usize], now: f64) -> Decision {
        t.acquire(ids, None, now, JAN_1_2024).unwrap()
    }

    #[test]
    fn bucket_starts_full_and_refills() {
        let dir = TempDir::new("refill");
        let t = open(&dir, &[(2.0, 3)], &[]);
        for left in [2, 1, 0] {
            let d = acq(&t, &[0], 100.0);
            assert_eq!((d.status, d.limit, d.remaining), (Status::Granted, 3, left));
        }
        let d = acq(&t, &[0], 100.0);
        assert_eq!(d.status, Status::Throttled);
        assert!((d.retry_after_s - 0.5).abs() < 1e-9);
        assert!((d.reset_s - 1.5).abs() < 1e-9);
        assert_eq!(acq(&t, &[0], 100.25).status, Status::Throttled);
        assert_eq!(acq(&t, &[0], 100.5).status, Status::Granted);
        // Long idle: full again, never above the burst.
        let d = acq(&t, &[0], 1e6);
        assert_eq!(
            (d.status, d.remaining, d.reset_s),
            (Status::Granted, 2, 0.5)
        );
    }

    #[test]
    fn matches_throttle_on_a_schedule() {
        let dir = TempDir::new("schedule");
        let specs = [(0.0, 2), (1.0, 1), (4.0, 3), (0.5, 0), (10.0, 5)];
        let shared = open(&dir, &specs, &[(3, QuotaPeriod::Day)]);
        let local = Throttle::new();
        for &(rate, burst) in &specs {
            local.add_bucket(rate, burst).unwrap();
        }
        local.add_quota(3, QuotaPeriod::Day);
        let plan: [(&[usize], Option<usize>, f64); 10] = [
            (&[1, 2], None, 0.0),
            (&[1, 2], None, 0.25),
            (&[2, 4, 4], Some(0), 0.5),
            (&[0, 2], Some(0), 0.5),
            (&[0, 4], None, 0.75),
            (&[0], Some(0), 1.0),
            (&[3], None, 1.0),
            (&[4, 1], Some(0), 2.0),
            (&[2, 4], Some(0), 2.0),
            (&[], None, 9.0),
        ];
        for (ids, quota, now) in plan {
            let a = shared.acquire(ids, quota, now, JAN_1_2024).unwrap();
            let b = local.acquire(ids, quota, now, JAN_1_2024).unwrap();
            assert_eq!(
                (a.status, a.limit, a.remaining, a.refused_by),
                (b.status, b.limit, b.remaining, b.refused_by)
            );
            for (x, y) in [(a.retry_after_s, b.retry_after_s), (a.reset_s, b.reset_s)] {
                assert!(x == y || (x - y).abs() < 1e-9, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn refusal_names_the_first_refusing_bucket_as_given() {
        let dir = TempDir::new("refused-by");
        // Bucket 2 is empty from the start; bucket 0 is emptied below. Taken in id order, so 0 is
        // found refusing before 2 whatever order the caller names them in.
        let t = open(
            &dir,
            &[(0.0, 1), (0.0, 5), (0.0, 0)],
            &[(0, QuotaPeriod::Day)],
        );
        assert_eq!(acq(&t, &[1, 2], 0.0).refused_by, Some(1));
        assert_eq!(acq(&t, &[2, 2, 1], 0.0).refused_by, Some(0));
        assert_eq!(acq(&t, &[1, 0], 0.0).refused_by, None);
        let d = acq(&t, &[1, 2, 0], 0.0);
        assert_eq!((d.status, d.refused_by), (Status::Throttled, Some(1)));
        assert_eq!(acq(&t, &[1, 0, 2], 0.0).refused_by, Some(1));
        assert_eq!(acq(&t, &[1, 1, 0], 0.0).refused_by, Some(2));
        // Refused by the quota (limit 0): no bucket is named.
        let d = t.acquire(&[1], Some(0), 0.0, JAN_1_2024).unwrap();
        assert_eq!((d.status, d.refused_by), (Status::QuotaExceeded, None));
        // Nothing taken from bucket 1 by any refusal: 5 - 1 (the one grant above) left.
        assert_eq!(acq(&t, &[1], 0.0).remaining, 3);
    }

    #[test]
    fn refused_request_gives_back_what_it_took() {
        let dir = TempDir::new("giveback");
        // Taken in id order: 0 gives a token before 1 refuses.
        let t = open(&dir, &[(0.0, 5), (1.0, 1), (0.0, 5)], &[]);
        assert_eq!(acq(&t, &[1], 0.0).status, Status::Granted);
        for _ in 0..10 {
            let d = acq(&t, &[2, 1, 0], 0.0);
            assert_eq!((d.status, d.limit, d.remaining), (Status::Throttled, 1, 0));
        }
        assert_eq!(acq(&t, &[0], 0.0).remaining, 4);
        assert_eq!(acq(&t, &[2], 0.0).remaining, 4);
    }

    #[test]
    fn quota_refusal_gives_back_tokens() {
        let dir = TempDir::new("quota");
        let t = open(&dir, &[(0.0, 10), (5.0, 4)], &[(1, QuotaPeriod::Day)]);
        let d = t.acquire(&[0, 1], Some(0), 0.0, JAN_1_2024).unwrap();
        assert_eq!((d.status, d.remaining), (Status::Granted, 3));
        let d = t
            .acquire(&[0, 1], Some(0), 0.0, JAN_1_2024 + 3600.0)
            .unwrap();
        assert_eq!((d.status, d.remaining), (Status::QuotaExceeded, 3));
        assert!((d.retry_after_s - 23.0 * 3600.0).abs() < 1e-6);
        assert_eq!(acq(&t, &[0], 0.0).remaining, 8);
        // The next day the quota has room again; a backwards wall clock stays in the later day.
        let next_day = JAN_1_2024 + SECS_PER_DAY;
        let d = t.acquire(&[], Some(0), 0.0, next_day).unwrap();
        assert_eq!(d.status, Status::Granted);
        let d = t.acquire(&[], Some(0), 0.0, JAN_1_2024).unwrap();
        assert_eq!(d.status, Status::QuotaExceeded);
        assert!((d.retry_after_s - 2.0 * SECS_PER_DAY).abs() < 1e-6);
    }

    #[test]
    fn quota_month_and_week_periods() {
        let dir = TempDir::new("periods");
        let t = open(
            &dir,
            &[],
            &[(1, QuotaPeriod::Month), (1, QuotaPeriod::Week)],
        );
        let feb = crate::throttle::days_from_civil(2024, 2, 1) as f64 * SECS_PER_DAY;
        let mar = crate::throttle::days_from_civil(2024, 3, 1) as f64 * SECS_PER_DAY;
        assert_eq!(
            t.acquire(&[], Some(0), 0.0, feb).unwrap().status,
            Status::Granted
        );
        let d = t.acquire(&[], Some(0), 0.0, mar - 400.0).unwrap();
        assert_eq!(d.status, Status::QuotaExceeded);
        assert!((d.retry_after_s - 400.0).abs() < 1e-6);
        assert_eq!(
            t.acquire(&[], Some(0), 0.0, mar).unwrap().status,
            Status::Granted
        );
        // Monday 2024-01-01 starts a week; Monday 2024-01-08 the next.
        assert_eq!(
            t.acquire(&[], Some(1), 0.0, JAN_1_2024).unwrap().status,
            Status::Granted
        );
        let sunday_night = JAN_1_2024 + 7.0 * SECS_PER_DAY - 1.0;
        let d = t.acquire(&[], Some(1), 0.0, sunday_night).unwrap();
        assert_eq!(d.status, Status::QuotaExceeded);
        assert!((d.retry_after_s - 1.0).abs() < 1e-6);
        assert_eq!(
            t.acquire(&[], Some(1), 0.0, sunday_night + 1.0)
                .unwrap()
                .status,
            Status::Granted
        );
    }

    #[test]
    fn rate_zero_gives_burst_then_never() {
        let dir = TempDir::new("rate0");
        let t = open(&dir, &[(0.0, 2)], &[]);
        assert_eq!(acq(&t, &[0], 0.0).status, Status::Granted);
        assert_eq!(acq(&t, &[0], 1.0).status, Status::Granted);
        for now in [2.0, 1e6, 1e300, f64::MAX] {
            let d = acq(&t, &[0], now);
            assert_eq!(d.status, Status::Throttled);
            assert_eq!((d.retry_after_s, d.reset_s), (f64::INFINITY, f64::INFINITY));
        }
    }

    #[test]
    fn burst_zero_always_refused() {
        let dir = TempDir::new("burst0");
        let t = open(&dir, &[(1000.0, 0)], &[]);
        for now in [0.0, 10.0, 1e9] {
            let d = acq(&t, &[0], now);
            assert_eq!(d.status, Status::Throttled);
            assert_eq!(d.retry_after_s, f64::INFINITY);
            assert_eq!((d.limit, d.remaining, d.reset_s), (0, 0, 0.0));
        }
    }

    #[test]
    fn time_never_runs_backwards() {
        let dir = TempDir::new("backwards");
        let t = open(&dir, &[(1.0, 1)], &[]);
        assert_eq!(acq(&t, &[0], 100.0).status, Status::Granted);
        // A stale reading from another worker is decided at the latest time seen.
        let d = acq(&t, &[0], 50.0);
        assert_eq!(d.status, Status::Throttled);
        assert!((d.retry_after_s - 1.0).abs() < 1e-9);
        assert_eq!(acq(&t, &[0], 100.5).status, Status::Throttled);
        assert_eq!(acq(&t, &[0], 101.0).status, Status::Granted);
    }

    #[test]
    fn extreme_times_and_rates_do_not_overflow() {
        let dir = TempDir::new("extreme");
        let t = open(&dir, &[(1e9, 4), (1e-300, u32::MAX), (1e-12, 1)], &[]);
        assert_eq!(acq(&t, &[0, 1, 2], -f64::MAX).status, Status::Granted);
        let d = acq(&t, &[0, 1, 2], f64::MAX);
        assert_eq!(d.status, Status::Granted);
        assert_eq!(acq(&t, &[2], f64::MAX).status, Status::Throttled);
        assert!(matches!(
            SharedThrottle::open(&dir.0.join("x"), &[(2e9, 1)], &[]),
            Err(SharedError::Config(_))
        ));
        assert!(matches!(
            SharedThrottle::open(&dir.0.join("y"), &[], &[(1 << 32, QuotaPeriod::Day)]),
            Err(SharedError::Config(_))
        ));
    }

    #[test]
    fn a_worker_dying_after_a_take_leaks_one_request() {
        let dir = TempDir::new("died");
        let specs = [(0.0, 3), (0.0, 3), (1.0, 0)];
        let dying = open(&dir, &specs, &[]);
        // The worker took from buckets 0 and 1 for a request that bucket 2 refuses, then died
        // before giving them back.
        assert!(dying.take(0, 0).is_ok());
        assert!(dying.take(1, 0).is_ok());
        assert!(dying.take(2, 0).is_err());
        drop(dying);
        let survivor = open(&dir, &specs, &[]);
        assert_eq!(acq(&survivor, &[0], 0.0).remaining, 1);
        assert_eq!(acq(&survivor, &[1], 0.0).remaining, 1);
        // A refill bucket leaks one interval, which comes back with time.
        let dir = TempDir::new("died2");
        let dying = open(&dir, &[(10.0, 2)], &[]);
        assert!(dying.take(0, 0).is_ok());
        drop(dying);
        let survivor = open(&dir, &[(10.0, 2)], &[]);
        assert_eq!(acq(&survivor, &[0], 0.0).remaining, 0);
        assert_eq!(acq(&survivor, &[0], 0.0).status, Status::Throttled);
        assert_eq!(acq(&survivor, &[0], 0.2).remaining, 1);
    }

    #[test]
    fn give_back_is_capped_at_the_burst() {
        let dir = TempDir::new("cap");
        let t = open(&dir, &[(0.0, 2), (100.0, 2)], &[]);
        let a = t.take(0, 0).unwrap();
        let b = t.take(1, 0).unwrap();
        t.give_back(a);
        t.give_back(a);
        t.give_back(b);
        t.give_back(b);
        let d = acq(&t, &[0, 1], 0.0);
        assert_eq!((d.status, d.remaining), (Status::Granted, 1));
        let d = acq(&t, &[0, 1], 0.0);
        assert_eq!((d.status, d.remaining), (Status::Granted, 0));
        assert_eq!(acq(&t, &[0], 0.0).status, Status::Throttled);
    }

    #[test]
    fn two_mappings_share_state() {
        let dir = TempDir::new("two");
        let specs = [(0.0, 3)];
        let quotas = [(2, QuotaPeriod::Day)];
        let a = open(&dir, &specs, &quotas);
        let b = open(&dir, &specs, &quotas);
        assert_eq!(
            a.acquire(&[0], Some(0), 0.0, JAN_1_2024).unwrap().remaining,
            2
        );
        assert_eq!(
            b.acquire(&[0], Some(0), 0.0, JAN_1_2024).unwrap().remaining,
            1
        );
        let d = a.acquire(&[0], Some(0), 0.0, JAN_1_2024).unwrap();
        assert_eq!((d.status, d.remaining), (Status::QuotaExceeded, 1));
        assert_eq!(b.acquire(&[0], None, 0.0, JAN_1_2024).unwrap().remaining, 0);
        assert_eq!(
            a.acquire(&[0], None, 0.0, JAN_1_2024).unwrap().status,
            Status::Throttled
        );
    }

    #[test]
    fn layout_mismatch_is_refused() {
        let dir = TempDir::new("layout");
        let a = open(&dir, &[(1.0, 2)], &[(5, QuotaPeriod::Day)]);
        assert_eq!(
            a.layout(),
            layout_hash(&[(1.0, 2)], &[(5, QuotaPeriod::Day)])
        );
        assert_eq!(
            a.layout(),
            layout_hash(&[(1.0, 2)], &[(5, QuotaPeriod::Day)])
        );
        for (buckets, quotas) in [
            (vec![(1.0, 3)], vec![(5, QuotaPeriod::Day)]),
            (vec![(1.5, 2)], vec![(5, QuotaPeriod::Day)]),
            (vec![(1.0, 2)], vec![(5, QuotaPeriod::Week)]),
            (vec![(1.0, 2), (1.0, 2)], vec![(5, QuotaPeriod::Day)]),
            (vec![(1.0, 2)], vec![]),
        ] {
            assert!(matches!(
                SharedThrottle::open(&dir.file(), &buckets, &quotas),
                Err(SharedError::Layout(_))
            ));
        }
        let junk = dir.0.join("junk");
        fs::write(&junk, vec![7u8; 4096]).unwrap();
        assert!(matches!(
            SharedThrottle::open(&junk, &[], &[]),
            Err(SharedError::Layout(_))
        ));
        fs::write(&junk, b"short").unwrap();
        assert!(matches!(
            SharedThrottle::open(&junk, &[], &[]),
            Err(SharedError::Layout(_))
        ));
        assert!(matches!(
            SharedThrottle::open(&dir.0.join("missing/dir/file"), &[], &[]),
            Err(SharedError::Io(_))
        ));
    }

    #[test]
    fn invalid_input_is_an_error_and_changes_nothing() {
        let dir = TempDir::new("invalid");
        for rate in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                SharedThrottle::open(&dir.file(), &[(rate, 1)], &[]),
                Err(SharedError::Config(_))
            ));
        }
        let t = open(&dir, &[(1.0, 1)], &[]);
        assert_eq!(
            t.acquire(&[0, 7], None, 0.0, 0.0),
            Err(ThrottleError::UnknownBucket(7))
        );
        assert_eq!(
            t.acquire(&[0], Some(0), 0.0, 0.0),
            Err(ThrottleError::UnknownQuota(0))
        );
        for (now, unix) in [
            (f64::NAN, 0.0),
            (f64::INFINITY, 0.0),
            (0.0, f64::NAN),
            (0.0, 1e14),
        ] {
            assert_eq!(
                t.acquire(&[0], None, now, unix),
                Err(ThrottleError::InvalidTime)
            );
        }
        assert_eq!(acq(&t, &[0], 0.0).status, Status::Granted);
    }

    #[test]
    fn concurrent_acquires_never_overissue() {
        let dir = TempDir::new("threads");
        let specs = [(0.0, 1000), (0.0, 900)];
        let quotas = [(700, QuotaPeriod::Day)];
        let handles: Vec<_> = (0..4)
            .map(|_| {
                // Each thread maps the file itself, like a worker process.
                let t = open(&dir, &specs, &quotas);
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| {
                            t.acquire(&[1, 0], Some(0), 0.0, JAN_1_2024).unwrap().status
                                == Status::Granted
                        })
                        .count()
                })
            })
            .collect();
        let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(granted, 700);
        let t = open(&dir, &specs, &quotas);
        assert_eq!(acq(&t, &[0], 0.0).remaining, 299);
        assert_eq!(acq(&t, &[1], 0.0).remaining, 199);
    }

    #[test]
    fn refill_rate_holds_under_contention() {
        let dir = TempDir::new("rate");
        let specs = [(1000.0, 10)];
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let t = open(&dir, &specs, &[]);
                std::thread::spawn(move || {
                    // 1 s of simulated time in 10 µs steps, the workers' clocks interleaved.
                    (0..100_000)
                        .filter(|i| {
                            let now = (i * 4 + w) as f64 * 2.5e-6;
                            acq(&t, &[0], now).status == Status::Granted
                        })
                        .count()
                })
            })
            .collect();
        let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // 1000 refilled in one second plus the initial burst of 10, give or take the last token.
        assert!((1009..=1010).contains(&granted), "{granted}");
    }

    #[test]
    fn time_and_quota_encodings_round_trip() {
        for t in [i64::MIN, -1, 0, 1, i64::MAX] {
            assert_eq!(decode_time(encode_time(t)), t);
        }
        assert!(encode_time(-5) < encode_time(3));
        assert_eq!(decode_time(0), i64::MIN);
        assert_eq!(unpack_quota(0), (None, 0));
        for (index, used) in [(-120_000_000, 0), (0, 7), (120_000_000, u32::MAX)] {
            assert_eq!(unpack_quota(pack_quota(index, used)), (Some(index), used));
        }
        for days in (-200_000..200_000).step_by(13) {
            let month = QuotaPeriod::index(QuotaPeriod::Month, days);
            let start = QuotaPeriod::start_day(QuotaPeriod::Month, month);
            assert!(start <= days && days < QuotaPeriod::start_day(QuotaPeriod::Month, month + 1));
        }
    }

    #[test]
    fn host_clock_is_monotonic() {
        let a = host_monotonic_now();
        let b = host_monotonic_now();
        assert!(b >= a && a > 0.0);
    }
}
