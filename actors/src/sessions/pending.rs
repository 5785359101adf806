//! [`Pending`]: the session changes waiting to be written behind, the latest
//! per session, and the deletes a flush is writing now.
//!
//! Upserts and deletes are held apart, each bounded by `max_pending`: past
//! it the oldest of the same kind is dropped (and counted), so a flood of
//! new sessions while the database is down never drops a delete, and a
//! delete stays known ([`deleting`](Pending::deleting)) until the database
//! has committed it. That is what keeps a session that ended here from
//! being adopted back from its row, however long the row outlives it.

use indexmap::{IndexMap, IndexSet};

use super::persistent::Row;

/// One flush's share of the pending changes.
#[derive(Clone)]
pub(super) struct Batch {
    pub(super) upserts: Vec<Row>,
    pub(super) deletes: Vec<String>,
}

impl Batch {
    pub(super) fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }
}

/// See the module docs.
pub(super) struct Pending {
    /// Rows to write, oldest first.
    upserts: IndexMap<String, Row>,
    /// Sessions whose rows are to be deleted, oldest first.
    deletes: IndexSet<String>,
    /// Deletes taken by the flush writing now.
    deleting: IndexSet<String>,
    /// Upserts taken by the flush writing now.
    upserting: usize,
    /// Counts the batches with deletes committed: a read of rows that spans
    /// a change of it may hold a row deleted meanwhile.
    generation: u64,
    max: usize,
}

impl Pending {
    pub(super) fn new(max: usize) -> Self {
        Self {
            upserts: IndexMap::new(),
            deletes: IndexSet::new(),
            deleting: IndexSet::new(),
            upserting: 0,
            generation: 0,
            max: max.max(1),
        }
    }

    /// Queues the session's row; answers how many changes were dropped to
    /// stay within the bound (0 or 1).
    pub(super) fn upsert(&mut self, id: &str, row: Row) -> usize {
        self.deletes.shift_remove(id);
        self.upserts.shift_remove(id);
        let dropped = usize::from(self.upserts.len() >= self.max);
        if dropped > 0 {
            self.upserts.shift_remove_index(0);
        }
        self.upserts.insert(id.to_owned(), row);
        dropped
    }

    /// Queues the deletion of the session's row; answers how many changes
    /// were dropped to stay within the bound (0 or 1).
    pub(super) fn delete(&mut self, id: &str) -> usize {
        self.upserts.shift_remove(id);
        if self.deletes.contains(id) {
            return 0;
        }
        let dropped = usize::from(self.deletes.len() >= self.max);
        if dropped > 0 {
            self.deletes.shift_remove_index(0);
        }
        self.deletes.insert(id.to_owned());
        dropped
    }

    /// Whether the session's row is to be deleted, or being deleted now.
    pub(super) fn deleting(&self, id: &str) -> bool {
        self.deletes.contains(id) || self.deleting.contains(id)
    }

