//! Offset order for publications from a shared broker: one [`Sequence`]
//! per room, driven by its hub.
//!
//! Pub/Sub is at most once and a node can join a room late, so a hub may
//! see a room's offsets out of order, twice, or with a gap. What it
//! delivers is always the next offset: a publication at or below the room's
//! offset is a duplicate (dropped); one ahead of a gap is held while the gap
//! is read from the broker's history; what the broker no longer holds is
//! skipped, with a warning, once that read is done.
//!
//! A gap read is a [`Read`], and only the sequence's current read may
//! change it: the answer of a read started before the room changed epoch
//! (its sequence replaced) or before the hub restarted says nothing about
//! the offsets the room waits for now, and is dropped whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytestring::ByteString;

/// A publication ready to deliver: offset, frame, when it was published
/// here (for the latency metric; `None` for others').
pub(crate) type Ready = (u64, ByteString, Option<Instant>);

/// Where a room stands in a shared broker's sequence.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    /// Whether the room's epoch and offset are the broker's (false before
    /// the first head, and while the room runs on a node-local epoch).
    pub(crate) synced: bool,
    /// Publications ahead of the next expected offset, held until the gap
    /// before them is filled.
    held: BTreeMap<u64, (ByteString, Option<Instant>)>,
    /// The gap read in flight, if any: its [`Read::id`].
    reading: Option<u64>,
}

/// A history read of offsets `from..=to` that a [`Sequence`] started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Read {
    /// Unique in the process, so that no later read, of this sequence or
    /// of one that replaced it, is taken for this one.
    id: u64,
    pub(crate) from: u64,
    pub(crate) to: u64,
}

impl Read {
    fn new(from: u64, to: u64) -> Self {
        static READS: AtomicU64 = AtomicU64::new(0);
        Self {
            id: READS.fetch_add(1, Ordering::Relaxed),
            from,
            to,
        }
    }
}

/// What a hub does after a gap read: see [`Sequence::filled`].
#[derive(Debug, Default)]
pub(crate) struct Filled {
    /// The room's latest offset once the skipped ones are passed over.
    pub(crate) latest: u64,
    /// Offsets gone from the broker's history, passed over.
    pub(crate) skipped: Option<(u64, u64)>,
    /// Held publications now ready, in order.
    pub(crate) ready: Vec<Ready>,
    /// The read of a gap it did not cover, to make next.
    pub(crate) gap: Option<Read>,
}

/// What a hub does with one arriving publication.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// At or below the room's offset: seen already.
    Duplicate,
    /// Deliver these, in this order: the publication and the held ones
    /// that follow it without a gap.
    Ready(Vec<Ready>),
    /// Held: a gap comes before it. Make this read of the broker's
    /// history, unless a read is in flight already (`None`).
    Gap(Option<Read>),
}

impl Sequence {
    /// A sequence that follows the broker (after a head or a history read).
    pub(crate) fn synced() -> Self {
        Self {
            synced: true,
            ..Self::default()
        }
    }

    /// Whether a gap read is in flight.
    pub(crate) fn is_reading(&self) -> bool {
        self.reading.is_some()
    }

    /// Starts a read of `from..=to`, unless one is in flight.
    pub(crate) fn read(&mut self, from: u64, to: u64) -> Option<Read> {
        if self.reading.is_some() {
            return None;
        }
        let read = Read::new(from, to);
        self.reading = Some(read.id);
        Some(read)
    }

    /// `read` answered: whether it is the read in flight (which it then no
    /// longer is). `false` for a stale read, whose answer must change
    /// nothing.
    pub(crate) fn answered(&mut self, read: Read) -> bool {
        self.reading.take_if(|id| *id == read.id).is_some()
    }

    /// No history read is in flight any more (the hub that spawned it
    /// died): the next arrival or reconcile reads the gap again.
    pub(crate) fn reading_ended(&mut self) {
        self.reading = None;
    }

