//! The `files` actor: watches directories for print files, indexes them in
//! the database, and broadcasts what changed to the system room `$files`.
//!
//! Owns: the filesystem watcher (notify, through notify-debouncer-full: a
//! burst of writes to one file is one event once it has been quiet for
//! `debounce`), the queue of paths waiting to be looked at, and the scan and
//! the database write in flight (one of each at a time, so changes apply in
//! order).
//! Answers: no messages of its own; `/health/files` shows the directories,
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

/// The system room changes go to.
pub const ROOM: &str = "$files";

/// Most rows written in one transaction.
const WRITE_BATCH: usize = 500;

/// The `files` settings (config `[files]`).
#[derive(Clone, Debug)]
pub struct FilesSettings {
    /// Directories to watch; none leaves the actor idle. Relative paths are
    /// taken from the working directory.
    pub directories: Vec<PathBuf>,
    /// Extensions that count, without the dot (matched in any case).
    pub extensions: Vec<String>,
    /// Quiet time before a burst of events on a file is acted on.
    pub debounce: Duration,
    /// How often missing, deleted or re-created directories are checked
    /// for, and pending database writes retried.
    pub rescan_interval: Duration,
    /// Whether subdirectories are watched too.
    pub recursive: bool,
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
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
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

/// A directory's identity, to tell a re-created one from the one watched.
type DirId = (u64, u64);

#[cfg(unix)]
fn dir_id(path: &Path) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_id(path: &Path) -> Option<DirId> {
    path.is_dir().then_some((0, 0))
}

/// SHA-256 of a file's content, lowercase hex. Blocking.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn rfc3339_ms(ms: i64) -> String {
    rfc3339(from_unix_ms(ms))
}

/// What one scan needs; moved to a worker thread.
struct Scan {
    paths: Vec<PathBuf>,
    /// What the index knows under `paths`.
    known: HashMap<PathBuf, Entry>,
    roots: Vec<PathBuf>,
    extensions: Vec<String>,
    recursive: bool,
}

impl Scan {
    fn matches(&self, path: &Path) -> bool {
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| self.extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
    }

    /// The configured directory `path` is under, if it is watched there.
    fn root_of(&self, path: &Path) -> Option<usize> {
        self.roots.iter().position(|r| {
            path.starts_with(r) && (self.recursive || path.parent() == Some(r.as_path()))
        })
    }

    /// Files under `dir` that count, into `out`; symlinked directories are
    /// not followed (no loops).
    fn walk(&self, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if self.recursive {
                    self.walk(&path, out);
                }
            } else if self.matches(&path) {
                out.insert(path);
            }
        }
    }

    /// Compares the files under `paths` with what the index knows. Blocking.
    fn run(self) -> Vec<Change> {
        let mut candidates: BTreeSet<PathBuf> = self.known.keys().cloned().collect();
        for path in &self.paths {
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => self.walk(path, &mut candidates),
                Ok(m) if m.is_file() && self.matches(path) => {
                    candidates.insert(path.clone());
                }
                _ => {}
            }
        }
        let mut changes = Vec::new();
        for path in candidates {
            let known = self.known.get(&path);
            let Some(root) = self.root_of(&path) else {
                if known.is_some() {
                    changes.push(Change::Removed(path));
                }
                continue;
            };
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && self.matches(&path) => m,
                Ok(_) => {
                    if known.is_some() {
                        changes.push(Change::Removed(path));
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if known.is_some() {
                        changes.push(Change::Removed(path));
                    }
                    continue;
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot read a print file's metadata; skipped");
                    continue;
                }
            };
            let size = i64::try_from(meta.len()).unwrap_or(i64::MAX);
            let modified_at = meta.modified().map(unix_ms).unwrap_or(0);
            if known
                .is_some_and(|k| k.size == size && k.modified_at == modified_at && k.root == root)
            {
                continue;
            }
            let sha256 = match sha256_file(&path) {
                Ok(h) => h,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if known.is_some() {
                        changes.push(Change::Removed(path));
                    }
                    continue;
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot hash a print file; skipped");
                    continue;
                }
            };
            let entry = Entry {
                root,
                size,
                modified_at,
                sha256,
            };
            changes.push(match known {
                None => Change::Added(path, entry),
                Some(k) if k.sha256 == entry.sha256 && k.size == entry.size => {
                    Change::Touched(path, entry)
                }
                Some(_) => Change::Changed(path, entry),
            });
        }
        changes
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

