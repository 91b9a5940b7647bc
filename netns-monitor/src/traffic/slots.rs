//! Which counter slots are free: the agent's bookkeeping for `TRAFFIC_SLOTS`, kept apart from the maps so its
//! rules can be tested without a kernel.
//!
//! Two rules. A slot freed an instant ago is not given out again while an older one is free: a classifier run
//! that found the slot just before its interface went (a TCX memo not yet dropped, a packet in flight) must not
//! count into the next interface's counters, and a run lasts microseconds, so [`COOLING`] is ample. Among free
//! slots the lowest goes first, so the used ones stay packed at the start of the arrays and a scrape reads only
//! up to the highest one in use, not the whole capacity.

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

/// How long a freed slot waits before it is given out again, unless no other is free.
pub const COOLING: Duration = Duration::from_secs(1);

/// Free counter slots out of `0..capacity`.
#[derive(Debug)]
pub struct SlotAllocator {
    capacity: u32,
    free: BTreeSet<u32>,
    /// Freed slots, oldest first, with when they were freed.
    cooling: VecDeque<(Instant, u32)>,
}

impl SlotAllocator {
    /// All of `0..capacity` free except `used`.
    pub fn new(capacity: u32, used: impl IntoIterator<Item = u32>) -> Self {
        let mut free: BTreeSet<u32> = (0..capacity).collect();
        for slot in used {
            free.remove(&slot);
        }
        Self { capacity, free, cooling: VecDeque::new() }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slots in use.
    pub fn used(&self) -> u32 {
        self.capacity - self.free.len() as u32 - self.cooling.len() as u32
    }

    /// The slot to give out at `now`: the lowest free one, else the one freed longest ago. `None` when all are
    /// in use.
    pub fn take(&mut self, now: Instant) -> Option<u32> {
        while let Some(&(freed, slot)) = self.cooling.front()
            && now.saturating_duration_since(freed) >= COOLING
        {
            self.cooling.pop_front();
            self.free.insert(slot);
        }
        self.free.pop_first().or_else(|| self.cooling.pop_front().map(|(_, slot)| slot))
    }

    /// Gives back a slot [`take`](Self::take) just returned, unused (nothing was assigned): free at once.
    pub fn untake(&mut self, slot: u32) {
        if slot < self.capacity {
            self.free.insert(slot);
        }
    }

    /// Frees a slot that was in use at `now`. Ignores slots out of range or already free.
    pub fn release(&mut self, slot: u32, now: Instant) {
        if slot >= self.capacity || self.free.contains(&slot) || self.cooling.iter().any(|&(_, s)| s == slot) {
            return;
        }
        self.cooling.push_back((now, slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_slot_first_skipping_used_ones() {
        let now = Instant::now();
        let mut slots = SlotAllocator::new(5, [0, 2]);
        assert_eq!(slots.used(), 2);
        assert_eq!(slots.take(now), Some(1));
        assert_eq!(slots.take(now), Some(3));
        assert_eq!(slots.take(now), Some(4));
        assert_eq!(slots.take(now), None, "all five in use");
        assert_eq!(slots.used(), 5);
    }

    #[test]
    fn a_freed_slot_cools_before_reuse_unless_none_other_is_free() {
        let start = Instant::now();
        let mut slots = SlotAllocator::new(3, []);
        let [a, b, c] = [0, 1, 2].map(|_| slots.take(start).expect("a free slot"));
        assert_eq!((a, b, c), (0, 1, 2));
        slots.release(a, start);
        slots.release(b, start + Duration::from_millis(10));
        assert_eq!(slots.used(), 1);
        // Nothing else free: the one freed longest ago, even though it has not cooled.
        assert_eq!(slots.take(start + Duration::from_millis(20)), Some(a));
        slots.release(c, start + Duration::from_millis(30));
        // b has cooled by then and c has not: b first, then c because nothing else is free.
        assert_eq!(slots.take(start + Duration::from_millis(10) + COOLING), Some(b));
        assert_eq!(slots.take(start + Duration::from_millis(10) + COOLING), Some(c));
        assert_eq!(slots.take(start + COOLING * 3), None);
    }

    #[test]
    fn cooled_slots_rejoin_the_free_ones_lowest_first() {
        let start = Instant::now();
        let mut slots = SlotAllocator::new(4, []);
        for _ in 0..3 {
            slots.take(start);
        }
        slots.release(2, start);
        slots.release(0, start);
        // Slot 3 was never used; 0 and 2 are still cooling, so 3 goes first.
        assert_eq!(slots.take(start), Some(3));
        let later = start + COOLING;
        assert_eq!(slots.take(later), Some(0), "cooled, and lower than 2");
        assert_eq!(slots.take(later), Some(2));
    }

    #[test]
    fn double_and_out_of_range_releases_are_ignored() {
        let now = Instant::now();
        let mut slots = SlotAllocator::new(2, [0, 1]);
        slots.release(1, now);
        slots.release(1, now);
        slots.release(7, now);
        assert_eq!(slots.used(), 1);
        assert_eq!(slots.take(now), Some(1));
        assert_eq!(slots.take(now), None);
        slots.untake(1);
        assert_eq!(slots.take(now), Some(1));
    }
}