    /// Everything held, in offset order, leaving nothing.
    pub(crate) fn take_held(&mut self) -> Vec<Ready> {
        std::mem::take(&mut self.held)
            .into_iter()
            .map(|(offset, (frame, at))| (offset, frame, at))
            .collect()
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// A publication at `offset` for a room whose latest delivered offset
    /// is `latest`.
    pub(crate) fn arrive(
        &mut self,
        latest: u64,
        offset: u64,
        frame: ByteString,
        at: Option<Instant>,
    ) -> Arrival {
        if offset <= latest {
            return Arrival::Duplicate;
        }
        if offset > latest + 1 {
            self.held.insert(offset, (frame, at));
            return Arrival::Gap(self.read(latest + 1, offset - 1));
        }
        let mut ready = vec![(offset, frame, at)];
        self.take_following(offset, &mut ready);
        Arrival::Ready(ready)
    }

    /// `read`, the current read (see [`Sequence::answered`]), is over, and
    /// what it found was applied; the room's latest offset is `latest`.
    /// Unless another read is in flight, offsets the read covered that are
    /// still missing are gone from the broker's history and skipped; then
    /// the held publications that follow are ready, or the gap before them
    /// is read next.
    pub(crate) fn filled(&mut self, latest: u64, read: Read) -> Filled {
        let mut out = Filled {
            latest,
            ..Filled::default()
        };
        let Some(&first) = self.held.keys().next() else {
            return out;
        };
        if self.reading.is_some() || first <= latest + 1 {
            return out;
        }
        let skip_to = (first - 1).min(read.to);
        if skip_to > latest && read.from <= latest + 1 {
            out.skipped = Some((latest + 1, skip_to));
            out.latest = skip_to;
        }
        if first == out.latest + 1 {
            let (frame, at) = self.held.remove(&first).unwrap_or_default();
            out.ready.push((first, frame, at));
            self.take_following(first, &mut out.ready);
        } else {
            out.gap = self.read(out.latest + 1, first - 1);
        }
        out
    }

    /// Moves the held publications right after `offset` into `ready`.
    fn take_following(&mut self, offset: u64, ready: &mut Vec<Ready>) {
        let mut next = offset + 1;
        while let Some((frame, at)) = self.held.remove(&next) {
            ready.push((next, frame, at));
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> ByteString {
        ByteString::from(n.to_string())
    }

    fn offsets(ready: &[Ready]) -> Vec<u64> {
        ready.iter().map(|r| r.0).collect()
    }

    /// The read `arrival` starts, asserting that it covers `from..=to`.
    fn gap(arrival: Arrival, from: u64, to: u64) -> Read {
        match arrival {
            Arrival::Gap(Some(read)) if (read.from, read.to) == (from, to) => read,
            other => panic!("expected a read of {from}..={to}, got {other:?}"),
        }
    }

    #[test]
    fn in_order_publications_are_delivered_and_repeats_dropped() {
        let mut s = Sequence::synced();
        let Arrival::Ready(r) = s.arrive(0, 1, frame(1), None) else {
            panic!()
        };
        assert_eq!(offsets(&r), [1]);
        assert!(matches!(s.arrive(1, 1, frame(1), None), Arrival::Duplicate));
    }

    #[test]
    fn a_gap_is_read_once_and_the_held_follow_the_fill() {
        let mut s = Sequence::synced();
        let read = gap(s.arrive(2, 5, frame(5), None), 3, 4);
        assert!(matches!(s.arrive(2, 6, frame(6), None), Arrival::Gap(None)));
        assert!(s.answered(read)); // the read answered 3 and 4:
        let Arrival::Ready(r) = s.arrive(2, 3, frame(3), None) else {
            panic!()
        };
        assert_eq!(offsets(&r), [3]);
        let Arrival::Ready(r) = s.arrive(3, 4, frame(4), None) else {
            panic!()
        };
        assert_eq!(offsets(&r), [4, 5, 6]);
        assert!(s.is_empty());
    }

    #[test]
    fn what_history_no_longer_holds_is_skipped_after_the_read() {
        let mut s = Sequence::synced();
        let read = gap(s.arrive(2, 9, frame(9), None), 3, 8);
        assert!(s.answered(read)); // it found nothing (trimmed)
        let f = s.filled(2, read);
        assert_eq!((f.skipped, f.latest, f.gap), (Some((3, 8)), 8, None));
        assert_eq!(offsets(&f.ready), [9]);
    }

    /// A gap that opened while a read was in flight is read next, never
    /// skipped: only offsets the read covered can be gone.
    #[test]
    fn a_gap_behind_the_read_is_read_next_not_skipped() {
        let mut s = Sequence::synced();
        let read = gap(s.arrive(0, 2, frame(2), None), 1, 1);
        assert!(matches!(s.arrive(0, 4, frame(4), None), Arrival::Gap(None)));
        assert!(s.answered(read)); // it answered 1, which freed 2:
        let Arrival::Ready(r) = s.arrive(0, 1, frame(1), None) else {
            panic!()
        };
        assert_eq!(offsets(&r), [1, 2]);
        let f = s.filled(2, read);
        assert_eq!((f.skipped, f.latest), (None, 2));
        assert_eq!(f.gap.map(|g| (g.from, g.to)), Some((3, 3)));
        assert!(f.ready.is_empty() && s.is_reading());
    }

    /// A hub that died with a read in flight: the next incarnation ends
    /// it, so that the gap is read again rather than held for ever, and the
    /// dead read's answer, should it come, changes nothing; what is held
    /// when the epoch is left comes out in order.
    #[test]
    fn a_read_that_died_with_its_hub_is_read_again_and_the_held_can_be_taken() {
        let mut s = Sequence::synced();
        let dead = gap(s.arrive(0, 3, frame(3), None), 1, 2);
        assert!(matches!(s.arrive(0, 5, frame(5), None), Arrival::Gap(None)));
        s.reading_ended();
        let again = gap(s.arrive(0, 6, frame(6), None), 1, 5);
        assert!(!s.answered(dead));
        assert!(s.is_reading());
        assert!(s.answered(again));
        assert_eq!(offsets(&s.take_held()), [3, 5, 6]);
        assert!(s.is_empty());
    }

    /// The chaos suite's gap (two nodes, Redis restarted empty): a read
    /// started in the old epoch answered once the room was in the new one,
    /// where a read of 1..=8 was in flight; the old read's `to` (51) was
    /// taken to cover 1..=8, which were skipped though Redis held them.
    #[test]
    fn a_read_of_an_epoch_left_since_changes_nothing_in_the_new_one() {
        let mut old = Sequence::synced();
        let stale = gap(old.arrive(50, 52, frame(52), None), 51, 51);
        let mut s = Sequence::synced(); // the room adopted a new epoch
        let current = gap(s.arrive(0, 9, frame(9), None), 1, 8);
        assert!(!s.answered(stale), "a read of the old epoch is stale");
        assert!(s.is_reading(), "the current read is still in flight");
        assert!(s.answered(current));
        let f = s.filled(0, current);
        assert_eq!(
            f.skipped,
            Some((1, 8)),
            "only the read that covered 1..=8 skips them"
        );
    }
}
