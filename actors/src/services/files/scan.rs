//! Reading the directories: directory identity, file hashes, and one scan
//! of a directory into the changes it found.

use super::*;

/// A directory's identity, to tell a re-created one from the one watched.
pub(super) type DirId = (u64, u64);

#[cfg(unix)]
pub(super) fn dir_id(path: &Path) -> Option<DirId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
pub(super) fn dir_id(path: &Path) -> Option<DirId> {
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

pub(super) fn rfc3339_ms(ms: i64) -> String {
    rfc3339(from_unix_ms(ms))
}

/// What one scan needs; moved to a worker thread.
pub(super) struct Scan {
    pub(super) paths: Vec<PathBuf>,
    /// What the index knows under `paths`.
    pub(super) known: HashMap<PathBuf, Entry>,
    pub(super) roots: Vec<PathBuf>,
    pub(super) extensions: Vec<String>,
    pub(super) recursive: bool,
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
    pub(super) fn run(self) -> Vec<Change> {
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
