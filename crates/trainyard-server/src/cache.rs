//! A cache bounded by bytes: the least recently used entries leave first. Decoded models and
//! parsed uploads are large and their count is up to users, so a count bound would not hold
//! memory down.

use std::collections::HashMap;
use std::sync::Mutex;

struct Entry<V> {
    value: V,
    bytes: usize,
    used: u64,
}

struct Inner<V> {
    entries: HashMap<String, Entry<V>>,
    bytes: usize,
    clock: u64,
}

pub struct ByteLru<V> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
}

impl<V: Clone> ByteLru<V> {
    pub fn new(capacity: usize) -> Self {
        ByteLru {
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let mut inner = self.inner.lock().unwrap();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(key)?;
        entry.used = now;
        Some(entry.value.clone())
    }

    /// Stores `value`, evicting the least recently used entries until the total fits. A value
    /// larger than the whole capacity is not kept (the caller still has it).
    pub fn insert(&self, key: String, value: V, bytes: usize) {
        if bytes > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().unwrap();
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.entries.insert(key, Entry { value, bytes, used }) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.capacity {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
                .expect("bytes > 0 means an entry exists");
            let gone = inner.entries.remove(&oldest).expect("present");
            inner.bytes -= gone.bytes;
        }
    }

    pub fn remove(&self, key: &str) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(gone) = inner.entries.remove(key) {
            inner.bytes -= gone.bytes;
        }
    }

    /// Bytes held and entries, for metrics and tests.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        (inner.bytes, inner.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entries_leave_first() {
        let cache = ByteLru::new(100);
        cache.insert("a".into(), 1, 40);
        cache.insert("b".into(), 2, 40);
        assert_eq!(cache.get("a"), Some(1));
        cache.insert("c".into(), 3, 40);
        assert_eq!(cache.get("b"), None, "b was least recently used");
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("c"), Some(3));
        assert_eq!(cache.usage(), (80, 2));
    }

    #[test]
    fn replacing_and_oversized_entries_keep_the_count_right() {
        let cache = ByteLru::new(100);
        cache.insert("a".into(), 1, 60);
        cache.insert("a".into(), 2, 30);
        assert_eq!(cache.usage(), (30, 1));
        cache.insert("huge".into(), 3, 101);
        assert_eq!(cache.get("huge"), None);
        cache.remove("a");
        assert_eq!(cache.usage(), (0, 0));
    }
}