    /// Changes not yet committed: queued, or being written now.
    pub(super) fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len() + self.deleting.len() + self.upserting
    }

    /// Takes up to `n` changes, oldest first, deletes before upserts; they
    /// count as being written until [`committed`](Self::committed) or
    /// [`failed`](Self::failed).
    pub(super) fn take(&mut self, n: usize) -> Batch {
        let deletes: Vec<String> = self.deletes.drain(..n.min(self.deletes.len())).collect();
        let rest = n - deletes.len();
        let upserts: Vec<Row> = self
            .upserts
            .drain(..rest.min(self.upserts.len()))
            .map(|(_, row)| row)
            .collect();
        self.deleting.extend(deletes.iter().cloned());
        self.upserting += upserts.len();
        Batch { upserts, deletes }
    }

    /// The database holds `batch`.
    pub(super) fn committed(&mut self, batch: &Batch) {
        for id in &batch.deletes {
            self.deleting.shift_remove(id);
        }
        if !batch.deletes.is_empty() {
            self.generation += 1;
        }
        self.upserting -= batch.upserts.len();
    }

    /// Changes whenever deletes were committed; a read of rows is only
    /// trusted if it is the same before and after.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// `batch` was not written: its changes are pending again, ahead of the
    /// newer ones, except where a newer change of the same session replaced
    /// them. Answers how many were dropped to stay within the bound.
    pub(super) fn failed(&mut self, batch: Batch) -> usize {
        self.upserting -= batch.upserts.len();
        let mut upserts = IndexMap::with_capacity(batch.upserts.len() + self.upserts.len());
        for row in batch.upserts {
            let id = row.id().to_owned();
            if !self.upserts.contains_key(&id) && !self.deletes.contains(&id) {
                upserts.insert(id, row);
            }
        }
        let mut deletes = IndexSet::with_capacity(batch.deletes.len() + self.deletes.len());
        for id in batch.deletes {
            self.deleting.shift_remove(&id);
            if !self.upserts.contains_key(&id) && !self.deletes.contains(&id) {
                deletes.insert(id);
            }
        }
        upserts.extend(self.upserts.drain(..));
        deletes.extend(self.deletes.drain(..));
        let dropped_upserts = upserts.len().saturating_sub(self.max);
        let dropped_deletes = deletes.len().saturating_sub(self.max);
        upserts.drain(..dropped_upserts);
        deletes.drain(..dropped_deletes);
        self.upserts = upserts;
        self.deletes = deletes;
        dropped_upserts + dropped_deletes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> Row {
        let now = std::time::SystemTime::now();
        let record = crate::sessions::SessionRecord {
            id: id.to_owned(),
            user: "u".to_owned(),
            rooms: Default::default(),
            created: now,
            last_seen: now,
        };
        Row::of(&record, None)
    }

    #[test]
    fn a_delete_counts_until_it_is_committed() {
        let mut p = Pending::new(10);
        p.delete("gone");
        let batch = p.take(10);
        assert_eq!(batch.deletes, ["gone"]);
        assert!(p.deleting("gone"), "being written");
        assert_eq!(p.len(), 1);
        p.committed(&batch);
        assert!(!p.deleting("gone"));
        assert_eq!(p.len(), 0);
        assert_eq!(
            p.generation(),
            1,
            "a read spanning the commit is not trusted"
        );
    }

    #[test]
    fn a_failed_delete_is_pending_again() {
        let mut p = Pending::new(10);
        p.delete("gone");
        let batch = p.take(10);
        assert_eq!(p.failed(batch), 0);
        assert!(p.deleting("gone"));
        assert_eq!(p.take(10).deletes, ["gone"]);
    }

    #[test]
    fn a_flood_of_upserts_never_drops_a_delete() {
        let mut p = Pending::new(3);
        p.delete("gone");
        let dropped: usize = (0..10)
            .map(|i| p.upsert(&format!("s{i}"), row(&format!("s{i}"))))
            .sum();
        assert_eq!(dropped, 7, "the oldest upserts");
        assert!(p.deleting("gone"));
        let batch = p.take(10);
        assert_eq!(batch.deletes, ["gone"]);
        let ids: Vec<&str> = batch.upserts.iter().map(Row::id).collect();
        assert_eq!(ids, ["s7", "s8", "s9"]);
    }

    #[test]
    fn the_latest_change_of_a_session_wins() {
        let mut p = Pending::new(10);
        p.upsert("s", row("s"));
        p.delete("s");
        assert_eq!(p.take(10).upserts.len(), 0);
        p.delete("t");
        p.upsert("t", row("t"));
        assert!(!p.deleting("t"));
        assert_eq!(p.len(), 2, "t's upsert, and s's delete being written");
    }

    #[test]
    fn a_failed_batch_yields_to_newer_changes_and_keeps_the_bound() {
        let mut p = Pending::new(2);
        p.upsert("a", row("a"));
        p.upsert("b", row("b"));
        let batch = p.take(10);
        p.delete("a"); // newer than the batch's upsert of a
        p.upsert("c", row("c"));
        p.upsert("d", row("d"));
        assert_eq!(
            p.failed(batch),
            1,
            "b, c, d over a bound of 2: b, the oldest"
        );
        assert!(p.deleting("a"));
        let batch = p.take(10);
        let ids: Vec<&str> = batch.upserts.iter().map(Row::id).collect();
        assert_eq!((batch.deletes, ids), (vec!["a".to_owned()], vec!["c", "d"]));
    }
}
