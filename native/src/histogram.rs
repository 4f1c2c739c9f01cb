//! Fixed-bucket histograms updated on every request (latencies, per-stage timings).
//!
//! An observation is a bucket search and two atomic updates. Done in Python it cost a call
//! frame, a bisect and two boxed-number updates, several times over per request; metrics were
//! a measurable share of a cache hit's cost. Counts are per bucket (not cumulative) and the
//! exposition sums them; bounds follow Prometheus' `le` rule (a value equal to a bound falls
//! in that bound's bucket).

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Histogram {
    bounds: Box<[f64]>,
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as f64 bits: there is no atomic f64.
    sum_bits: AtomicU64,
}

impl Histogram {
    /// `bounds`: ascending upper bounds, the last of them +Inf so that every value has a bucket.
    pub fn new(bounds: Vec<f64>) -> Result<Self, String> {
        if bounds.last() != Some(&f64::INFINITY) {
            return Err("the last bound must be +Inf".to_owned());
        }
        if bounds.iter().any(|b| b.is_nan()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err("bounds must be strictly ascending numbers".to_owned());
        }
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Self {
            bounds: bounds.into_boxed_slice(),
            counts,
            sum_bits: AtomicU64::new(0f64.to_bits()),
        })
    }

    /// The bucket of `value`: the first whose bound is >= value (NaN counts in the first,
    /// as Python's bisect_left puts it).
    pub fn bucket(&self, value: f64) -> usize {
        self.bounds
            .partition_point(|bound| *bound < value)
            .min(self.bounds.len() - 1)
    }

    pub fn observe(&self, value: f64) {
        self.counts[self.bucket(value)].fetch_add(1, Ordering::Relaxed);
        let mut current = self.sum_bits.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum_bits.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum_bits.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist() -> Histogram {
        Histogram::new(vec![0.001, 0.01, 0.1, f64::INFINITY]).expect("valid bounds")
    }

    #[test]
    fn a_value_on_a_bound_counts_in_that_bound_s_bucket() {
        let h = hist();
        for v in [0.0005, 0.001, 0.0011, 0.01, 0.5, f64::INFINITY] {
            h.observe(v);
        }
        assert_eq!(h.counts(), vec![2, 2, 0, 2]);
    }

    #[test]
    fn the_sum_adds_every_observation() {
        let h = hist();
        h.observe(0.25);
        h.observe(0.5);
        assert_eq!(h.sum(), 0.75);
    }

    #[test]
    fn nan_lands_in_the_first_bucket_like_bisect_left() {
        let h = hist();
        h.observe(f64::NAN);
        assert_eq!(h.counts(), vec![1, 0, 0, 0]);
    }

    #[test]
    fn bounds_without_inf_or_out_of_order_are_refused() {
        assert!(Histogram::new(vec![0.1, 1.0]).is_err());
        assert!(Histogram::new(vec![1.0, 0.1, f64::INFINITY]).is_err());
        assert!(Histogram::new(vec![]).is_err());
    }

    #[test]
    fn concurrent_observers_lose_nothing() {
        let h = std::sync::Arc::new(hist());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        h.observe(0.5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer thread");
        }
        assert_eq!(h.counts()[3], 40_000);
        assert_eq!(h.sum(), 20_000.0);
    }
}
