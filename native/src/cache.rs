//! Response cache: bounded by bytes, least recently used out first, per-entry TTL.
//!
//! Entries live in a slab (`Vec` slots reused through a free list) threaded by a doubly linked list in
//! recency order, and a `HashMap` maps keys to slots, so get, insert and each eviction are O(1).
//! Keys come from requests, i.e. from attackers, so the map uses foldhash's randomly seeded hasher.
//!
//! The cache is generic over the value so the Python bindings can keep the very object that was put
//! and hand it back on a hit without copying the body. The `*_into` methods move every value the
//! cache lets go of (evicted, replaced, expired, refused) into a caller's `Vec` instead of dropping it
//! in place: dropping a Python object can run arbitrary Python code, which must not happen while the
//! bindings hold the cache's lock.

use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::sync::Arc;

const NIL: usize = usize::MAX;

/// Counters since the cache was made (`clear` keeps them), with the current size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Lookups that found nothing, including those that found an expired entry.
    pub misses: u64,
    /// Entries pushed out to make room.
    pub evictions: u64,
    /// Entries found expired by a lookup (also counted in `misses`).
    pub expired: u64,
    pub entries: usize,
    /// Key bytes plus the caller-given value sizes of the entries held.
    pub bytes: usize,
}

#[derive(Debug)]
struct Entry<V> {
    /// Shared with the map's key: one allocation per entry, and eviction can find the map slot.
    key: Arc<str>,
    value: V,
    cost: usize,
    expires_at: f64,
}

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: usize,
    next: usize,
}

#[derive(Debug)]
pub struct Cache<V> {
    capacity: usize,
    bytes: usize,
    map: HashMap<Arc<str>, usize, RandomState>,
    /// `None` marks a free slot (listed in `free`); `links[i]` is meaningful only for used slots.
    slots: Vec<Option<Entry<V>>>,
    links: Vec<Link>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next to go.
    tail: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
    expired: u64,
}

