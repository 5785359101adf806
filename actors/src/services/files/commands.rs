//! The files service's RPC methods, under the prefix [`PREFIX`], read from
//! the database index (so they answer on every node, and while a scan runs):
//!
//! | method | `data` | reply |
//! |---|---|---|
//! | `files.list` | `{"directory"?, "after"?, "limit"?}` | `{"files":[FILE, …], "next":PATH or null}`, by path |
//! | `files.search` | `{"query", "limit"?}` | `{"files":[FILE, …]}`, by path |
//!
//! FILE is `{"path","directory","name","size","modified_at","sha256"}`, as
//! in `$files`. `directory` is one of the configured directories (else
//! `unknown_directory`); `after` is the `next` of the page before; `limit`
//! is 1 to [`MAX_LIMIT`] (default [`DEFAULT_LIMIT`]). `search` finds the
//! files whose name (the path under its directory) contains `query`, 1 to
//! 200 bytes, ASCII letters in any case. While the database is down both
//! answer `unavailable`.

use std::sync::Arc;

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

use super::scan::rfc3339_ms;
use super::{FileRow, FilesActor, Inner};
use crate::handlers::{Rejection, Rpc};

/// The methods this service serves start with this.
pub const PREFIX: &str = "files.";
/// Files per reply when the request names no `limit`.
pub const DEFAULT_LIMIT: i64 = 100;
/// Most files per reply.
pub const MAX_LIMIT: i64 = 1000;
/// Longest `query` of a search, in bytes.
const MAX_QUERY: usize = 200;

/// `files.list`'s `data`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListParams {
    directory: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// `files.search`'s `data`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    query: String,
    limit: Option<i64>,
}

impl Handler<Rpc> for FilesActor {
    type Result = ResponseFuture<Result<Value, Rejection>>;

    /// Answers outside the actor, so that a query never waits for a scan.
    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.inner.clone().answer(rpc))
    }
}

impl Inner {
    async fn answer(self: Arc<Self>, rpc: Rpc) -> Result<Value, Rejection> {
        match rpc.action(PREFIX) {
            "list" => {
                let params: ListParams = if rpc.data.is_null() {
                    ListParams::default()
                } else {
                    rpc.params()?
                };
                self.list(params).await
            }
            "search" => self.search(rpc.params()?).await,
            _ => Err(rpc.unknown()),
        }
    }

    async fn list(&self, params: ListParams) -> Result<Value, Rejection> {
        let limit = limit(params.limit)?;
        let directories = match &params.directory {
            None => self.directories(),
            Some(dir) => vec![self.directory(dir)?],
        };
        let after = params.after.unwrap_or_default();
        let rows = self.rows(&directories, &after, "%", limit).await?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| r.path.clone()))
            .flatten();
        Ok(json!({ "files": files(&rows), "next": next }))
    }

    async fn search(&self, params: SearchParams) -> Result<Value, Rejection> {
        let limit = limit(params.limit)?;
        if params.query.is_empty() || params.query.len() > MAX_QUERY {
            return Err(Rejection::bad_request(format!(
                "files.search: query must be 1 to {MAX_QUERY} bytes"
            )));
        }
        let pattern = format!("%{}%", escape_like(&params.query.to_ascii_lowercase()));
        let rows = self.rows(&self.directories(), "", &pattern, limit).await?;
        Ok(json!({ "files": files(&rows) }))
    }

    /// At most `limit` rows under `directories`, by path, after `after`,
    /// whose lowercased name matches the `LIKE` pattern `name_like`.
    async fn rows(
        &self,
        directories: &[String],
        after: &str,
        name_like: &str,
        limit: i64,
    ) -> Result<Vec<FileRow>, Rejection> {
        use crate::db::schema::files::dsl;
        use diesel::prelude::*;
        use diesel::sql_types::Text;
        use diesel_async::RunQueryDsl;
        // The name: the path after its directory and the separator.
        let name = || diesel::dsl::sql::<Text>("lower(substr(path, length(directory) + 2))");
        let rows: Result<Vec<FileRow>, crate::db::DbError> = async {
            Ok(crate::with_conn!(self.db, |conn| {
                dsl::files
                    .filter(dsl::directory.eq_any(directories))
                    .filter(dsl::path.gt(after))
                    .filter(name().like(name_like).escape('\\'))
                    .order(dsl::path)
                    .limit(limit)
                    .select(FileRow::as_select())
                    .load(conn)
                    .await?
            }))
        }
        .await;
        rows.map_err(|e| Rejection::unavailable(format!("the file index cannot be read: {e}")))
    }

    /// Every configured directory, as the index stores it.
    fn directories(&self) -> Vec<String> {
        self.roots
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect()
    }

    /// The configured directory `dir` names (as configured, or absolute).
    fn directory(&self, dir: &str) -> Result<String, Rejection> {
        self.settings
            .directories
            .iter()
            .zip(&self.roots)
            .find(|(configured, root)| *configured == dir || root.as_os_str() == dir)
            .map(|(_, root)| root.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Rejection::new(
                    "unknown_directory",
                    format!("'{dir}' is not a directory this service indexes"),
                )
            })
    }
}

/// `limit`, checked, or the default.
fn limit(limit: Option<i64>) -> Result<i64, Rejection> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Rejection::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}, not {n}"
        ))),
    }
}

/// `text` matched literally by `LIKE … ESCAPE '\'`.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Rows as the replies show them.
fn files(rows: &[FileRow]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let name = r
                .path
                .strip_prefix(&r.directory)
                .map_or(r.path.as_str(), |n| {
                    n.trim_start_matches(std::path::MAIN_SEPARATOR)
                });
            json!({
                "path": r.path,
                "directory": r.directory,
                "name": name,
                "size": r.size,
                "modified_at": rfc3339_ms(r.modified_at),
                "sha256": r.sha256,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_matched_literally() {
        assert_eq!(escape_like(r"50%_off\x"), r"50\%\_off\\x");
        assert_eq!(escape_like("benchy"), "benchy");
    }
}
