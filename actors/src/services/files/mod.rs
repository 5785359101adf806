//! The `files` actor: watches directories for print files, indexes them in
//! the database, and broadcasts what changed to the system room `$files`.
//!
//! Owns: the filesystem watcher (notify, through notify-debouncer-full: a
//! burst of writes to one file is one event once it has been quiet for
//! `debounce`), the queue of paths waiting to be looked at, and the scan and
//! the database write in flight (one of each at a time, so changes apply in
//! order).
//! Answers: [`Rpc`](crate::handlers::Rpc) for `files.list` and
//! `files.search`, read from the database ([`commands`]); `/health/files` shows the directories,
//! which are watched, the files indexed and the writes pending.
//!
//! A file counts when its extension is one of `extensions` (any case). A
//! scan (on a worker thread: `spawn_blocking`, as are the reads for the
//! SHA-256) looks at the paths an event named, or a whole directory, and
//! compares each file's size and modification time with the index: a new
//! file is `added`, one whose content changed is `changed`, one that is gone
//! is `removed`, and each is broadcast to `$files` as
//! `{"event", "path", "directory", "name", "size", "modified_at", "sha256"}`
//! (only `event`, `path`, `directory` and `name` for `removed`). A file
//! whose time changed but whose content did not is re-indexed silently.
//!
//! The index is the `files` table, written behind through the `db` handle in
//! one transaction per batch; while the database is down the writes wait
//! (the actor is then degraded) and go in when it answers. At start the
//! rows of the configured directories are loaded and every directory is
//! scanned, so what changed while the server was down is caught up.
//!
//! Directories: one that is missing is checked for every `rescan_interval`
//! and watched (and scanned) once it exists; one that is deleted has all its
//! files removed, and is watched again when it is re-created (a changed
//! inode counts as re-created). When no watcher can be had (e.g. inotify's
//! limits), every `rescan_interval` rescans every directory instead.
//!
//! Restart policy: permanent, non-critical, stage `services`.
//! Lost on a crash: the scan and write in flight and the events not yet
//! scanned. The index and the pending writes live in the [`Files`] handle,
//! and a new incarnation rescans every directory, so nothing is missed.
//! With no directory configured the actor is idle and healthy.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::channel::mpsc;
use indexmap::IndexMap;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::db::{Db, DbError};
use crate::health::{Health, HealthReply};
use crate::lease::Lease;
use crate::rooms::Rooms;
use crate::shutdown::Stage;
use crate::supervision::{Child, ChildSpec};

use crate::clock::{from_unix_ms, now_unix_ms, rfc3339, unix_ms};
use crate::settings::{at_least, SettingError};

mod actor;
pub mod commands;
mod scan;

pub use actor::FilesActor;
pub use commands::PREFIX;
pub use scan::sha256_file;
use scan::{dir_id, rfc3339_ms, DirId, Scan};

/// The system room changes go to.
pub const ROOM: &str = "$files";

/// Most rows written in one transaction.
const WRITE_BATCH: usize = 500;

/// The `files` settings (config `[files]`), as the file spells them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSettings {
    /// Directories to watch; none leaves the service idle. Env: comma-separated.
    pub directories: Vec<String>,
    /// File extensions that count, without the dot. Env: comma-separated.
    pub extensions: Vec<String>,
    /// Quiet time before a burst of changes to a file is acted on.
    pub debounce_ms: u64,
    /// How often missing or re-created directories are checked for.
    pub rescan_interval_ms: u64,
    /// Whether subdirectories count.
    pub recursive: bool,
}

impl FilesSettings {
    /// Checks ranges.
    ///
    /// # Errors
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.directories.iter().any(|d| d.trim().is_empty()) {
            return Err(SettingError::key(
                "files.directories",
                "must not hold an empty path",
            ));
        }
        if self.extensions.is_empty()
            || self
                .extensions
                .iter()
                .any(|e| e.trim_start_matches('.').is_empty() || e.contains(['/', ' ']))
        {
            return Err(SettingError::key(
                "files.extensions",
                "must list extensions such as \"gcode\"",
            ));
        }
        at_least("files.debounce_ms", self.debounce_ms, 1)?;
        at_least("files.rescan_interval_ms", self.rescan_interval_ms, 10)
    }

    /// Quiet time before a burst of events on a file is acted on.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    /// How often missing, deleted or re-created directories are checked
    /// for, and pending database writes retried.
    pub fn rescan_interval(&self) -> Duration {
        Duration::from_millis(self.rescan_interval_ms)
    }
}

/// A row of the `files` table.
#[derive(
    Clone, Debug, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable,
)]
#[diesel(table_name = crate::db::schema::files)]
pub struct FileRow {
    /// Absolute path.
    pub path: String,
    /// The configured directory it is under.
    pub directory: String,
    /// Size in bytes.
    pub size: i64,
    /// Modification time, Unix ms.
    pub modified_at: i64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// When the row was written, Unix ms.
    pub indexed_at: i64,
}