impl<V> Cache<V> {
    /// A cache holding at most `capacity_bytes` of key bytes plus value sizes.
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity: capacity_bytes,
            bytes: 0,
            map: HashMap::with_hasher(RandomState::default()),
            slots: Vec::new(),
            links: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            hits: 0,
            misses: 0,
            evictions: 0,
            expired: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes_used(&self) -> usize {
        self.bytes
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
            expired: self.expired,
            entries: self.map.len(),
            bytes: self.bytes,
        }
    }

    /// Whether `key` is held and unexpired at `now`, without counting or touching recency.
    pub fn contains(&self, key: &str, now: f64) -> bool {
        self.map
            .get(key)
            .and_then(|&i| self.slots[i].as_ref())
            .is_some_and(|e| now < e.expires_at)
    }

    /// Keys from most to least recently used (expired entries not yet looked up included).
    pub fn keys_by_recency(&self) -> Vec<&str> {
        let mut out = Vec::with_capacity(self.map.len());
        let mut i = self.head;
        while i != NIL {
            if let Some(e) = &self.slots[i] {
                out.push(&*e.key);
            }
            i = self.links[i].next;
        }
        out
    }

    /// The value for `key`, marked most recently used. An entry whose TTL has run out by `now` is a
    /// miss and is removed.
    pub fn get(&mut self, key: &str, now: f64) -> Option<&V> {
        self.lookup(key, now, drop)
            .and_then(|i| self.slots[i].as_ref())
            .map(|e| &e.value)
    }

    /// `get`, moving an expired value into `dropped` rather than dropping it.
    pub fn get_into(&mut self, key: &str, now: f64, dropped: &mut Vec<V>) -> Option<&V> {
        self.lookup(key, now, |v| dropped.push(v))
            .and_then(|i| self.slots[i].as_ref())
            .map(|e| &e.value)
    }

    fn lookup(&mut self, key: &str, now: f64, mut release: impl FnMut(V)) -> Option<usize> {
        let Some(&i) = self.map.get(key) else {
            self.misses += 1;
            return None;
        };
        // A NaN `now` expires rather than serves.
        let expired = self.slots[i]
            .as_ref()
            .map_or(true, |e| now.is_nan() || now >= e.expires_at);
        if expired {
            self.misses += 1;
            self.expired += 1;
            if let Some(e) = self.remove_slot(i) {
                release(e.value);
            }
            return None;
        }
        self.hits += 1;
        self.unlink(i);
        self.push_front(i);
        Some(i)
    }

    /// Stores `value` under `key` for `ttl_s` seconds from `now`, accounting `key.len() + size` bytes
    /// and evicting least recently used entries until it fits. Returns false, storing nothing, when
    /// the entry alone exceeds the capacity, when `ttl_s` is not positive (0 disables caching) or
    /// when `now` is not finite. Any entry already under `key` is replaced, also when the new value is
    /// refused: the caller had a fresher answer for that key, so the old one is stale.
    pub fn insert(&mut self, key: &str, value: V, size: usize, ttl_s: f64, now: f64) -> bool {
        self.insert_with(key, value, size, ttl_s, now, drop)
    }

    /// `insert`, moving every value let go of (replaced, evicted, or `value` itself when refused)
    /// into `dropped`.
    pub fn insert_into(
        &mut self,
        key: &str,
        value: V,
        size: usize,
        ttl_s: f64,
        now: f64,
        dropped: &mut Vec<V>,
    ) -> bool {
        self.insert_with(key, value, size, ttl_s, now, |v| dropped.push(v))
    }

    fn insert_with(
        &mut self,
        key: &str,
        value: V,
        size: usize,
        ttl_s: f64,
        now: f64,
        mut release: impl FnMut(V),
    ) -> bool {
        if let Some(old) = self.remove(key) {
            release(old);
        }
        let cost = key.len().saturating_add(size);
        if cost > self.capacity || ttl_s.is_nan() || ttl_s <= 0.0 || !now.is_finite() {
            release(value);
            return false;
        }
        // bytes <= capacity always holds, so this cannot underflow (and cannot overflow like a sum).
        while self.capacity - self.bytes < cost && self.tail != NIL {
            // The tail is always a used slot; the break only guards against looping forever.
            let Some(e) = self.remove_slot(self.tail) else {
                break;
            };
            self.evictions += 1;
            release(e.value);
        }
        let key: Arc<str> = Arc::from(key);
        let entry = Entry {
            key: Arc::clone(&key),
            value,
            cost,
            expires_at: now + ttl_s,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                self.links.push(Link {
                    prev: NIL,
                    next: NIL,
                });
                self.slots.len() - 1
            }
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.bytes += cost;
        true
    }

    /// Removes `key`, handing back its value (expired or not).
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = *self.map.get(key)?;
        self.remove_slot(i).map(|e| e.value)
    }

    /// Empties the cache; the counters are kept.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.reset_index();
    }

    /// `clear`, moving every value into `dropped`.
    pub fn clear_into(&mut self, dropped: &mut Vec<V>) {
        dropped.extend(self.slots.drain(..).flatten().map(|e| e.value));
        self.reset_index();
    }

    fn reset_index(&mut self) {
        self.links.clear();
        self.free.clear();
        self.map.clear();
        self.head = NIL;
        self.tail = NIL;
        self.bytes = 0;
    }

    fn remove_slot(&mut self, i: usize) -> Option<Entry<V>> {
        let e = self.slots[i].take()?;
        self.unlink(i);
        self.map.remove(&e.key);
        self.free.push(i);
        self.bytes -= e.cost;
        Some(e)
    }

    fn unlink(&mut self, i: usize) {
        let Link { prev, next } = self.links[i];
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next].prev = prev;
        }
        self.links[i] = Link {
            prev: NIL,
            next: NIL,
        };
    }

    fn push_front(&mut self, i: usize) {
        self.links[i] = Link {
            prev: NIL,
            next: self.head,
        };
        if self.head == NIL {
            self.tail = i;
        } else {
            self.links[self.head].prev = i;
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<V>(c: &Cache<V>) -> Vec<String> {
        c.keys_by_recency().into_iter().map(String::from).collect()
    }

    #[test]
    fn hit_and_miss() {
        let mut c = Cache::new(100);
        assert!(c.insert("a", 1, 4, 10.0, 0.0));
        assert_eq!(c.get("a", 1.0), Some(&1));
        assert_eq!(c.get("b", 1.0), None);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries, s.bytes), (1, 1, 1, 5));
    }

    #[test]
    fn lru_order_and_eviction() {
        // Each entry costs 1 key byte + 9 = 10 bytes.
        let mut c = Cache::new(30);
        for k in ["a", "b", "c"] {
            assert!(c.insert(k, k.to_owned(), 9, 100.0, 0.0));
        }
        assert_eq!(keys(&c), ["c", "b", "a"]);
        assert!(c.get("a", 1.0).is_some());
        assert_eq!(keys(&c), ["a", "c", "b"]);
        assert!(c.insert("d", "d".into(), 9, 100.0, 0.0));
        assert_eq!(keys(&c), ["d", "a", "c"]);
        assert_eq!(c.stats().evictions, 1);
        // One entry worth 20 bytes pushes out the two least recent.
        assert!(c.insert("e", "e".into(), 19, 100.0, 0.0));
        assert_eq!(keys(&c), ["e", "d"]);
        assert_eq!(c.stats().evictions, 3);
        assert_eq!(c.bytes_used(), 30);
    }

    #[test]
    fn byte_accounting_counts_keys() {
        let mut c = Cache::new(1000);
        assert!(c.insert("hello", (), 10, 1.0, 0.0));
        assert!(c.insert("", (), 0, 1.0, 0.0));
        assert_eq!(c.bytes_used(), 15);
        assert_eq!(c.len(), 2);
        c.remove("hello");
        assert_eq!(c.bytes_used(), 0);
    }

    #[test]
    fn ttl_expiry_is_a_miss_and_removes() {
        let mut c = Cache::new(100);
        assert!(c.insert("k", 7, 1, 5.0, 10.0));
        assert_eq!(c.get("k", 14.999), Some(&7));
        assert!(c.contains("k", 14.0));
        assert!(!c.contains("k", 15.0));
        assert_eq!(c.get("k", 15.0), None);
        let s = c.stats();
        assert_eq!(
            (s.hits, s.misses, s.expired, s.entries, s.bytes),
            (1, 1, 1, 0, 0)
        );
        // An earlier clock reading than the insert still serves the entry.
        assert!(c.insert("k", 8, 1, 5.0, 10.0));
        assert_eq!(c.get("k", 3.0), Some(&8));
    }

    #[test]
    fn too_large_is_refused() {
        let mut c = Cache::new(10);
        assert!(c.insert("a", 1, 4, 1.0, 0.0));
        assert!(!c.insert("big", 2, 8, 1.0, 0.0));
        assert!(!c.insert("x", 2, usize::MAX, 1.0, 0.0));
        assert_eq!(c.len(), 1);
        assert_eq!(c.stats().evictions, 0);
        // Exactly at capacity fits.
        assert!(c.insert("b", 3, 9, 1.0, 0.0));
        assert_eq!(keys(&c), ["b"]);
        assert_eq!(c.bytes_used(), 10);
    }

    #[test]
    fn replace_reaccounts_bytes() {
        let mut c = Cache::new(100);
        assert!(c.insert("k", 1, 50, 1.0, 0.0));
        assert!(c.insert("other", 0, 10, 1.0, 0.0));
        assert!(c.insert("k", 2, 20, 1.0, 0.0));
        assert_eq!(c.bytes_used(), 21 + 15);
        assert_eq!(c.len(), 2);
        assert_eq!(keys(&c), ["k", "other"]);
        assert_eq!(c.get("k", 0.5), Some(&2));
        // Growing an entry in place may evict others but never itself.
        assert!(c.insert("k", 3, 99, 1.0, 0.0));
        assert_eq!(keys(&c), ["k"]);
        assert_eq!(c.bytes_used(), 100);
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn refused_replacement_drops_the_stale_entry() {
        let mut c = Cache::new(10);
        assert!(c.insert("k", 1, 1, 1.0, 0.0));
        assert!(!c.insert("k", 2, 100, 1.0, 0.0));
        assert!(c.is_empty());
        assert!(c.insert("k", 1, 1, 1.0, 0.0));
        assert!(!c.insert("k", 2, 1, 0.0, 0.0));
        assert!(c.is_empty());
    }

    #[test]
    fn ttl_zero_negative_nan_not_stored() {
        let mut c = Cache::new(100);
        for ttl in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            assert!(!c.insert("k", 1, 1, ttl, 0.0));
        }
        assert!(!c.insert("k", 1, 1, 1.0, f64::NAN));
        assert!(c.is_empty());
        assert!(c.insert("forever", 1, 1, f64::INFINITY, 0.0));
        assert_eq!(c.get("forever", 1e300), Some(&1));
        assert_eq!(c.get("forever", f64::NAN), None);
    }

    #[test]
    fn invalidate_and_clear() {
        let mut c = Cache::new(100);
        assert!(c.insert("a", 1, 1, 1.0, 0.0));
        assert!(c.insert("b", 2, 1, 1.0, 0.0));
        assert_eq!(c.remove("a"), Some(1));
        assert_eq!(c.remove("a"), None);
        assert_eq!(keys(&c), ["b"]);
        assert_eq!(c.get("b", 0.0), Some(&2));
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.bytes_used(), 0);
        assert_eq!(c.stats().hits, 1);
        assert_eq!(c.get("b", 0.0), None);
        assert!(c.insert("c", 3, 1, 1.0, 0.0));
        assert_eq!(keys(&c), ["c"]);
    }

    #[test]
    fn into_variants_hand_back_values() {
        let mut c = Cache::new(4);
        let mut out = Vec::new();
        assert!(c.insert_into("a", 1, 1, 1.0, 0.0, &mut out));
        assert!(c.insert_into("b", 2, 1, 1.0, 0.0, &mut out));
        assert!(out.is_empty());
        assert!(c.insert_into("c", 3, 1, 1.0, 0.0, &mut out));
        assert_eq!(out, [1]);
        assert!(c.insert_into("b", 4, 1, 1.0, 0.0, &mut out));
        assert_eq!(out, [1, 2]);
        assert!(!c.insert_into("z", 5, 9, 1.0, 0.0, &mut out));
        assert_eq!(out, [1, 2, 5]);
        assert_eq!(c.get_into("c", 2.0, &mut out), None);
        assert_eq!(out, [1, 2, 5, 3]);
        c.clear_into(&mut out);
        assert_eq!(out, [1, 2, 5, 3, 4]);
    }

    #[test]
    fn many_entries() {
        let n = 50_000;
        let mut c = Cache::new(10 * 8 * 1000);
        for i in 0..n {
            let k = format!("{i:08}");
            assert!(c.insert(&k, i, 2, 100.0, 0.0));
        }
        // 10 bytes per entry: the 8000 most recent remain.
        assert_eq!(c.len(), 8000);
        assert_eq!(c.stats().evictions, n - 8000);
        assert_eq!(c.get("00000000", 1.0), None);
        let last = format!("{:08}", n - 1);
        assert_eq!(c.get(&last, 1.0), Some(&(n - 1)));
        // Slots are reused, so the slab does not grow past the peak.
        assert!(c.slots.len() <= 8001);
        let order = keys(&c);
        assert_eq!(order.len(), 8000);
        assert_eq!(order[0], last);
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let mut c = Cache::new(usize::MAX);
        assert!(c.insert("a", 1, usize::MAX - 1, 1.0, 0.0));
        assert_eq!(c.bytes_used(), usize::MAX);
        assert!(c.insert("b", 2, 1, 1.0, 0.0));
        assert_eq!(keys(&c), ["b"]);
        assert_eq!(c.bytes_used(), 2);
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut c = Cache::new(0);
        assert!(!c.insert("a", 1, 0, 1.0, 0.0));
        assert!(c.is_empty());
        // An empty key with size 0 costs nothing, so it fits.
        assert!(c.insert("", 1, 0, 1.0, 0.0));
    }
}
