//! The notifications queued in the last minute, so that a webhook repeated within it
//! (Bootpay retrying an answer that came late, or a forged flood of one webhook) is
//! answered without queueing it again. Bounded in entries: when full, the oldest goes.
//!
//! Written by hand: a time-windowed set with a size cap is a map and a queue; the cache
//! crates that do this (moka) bring far more than it needs.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use receipt_verifier_core::Notification;

pub struct Recent {
    window: Duration,
    capacity: usize,
    seen: Mutex<Seen>,
}

/// When each key was queued, and the keys in that order.
#[derive(Default)]
struct Seen {
    at: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

/// What makes two notifications the same: the receipt and both hints.
pub fn key(note: &Notification) -> String {
    format!(
        "{}\u{0}{}\u{0}{}",
        note.receipt_id,
        note.webhook_type.as_deref().unwrap_or(""),
        note.status.map(|s| s.to_string()).unwrap_or_default()
    )
}

impl Recent {
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.expire(&mut seen, now);
        seen.at.contains_key(key)
    }

    pub fn insert(&self, key: String) {
        let now = Instant::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.expire(&mut seen, now);
        while seen.order.len() >= self.capacity {
            if let Some((old, at)) = seen.order.pop_front()
                && seen.at.get(&old) == Some(&at)
            {
                seen.at.remove(&old);
            }
        }
        seen.at.insert(key.clone(), now);
        seen.order.push_back((key, now));
    }

    fn expire(&self, seen: &mut Seen, now: Instant) {
        while let Some((key, at)) = seen.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if seen.at.get(key) == Some(at) {
                seen.at.remove(key);
            }
            seen.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_after_the_window_and_when_capacity_is_reached() {
        let recent = Recent::new(Duration::from_secs(60), 2);
        recent.insert("a".into());
        recent.insert("b".into());
        assert!(recent.contains("a") && recent.contains("b"));
        recent.insert("c".into());
        assert!(!recent.contains("a"), "the oldest went");
        assert!(recent.contains("b") && recent.contains("c"));
        let brief = Recent::new(Duration::ZERO, 10);
        brief.insert("a".into());
        assert!(!brief.contains("a"));
    }
}