/// What the index knows of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Index of its directory in the settings.
    root: usize,
    size: i64,
    modified_at: i64,
    sha256: String,
}

/// What a scan found about one file.
#[derive(Debug)]
enum Change {
    /// A file the index did not have.
    Added(PathBuf, Entry),
    /// A file whose content changed.
    Changed(PathBuf, Entry),
    /// Same content, new time or size bookkeeping: re-indexed, not broadcast.
    Touched(PathBuf, Entry),
    /// A file that is gone.
    Removed(PathBuf),
}

/// The index and the writes waiting for the database; outlives the actor.
#[derive(Default)]
struct State {
    /// Every file known, by absolute path.
    index: HashMap<PathBuf, Entry>,
    /// Whether the rows of the configured directories were loaded.
    loaded: bool,
    /// Writes not yet in the database: a row to upsert, or `None` to delete.
    pending: IndexMap<String, Option<FileRow>>,
    /// Paths whose writes were taken out of `pending` by the write in flight.
    writing: std::collections::HashSet<String>,
    /// While the rows load: the paths changed since the load began. Memory
    /// is newer than the rows read for those, so the load skips them (else
    /// it could bring back a file removed meanwhile).
    changed_during_load: Option<std::collections::HashSet<PathBuf>>,
    /// The last database failure.
    last_error: Option<String>,
    added: u64,
    changed: u64,
    removed: u64,
}

/// What the handle shares with every incarnation of the actor.
struct Inner {
    settings: FilesSettings,
    /// `settings.directories`, absolute.
    roots: Vec<PathBuf>,
    /// `settings.extensions`, lowercase.
    extensions: Vec<String>,
    db: Db,
    rooms: Rooms,
    state: Mutex<State>,
    /// Whether this node indexes (one node at a time does).
    lease: Lease,
}

/// The handle to the files service; cheap to clone.
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

impl Files {
    /// A handle for `settings`, indexing through `db` and broadcasting
    /// through `rooms` while this node holds `lease`.
    pub fn new(settings: FilesSettings, db: Db, rooms: Rooms, lease: Lease) -> Self {
        let roots = settings
            .directories
            .iter()
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| PathBuf::from(d)))
            .collect();
        let extensions = settings
            .extensions
            .iter()
            .map(|e| e.trim_start_matches('.').to_lowercase())
            .collect();
        Self {
            inner: Arc::new(Inner {
                settings,
                roots,
                extensions,
                db,
                rooms,
                state: Mutex::new(State::default()),
                lease,
            }),
        }
    }

    /// The actor's spec: permanent, non-critical, stage `services`.
    pub fn spec(&self) -> ChildSpec<FilesActor> {
        let inner = self.inner.clone();
        ChildSpec::new("files", move |_| FilesActor {
            inner: inner.clone(),
            debouncer: None,
            watcher_error: None,
            watched: HashMap::new(),
            queue: BTreeSet::new(),
            leading: false,
            scanning: false,
            writing: false,
            loading: false,
        })
        .critical(false)
        .stage(Stage::Services)
    }
}

impl Inner {
    fn row(&self, path: &Path, e: &Entry) -> FileRow {
        FileRow {
            path: path.to_string_lossy().into_owned(),
            directory: self.roots[e.root].to_string_lossy().into_owned(),
            size: e.size,
            modified_at: e.modified_at,
            sha256: e.sha256.clone(),
            indexed_at: now_unix_ms(),
        }
    }