/// The files actor. See the module docs.
pub struct FilesActor {
    /// Index, pending writes, db and rooms; shared with [`Files`].
    inner: Arc<Inner>,
    /// The watcher; dropping it stops watching. `None` when none could be had.
    debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    /// Why there is no watcher.
    watcher_error: Option<String>,
    /// Directories watched now, with the identity they had when watched.
    watched: HashMap<PathBuf, DirId>,
    /// Paths waiting for a scan.
    queue: BTreeSet<PathBuf>,
    /// Whether this node held the services lease at the last tick; a
    /// takeover queues every directory.
    leading: bool,
    /// A scan is running; new paths wait in `queue`.
    scanning: bool,
    /// A database write is running.
    writing: bool,
    /// The rows are being loaded from the database.
    loading: bool,
}

impl FilesActor {
    /// Watches what exists, forgets what vanished, re-watches what was
    /// re-created, and queues a scan of each directory whose state changed.
    fn check_roots(&mut self, ctx: &mut Context<Self>) {
        let inner = self.inner.clone();
        for root in &inner.roots {
            let now = dir_id(root);
            let before = self.watched.get(root).copied();
            match (before, now) {
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(id)) => {
                    info!(dir = %root.display(), "directory re-created; watching it again");
                    self.unwatch(root);
                    self.watch(root, id);
                    self.queue.insert(root.clone());
                }
                (None, Some(id)) => {
                    self.watch(root, id);
                    self.queue.insert(root.clone());
                }
                (Some(_), None) => {
                    warn!(dir = %root.display(), "watched directory is gone; its files count as removed until it returns");
                    self.unwatch(root);
                    self.queue.insert(root.clone());
                }
                (None, None) => {
                    let state = inner.state.lock();
                    if state.index.keys().any(|p| p.starts_with(root)) {
                        self.queue.insert(root.clone());
                    }
                }
            }
        }
        self.kick(ctx);
    }

    fn watch(&mut self, root: &Path, id: DirId) {
        let mode = if self.inner.settings.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        let Some(debouncer) = self.debouncer.as_mut() else {
            return; // no watcher: every tick rescans (see `tick`)
        };
        match debouncer.watch(root, mode) {
            Ok(()) => {
                info!(dir = %root.display(), "watching for print files");
                self.watched.insert(root.to_path_buf(), id);
            }
            Err(e) => {
                warn!(dir = %root.display(), error = %e, "cannot watch the directory; retrying every rescan");
            }
        }
    }

    fn unwatch(&mut self, root: &Path) {
        self.watched.remove(root);
        if let Some(debouncer) = self.debouncer.as_mut() {
            // notify may have dropped the watch itself (the directory was deleted).
            let _ = debouncer.unwatch(root);
        }
    }

    /// Starts a scan of the queued paths unless one is running.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.scanning || self.queue.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = std::mem::take(&mut self.queue).into_iter().collect();
        let known: HashMap<PathBuf, Entry> = {
            let state = self.inner.state.lock();
            state
                .index
                .iter()
                .filter(|(p, _)| paths.iter().any(|q| p.starts_with(q)))
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect()
        };
        let scan = Scan {
            paths,
            known,
            roots: self.inner.roots.clone(),
            extensions: self.inner.extensions.clone(),
            recursive: self.inner.settings.recursive,
        };
        self.scanning = true;
        ctx.spawn(
            tokio::task::spawn_blocking(move || scan.run())
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.scanning = false;
                    match result {
                        Ok(changes) => act.inner.apply(changes),
                        Err(e) => warn!(error = %e, "a files scan failed; rescanning"),
                    }
                    act.write(ctx);
                    act.kick(ctx);
                }),
        );
    }

    /// Starts a write of pending changes unless one is running.
    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.inner.state.lock().pending.is_empty() {
            return;
        }
        self.writing = true;
        let inner = self.inner.clone();
        ctx.spawn(
            async move { inner.write().await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.writing = false;
                    match result {
                        // More may have queued meanwhile.
                        Ok(n) if n > 0 => act.write(ctx),
                        Ok(_) => {}
                        Err(e) => {
                            let pending = act.inner.state.lock().pending.len();
                            warn!(error = %e, pending, "files index not written; kept pending");
                        }
                    }
                }),
        );
    }

    /// Loads the index rows once, then scans what they name.
    fn load(&mut self, ctx: &mut Context<Self>) {
        if self.loading || self.inner.state.lock().loaded {
            return;
        }
        self.loading = true;
        let inner = self.inner.clone();
        ctx.spawn(
            async move { inner.load().await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.loading = false;
                    match result {
                        Ok(paths) => {
                            debug!(rows = paths.len(), "files index loaded");
                            act.queue.extend(paths);
                            act.kick(ctx);
                        }
                        Err(e) => {
                            debug!(error = %e, "files index not loaded yet; retrying every rescan")
                        }
                    }
                }),
        );
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !self.inner.lease.held() {
            self.leading = false;
            return; // standby: another node indexes
        }
        if !self.leading {
            // Just took over: what changed meanwhile is not known here.
            self.leading = true;
            self.queue.extend(self.inner.roots.iter().cloned());
        }
        self.load(ctx);
        if self.debouncer.is_none() {
            // No watcher: poll.
            self.queue.extend(self.inner.roots.iter().cloned());
        }
        self.check_roots(ctx);
        self.write(ctx);
    }
}

