//! The files actor: the watcher, the rescans, the index writes, while this
//! node holds the services lease.

use super::*;

/// The files actor. See the module docs.
pub struct FilesActor {
    /// Index, pending writes, db and rooms; shared with [`Files`].
    pub(super) inner: Arc<Inner>,
    /// The watcher; dropping it stops watching. `None` when none could be had.
    pub(super) debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    /// Why there is no watcher.
    pub(super) watcher_error: Option<String>,
    /// Directories watched now, with the identity they had when watched.
    pub(super) watched: HashMap<PathBuf, DirId>,
    /// Paths waiting for a scan.
    pub(super) queue: BTreeSet<PathBuf>,
    /// Whether this node held the services lease at the last tick; a
    /// takeover queues every directory.
    pub(super) leading: bool,
    /// A scan is running; new paths wait in `queue`.
    pub(super) scanning: bool,
    /// A database write is running.
    pub(super) writing: bool,
    /// The rows are being loaded from the database.
    pub(super) loading: bool,
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
        match new_debouncer(self.inner.settings.debounce(), None, move |result| {
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
        ctx.run_interval(self.inner.settings.rescan_interval(), |act, ctx| {
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