    fn name(&self, path: &Path, root: usize) -> String {
        path.strip_prefix(&self.roots[root])
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// Applies a scan's changes: index, pending writes, broadcasts.
    fn apply(&self, changes: Vec<Change>) {
        let mut state = self.state.lock();
        for change in changes {
            if let Some(seen) = state.changed_during_load.as_mut() {
                seen.insert(match &change {
                    Change::Added(p, _) | Change::Changed(p, _) | Change::Touched(p, _) => {
                        p.clone()
                    }
                    Change::Removed(p) => p.clone(),
                });
            }
            match change {
                Change::Added(path, e) => {
                    state.added += 1;
                    info!(path = %path.display(), size = e.size, "print file added");
                    self.announce("added", &path, Some(&e), e.root);
                    self.upsert(&mut state, path, e);
                }
                Change::Changed(path, e) => {
                    state.changed += 1;
                    info!(path = %path.display(), size = e.size, "print file changed");
                    self.announce("changed", &path, Some(&e), e.root);
                    self.upsert(&mut state, path, e);
                }
                Change::Touched(path, e) => self.upsert(&mut state, path, e),
                Change::Removed(path) => {
                    if let Some(e) = state.index.remove(&path) {
                        state.removed += 1;
                        info!(path = %path.display(), "print file removed");
                        self.announce("removed", &path, None, e.root);
                        let key = path.to_string_lossy().into_owned();
                        state.pending.shift_remove(&key);
                        state.pending.insert(key, None);
                    }
                }
            }
        }
    }

    fn upsert(&self, state: &mut State, path: PathBuf, e: Entry) {
        let row = self.row(&path, &e);
        state.pending.shift_remove(&row.path);
        state.pending.insert(row.path.clone(), Some(row));
        state.index.insert(path, e);
    }

    fn announce(&self, event: &str, path: &Path, e: Option<&Entry>, root: usize) {
        let mut data = json!({
            "event": event,
            "path": path.to_string_lossy(),
            "directory": self.roots[root].to_string_lossy(),
            "name": self.name(path, root),
        });
        if let Some(e) = e {
            data["size"] = e.size.into();
            data["modified_at"] = rfc3339_ms(e.modified_at).into();
            data["sha256"] = e.sha256.clone().into();
        }
        super::broadcast(&self.rooms, ROOM, &data);
    }

    /// Loads the rows of the configured directories into the index (rows
    /// the index has already are left alone: what was scanned is newer).
    /// Answers the paths loaded, for a scan to confirm.
    async fn load(&self) -> Result<Vec<PathBuf>, DbError> {
        use crate::db::schema::files::dsl;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        let dirs: Vec<String> = self
            .roots
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect();
        self.state.lock().changed_during_load = Some(Default::default());
        let rows: Result<Vec<FileRow>, DbError> = async {
            Ok(crate::with_conn!(self.db, |conn| {
                dsl::files
                    .filter(dsl::directory.eq_any(&dirs))
                    .select(FileRow::as_select())
                    .load(conn)
                    .await?
            }))
        }
        .await;
        let mut state = self.state.lock();
        let changed = state.changed_during_load.take().unwrap_or_default();
        let rows = rows?;
        let mut loaded = Vec::new();
        for row in rows {
            let path = PathBuf::from(&row.path);
            let Some(root) = dirs.iter().position(|d| *d == row.directory) else {
                continue;
            };
            // What memory knows, or is writing, is newer than this row.
            if state.index.contains_key(&path)
                || state.pending.contains_key(&row.path)
                || state.writing.contains(&row.path)
                || changed.contains(&path)
            {
                continue;
            }
            state.index.insert(
                path.clone(),
                Entry {
                    root,
                    size: row.size,
                    modified_at: row.modified_at,
                    sha256: row.sha256,
                },
            );
            loaded.push(path);
        }
        state.loaded = true;
        Ok(loaded)
    }

    /// Writes one batch of pending changes in one transaction; on failure
    /// they stay pending (unless newer ones replaced them).
    async fn write(&self) -> Result<usize, DbError> {
        use crate::db::schema::files::dsl;
        use diesel::prelude::*;
        use diesel::upsert::excluded;
        use diesel_async::{AsyncConnection, RunQueryDsl};
        let batch: Vec<(String, Option<FileRow>)> = {
            let mut state = self.state.lock();
            let n = state.pending.len().min(WRITE_BATCH);
            let batch: Vec<_> = state.pending.drain(..n).collect();
            state.writing = batch.iter().map(|(path, _)| path.clone()).collect();
            batch
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let result = async {
            crate::with_conn!(self.db, |conn| {
                let batch = batch.clone();
                conn.transaction(async |conn| {
                    for (path, row) in &batch {
                        match row {
                            // One statement per row: SQLite cannot batch an upsert.
                            Some(row) => {
                                diesel::insert_into(dsl::files)
                                    .values(row)
                                    .on_conflict(dsl::path)
                                    .do_update()
                                    .set((
                                        dsl::directory.eq(excluded(dsl::directory)),
                                        dsl::size.eq(excluded(dsl::size)),
                                        dsl::modified_at.eq(excluded(dsl::modified_at)),
                                        dsl::sha256.eq(excluded(dsl::sha256)),
                                        dsl::indexed_at.eq(excluded(dsl::indexed_at)),
                                    ))
                                    .execute(conn)
                                    .await?;
                            }
                            None => {
                                diesel::delete(dsl::files.filter(dsl::path.eq(path)))
                                    .execute(conn)
                                    .await?;
                            }
                        }
                    }
                    Ok::<_, DbError>(())
                })
                .await?;
            });
            Ok::<_, DbError>(())
        }
        .await;
        let mut state = self.state.lock();
        state.writing.clear();
        let n = batch.len();
        match result {
            Ok(()) => {
                state.last_error = None;
                Ok(n)
            }
            Err(e) => {
                // Back in front, in order, unless a newer change replaced them.
                let mut restored = IndexMap::with_capacity(n + state.pending.len());
                for (path, row) in batch {
                    if !state.pending.contains_key(&path) {
                        restored.insert(path, row);
                    }
                }
                restored.extend(state.pending.drain(..));
                state.pending = restored;
                state.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_content() {
        let dir = std::env::temp_dir().join(format!("holdfast-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("abc.gcode");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
