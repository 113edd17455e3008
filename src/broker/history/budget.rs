//! The broker-wide memory budget of retained history
//! (`history.max_total_bytes`): the bytes every channel's in-memory
//! [`History`](super::History) holds together, and which events
//! must go when the total passes the budget.
//!
//! Each history charges the budget for every event it keeps
//! ([`HistoryBudget::charge`]) and is refunded when the event leaves, for
//! whatever reason ([`HistoryBudget::refund`]): retention by count or age,
//! this budget, or the channel stopping. The budget keeps the charged bytes
//! by the time the events were accepted, in slices of time. When the total
//! passes the budget it moves its *cut* forward over the oldest slices until
//! what is left is at most [`LOW_WATER`] of the budget: every event accepted
//! before the cut is to leave, whichever channel holds it, so the oldest
//! events of the whole broker go first (to the precision of one slice). A
//! channel trims its own events before the cut when it next keeps an event
//! and at every tick (`stream.heartbeat`), so an idle channel gives its
//! share back within one heartbeat. A client resuming from a trimmed event
//! gets the usual `broker.gap` notice (`history-trimmed`).
//!
//! A channel's own bounds (`history.max_events`, `history.max_age`) still
//! hold; the budget only adds a bound on their sum over up to
//! `broker.max_channels` channels. One lock orders the charges, refunds and
//! cuts of all channels; it is held for a few additions.