impl Actor for FilesActor {
    type Context = Context<Self>;

    /// Starts the watcher, loads the index, watches and scans every
    /// directory, and checks them every `rescan_interval`. A watcher that
    /// cannot be had is reported in health and replaced by polling.
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.inner.roots.is_empty() {
            debug!("no print file directories configured; idle");
            return;
        }
        let (tx, rx) = mpsc::unbounded::<DebounceEventResult>();
        match new_debouncer(self.inner.settings.debounce, None, move |result| {
            let _ = tx.unbounded_send(result);
        }) {
            Ok(debouncer) => {
                self.debouncer = Some(debouncer);
                ctx.add_stream(rx);
            }
            Err(e) => {
                warn!(error = %e, "no filesystem watcher; polling every rescan interval instead");
                self.watcher_error = Some(e.to_string());
            }
        }
        // A new incarnation looks at everything again: events may have been
        // lost while it was down.
        self.queue.extend(self.inner.roots.iter().cloned());
        self.tick(ctx);
        ctx.run_interval(self.inner.settings.rescan_interval, |act, ctx| {
            act.tick(ctx)
        });
    }
}

impl StreamHandler<DebounceEventResult> for FilesActor {
    fn handle(&mut self, result: DebounceEventResult, ctx: &mut Context<Self>) {
        if !self.inner.lease.held() {
            return; // standby: the leader watches; a takeover rescans
        }
        let inner = self.inner.clone();
        match result {
            Ok(events) => {
                for event in events {
                    if event.need_rescan() {
                        self.queue.extend(inner.roots.iter().cloned());
                    }
                    for path in &event.paths {
                        if inner.roots.iter().any(|r| r == path) {
                            // The directory itself: deleted, moved or re-created.
                            // Forget the watch; `check_roots` decides what now.
                            if event.kind.is_remove()
                                || dir_id(path) != self.watched.get(path).copied()
                            {
                                self.unwatch(path);
                            }
                            self.queue.insert(path.clone());
                        } else if inner.roots.iter().any(|r| path.starts_with(r)) {
                            self.queue.insert(path.clone());
                        }
                    }
                }
            }
            Err(errors) => {
                for e in errors {
                    warn!(error = %e, "filesystem watcher error; rescanning");
                }
                self.queue.extend(inner.roots.iter().cloned());
            }
        }
        self.check_roots(ctx);
    }

    /// The watcher's channel never ends while the actor holds the watcher.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Child for FilesActor {
    fn health(&mut self, _ctx: &mut Context<Self>) -> HealthReply<Self> {
        let state = self.inner.state.lock();
        let pending = state.pending.len() + state.writing.len();
        let mut h = if let Some(e) = &self.watcher_error {
            Health::degraded(format!("no filesystem watcher ({e}); polling"))
        } else if pending > 0 && state.last_error.is_some() {
            Health::degraded("database writes failing; index changes pending")
        } else {
            Health::healthy()
        };
        if let Some(e) = &state.last_error {
            h = h.with("last_error", e.clone());
        }
        let dirs: Vec<serde_json::Value> = self
            .inner
            .roots
            .iter()
            .map(|r| {
                json!({
                    "path": r.to_string_lossy(),
                    "watched": self.watched.contains_key(r),
                    "exists": r.is_dir(),
                    "files": state.index.keys().filter(|p| p.starts_with(r)).count(),
                })
            })
            .collect();
        h.with("directories", dirs)
            .with("active", !self.inner.roots.is_empty())
            .with("files", state.index.len())
            .with("pending_writes", pending)
            .with("loaded", state.loaded)
            .with("added", state.added)
            .with("changed", state.changed)
            .with("removed", state.removed)
            .into()
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
