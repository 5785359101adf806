//! Offset order for publications from a shared broker: one [`Sequence`]
//! per room, driven by its hub.
//!
//! Pub/Sub is at most once and a node can join a room late, so a hub may
//! see a room's offsets out of order, twice, or with a gap. What it
//! delivers is always the next offset: a publication at or below the room's
//! offset is a duplicate (dropped); one ahead of a gap is held while the gap
//! is read from the broker's history; what the broker no longer holds is
//! skipped, with a warning, once that read is done.

use std::collections::BTreeMap;
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
    /// A history read to fill a gap is in flight.
    pub(crate) filling: bool,
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
    /// A gap the read did not cover, to read next.
    pub(crate) gap: Option<(u64, u64)>,
}

/// What a hub does with one arriving publication.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// At or below the room's offset: seen already.
    Duplicate,
    /// Deliver these, in this order: the publication and the held ones
    /// that follow it without a gap.
    Ready(Vec<Ready>),
    /// Held: a gap comes before it. Read `from..=to` from the broker's
    /// history, unless a read is in flight already (`None`).
    Gap(Option<(u64, u64)>),
}

impl Sequence {
    /// A sequence that follows the broker (after a head or a history read).
    pub(crate) fn synced() -> Self {
        Self {
            synced: true,
            ..Self::default()
        }
    }

    /// No history read is in flight any more (the hub that spawned it
    /// died): the next arrival or reconcile reads the gap again.
    pub(crate) fn reading_ended(&mut self) {
        self.filling = false;
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
            if self.filling {
                return Arrival::Gap(None);
            }
            self.filling = true;
            return Arrival::Gap(Some((latest + 1, offset - 1)));
        }
        let mut ready = vec![(offset, frame, at)];
        self.take_following(offset, &mut ready);
        Arrival::Ready(ready)
    }

    /// A gap read that covered offsets up to `read_to` is over, and what
    /// it found was applied; the room's latest offset is `latest`. Unless
    /// another read is in flight, offsets the read covered that are still
    /// missing are gone from the broker's history and skipped; then the held
    /// publications that follow are ready, or the gap before them is read
    /// next.
    pub(crate) fn filled(&mut self, latest: u64, read_to: u64) -> Filled {
        let mut out = Filled {
            latest,
            ..Filled::default()
        };
        let Some(&first) = self.held.keys().next() else {
            return out;
        };
        if self.filling || first <= latest + 1 {
            return out;
        }
        let skip_to = (first - 1).min(read_to);
        if skip_to > latest {
            out.skipped = Some((latest + 1, skip_to));
            out.latest = skip_to;
        }
        if first == out.latest + 1 {
            let (frame, at) = self.held.remove(&first).unwrap_or_default();
            out.ready.push((first, frame, at));
            self.take_following(first, &mut out.ready);
        } else {
            self.filling = true;
            out.gap = Some((out.latest + 1, first - 1));
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
        assert!(matches!(
            s.arrive(2, 5, frame(5), None),
            Arrival::Gap(Some((3, 4)))
        ));
        assert!(matches!(s.arrive(2, 6, frame(6), None), Arrival::Gap(None)));
        s.filling = false; // the read answered 3 and 4:
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
        assert!(matches!(s.arrive(2, 9, frame(9), None), Arrival::Gap(_)));
        s.filling = false; // the read of 3..=8 found nothing (trimmed)
        let f = s.filled(2, 8);
        assert_eq!((f.skipped, f.latest, f.gap), (Some((3, 8)), 8, None));
        assert_eq!(offsets(&f.ready), [9]);
    }

    /// A gap that opened while a read was in flight is read next, never
    /// skipped: only offsets the read covered can be gone.
    #[test]
    fn a_gap_behind_the_read_is_read_next_not_skipped() {
        let mut s = Sequence::synced();
        assert!(matches!(
            s.arrive(0, 2, frame(2), None),
            Arrival::Gap(Some((1, 1)))
        ));
        assert!(matches!(s.arrive(0, 4, frame(4), None), Arrival::Gap(None)));
        s.filling = false; // the read of 1..=1 answered 1, which freed 2:
        let Arrival::Ready(r) = s.arrive(0, 1, frame(1), None) else {
            panic!()
        };
        assert_eq!(offsets(&r), [1, 2]);
        let f = s.filled(2, 1);
        assert_eq!((f.skipped, f.latest, f.gap), (None, 2, Some((3, 3))));
        assert!(f.ready.is_empty() && s.filling);
    }

    /// A hub that died with a read in flight: the next incarnation ends
    /// it, so that the gap is read again rather than held for ever; and
    /// what is held when the epoch is left comes out in order.
    #[test]
    fn a_read_that_died_with_its_hub_is_read_again_and_the_held_can_be_taken() {
        let mut s = Sequence::synced();
        assert!(matches!(
            s.arrive(0, 3, frame(3), None),
            Arrival::Gap(Some((1, 2)))
        ));
        assert!(matches!(s.arrive(0, 5, frame(5), None), Arrival::Gap(None)));
        s.reading_ended();
        assert!(matches!(
            s.arrive(0, 6, frame(6), None),
            Arrival::Gap(Some((1, 5)))
        ));
        assert_eq!(offsets(&s.take_held()), [3, 5, 6]);
        assert!(s.is_empty());
    }
}