use std::{
    collections::VecDeque,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::broker::event::Event;

/// What a cut leaves of the budget: cutting a little further than needed
/// makes cuts rare (one per eighth of the budget published) instead of one
/// per event once the budget is full.
pub const LOW_WATER: f64 = 7.0 / 8.0;

/// The memory one retained event costs beyond its encoded frame: the
/// [`Event`] and its reference count (one allocation, 144 bytes with
/// glibc's header), the frame buffer's shared header (32) and slack (up to
/// ~50), and its slot in the history's queue (8). Measured
/// (docs/hostile-clients.md, "memory per retained event"): a 100-byte
/// payload, a 131-byte frame, costs 368 bytes of RSS.
pub const EVENT_OVERHEAD: u64 = 240;

/// Slices the time a history spans (`history.max_age`) is cut into, at most;
/// a slice is never shorter than [`MIN_SLICE`].
const SLICES: u32 = 4096;

/// The shortest slice: cuts are at most this much finer than needed.
const MIN_SLICE: Duration = Duration::from_millis(100);

/// The budget (see the module docs). Shared by every channel's history.
#[derive(Debug)]
pub struct HistoryBudget {
    /// The most bytes retained events may cost together.
    max_bytes: u64,
    /// Slice 0 starts here: `max_age` before the budget was made, so every
    /// event young enough to be retained falls at or after it.
    origin: Instant,
    slice: Duration,
    /// The first slice that is kept: events accepted in earlier slices are
    /// to leave their histories.
    cut: AtomicU64,
    ledger: Mutex<Ledger>,
    /// The bytes charged and not refunded (for metrics, without the lock).
    retained: AtomicU64,
    /// Events trimmed because of the budget (for metrics).
    trimmed: AtomicU64,
}

/// The charged bytes by slice of acceptance time.
#[derive(Debug, Default)]
struct Ledger {
    /// Every byte charged and not refunded.
    used: u64,
    /// Of `used`, the bytes of events before the cut, still waiting for
    /// their channels to trim them.
    doomed: u64,
    /// The slice `slices[0]` counts (at or after the cut).
    base: u64,
    /// Bytes charged per slice from `base` on, for slices at or after the cut.
    slices: VecDeque<u64>,
}

impl HistoryBudget {
    /// A budget of `max_bytes` for histories whose events live at most `max_age`.
    pub fn new(max_bytes: u64, max_age: Duration) -> Self {
        let now = Instant::now();
        Self {
            max_bytes,
            origin: now.checked_sub(max_age).unwrap_or(now),
            slice: (max_age / SLICES).max(MIN_SLICE),
            cut: AtomicU64::new(0),
            ledger: Mutex::default(),
            retained: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
        }
    }

    /// What `event` costs while retained.
    pub fn cost(event: &Event) -> u64 {
        event.frame.chunk().len() as u64 + EVENT_OVERHEAD
    }

    fn slice_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        (since.as_nanos() / self.slice.as_nanos()) as u64
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Every update leaves the ledger consistent before the next line.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An event accepted `at` is retained: counts its `bytes`, and moves the
    /// cut forward when the budget is exceeded.
    pub fn charge(&self, at: Instant, bytes: u64) {
        let slice = self.slice_of(at);
        let mut ledger = self.ledger();
        ledger.used += bytes;
        if slice < self.cut.load(Ordering::Acquire) {
            ledger.doomed += bytes;
        } else {
            *ledger.slot(slice) += bytes;
        }
        if ledger.used - ledger.doomed > self.max_bytes {
            let keep = (self.max_bytes as f64 * LOW_WATER) as u64;
            while ledger.used - ledger.doomed > keep {
                let Some(oldest) = ledger.slices.pop_front() else {
                    break;
                };
                ledger.doomed += oldest;
                ledger.base += 1;
            }
            self.cut.store(ledger.base, Ordering::Release);
        }
        self.retained.store(ledger.used, Ordering::Relaxed);
    }

    /// An event accepted `at` and charged `bytes` left its history.
    pub fn refund(&self, at: Instant, bytes: u64) {
        let slice = self.slice_of(at);
        let mut ledger = self.ledger();
        ledger.used = ledger.used.saturating_sub(bytes);
        if slice < self.cut.load(Ordering::Acquire) {
            ledger.doomed = ledger.doomed.saturating_sub(bytes);
        } else {
            let index = slice.saturating_sub(ledger.base) as usize;
            if let Some(count) = ledger.slices.get_mut(index) {
                *count = count.saturating_sub(bytes);
            }
            while ledger.slices.front() == Some(&0) {
                ledger.slices.pop_front();
                ledger.base += 1;
            }
        }
        self.retained.store(ledger.used, Ordering::Relaxed);
    }

    /// Whether an event accepted `at` is before the cut: it must leave.
    pub fn is_cut(&self, at: Instant) -> bool {
        self.slice_of(at) < self.cut.load(Ordering::Acquire)
    }

    /// Counts events a history trimmed because of the budget.
    pub fn count_trimmed(&self, events: u64) {
        self.trimmed.fetch_add(events, Ordering::Relaxed);
    }

    /// The bytes retained events cost now.
    pub fn retained_bytes(&self) -> u64 {
        self.retained.load(Ordering::Relaxed)
    }

    /// Events trimmed because of the budget so far.
    pub fn trimmed_events(&self) -> u64 {
        self.trimmed.load(Ordering::Relaxed)
    }

    /// The budget in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

impl Ledger {
    /// The count of `slice` (at or after the cut), made if need be.
    fn slot(&mut self, slice: u64) -> &mut u64 {
        if self.slices.is_empty() {
            self.base = slice;
        }
        // An event older than the oldest counted slice (read back from a
        // durable store): the slices reach back to it.
        while slice < self.base {
            self.slices.push_front(0);
            self.base -= 1;
        }
        let index = (slice - self.base) as usize;
        if index >= self.slices.len() {
            self.slices.resize(index + 1, 0);
        }
        &mut self.slices[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn budget(max_bytes: u64) -> (HistoryBudget, Instant) {
        // Slices of 100 ms (an hour / 4096 is less).
        let budget = HistoryBudget::new(max_bytes, Duration::from_secs(60));
        let start = budget.origin + Duration::from_secs(60);
        (budget, start)
    }

    /// Under the budget nothing is cut; refunds give the bytes back.
    #[test]
    fn under_the_budget_nothing_is_cut() {
        let (budget, start) = budget(1000);
        budget.charge(start, 400);
        budget.charge(start + SECOND, 400);
        assert_eq!(budget.retained_bytes(), 800);
        assert!(!budget.is_cut(start));
        budget.refund(start, 400);
        budget.refund(start + SECOND, 400);
        assert_eq!(budget.retained_bytes(), 0);
        assert!(!budget.is_cut(start));
    }

    /// Over the budget the oldest slices are cut, down to the low water,
    /// whichever histories hold them; what they give back is not cut twice.
    #[test]
    fn over_the_budget_the_oldest_go_first() {
        let (budget, start) = budget(1000);
        for n in 0..10 {
            budget.charge(start + n * SECOND, 100);
        }
        assert!(!budget.is_cut(start));
        budget.charge(start + 10 * SECOND, 100);
        // 1100 > 1000: down to 875 at most, so the three oldest go.
        for n in 0..3 {
            assert!(budget.is_cut(start + n * SECOND), "slice {n}");
        }
        assert!(!budget.is_cut(start + 3 * SECOND));
        for n in 0..3 {
            budget.refund(start + n * SECOND, 100);
        }
        assert_eq!(budget.retained_bytes(), 800);
        // Room again for two more before the next cut.
        budget.charge(start + 11 * SECOND, 100);
        budget.charge(start + 12 * SECOND, 100);
        assert!(!budget.is_cut(start + 3 * SECOND));
        budget.charge(start + 13 * SECOND, 100);
        assert!(budget.is_cut(start + 3 * SECOND));
        assert!(!budget.is_cut(start + 13 * SECOND));
    }

    /// Events trimmed for other reasons before the cut reached them leave
    /// no trace: the ledger only counts what is retained.
    #[test]
    fn refunds_before_the_cut_leave_no_trace() {
        let (budget, start) = budget(1000);
        for n in 0..20 {
            budget.charge(start + n * SECOND, 100);
            if n >= 5 {
                // Retention by count keeps five events.
                budget.refund(start + (n - 5) * SECOND, 100);
            }
        }
        assert_eq!(budget.retained_bytes(), 500);
        assert!(!budget.is_cut(start + 15 * SECOND));
        let ledger = budget.ledger();
        assert_eq!(ledger.slices.iter().sum::<u64>(), 500);
        assert_eq!(ledger.base, budget.slice_of(start + 15 * SECOND));
    }

    /// An event charged before the cut (read back from a store) is cut at
    /// once; one older than the counted slices but after the cut is counted.
    #[test]
    fn old_events_are_judged_by_the_cut() {
        let (budget, start) = budget(1000);
        for n in 10..21 {
            budget.charge(start + n * SECOND, 100);
        }
        assert!(budget.is_cut(start + 10 * SECOND));
        budget.charge(start, 100);
        assert!(budget.is_cut(start));
        budget.refund(start, 100);
        assert_eq!(budget.retained_bytes(), 1100);
        let (budget, start) = self::budget(1000);
        budget.charge(start + 5 * SECOND, 100);
        budget.charge(start, 100);
        assert!(!budget.is_cut(start));
        budget.refund(start, 100);
        budget.refund(start + 5 * SECOND, 100);
        assert_eq!(budget.retained_bytes(), 0);
        assert!(budget.ledger().slices.is_empty());
    }
}
