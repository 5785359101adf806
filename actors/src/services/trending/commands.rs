//! The trending service's RPC method, under the prefix [`PREFIX`]:
//!
//! | method | `data` | reply |
//! |---|---|---|
//! | `trending.list` | none, or `{"feed":NAME}` | `{"feeds":{NAME:{"data","fetched_at","age_ms","stale"}}}`, as `GET /api/v1/trending` |
//!
//! Read from the cache (a stale or missing feed is refreshed in the
//! background, and answered as cached now); `unknown_feed` names a feed
//! that is not configured.

use actix::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Trending, TrendingActor};
use crate::handlers::{Rejection, Rpc};

/// The methods this service serves start with this.
pub const PREFIX: &str = "trending.";

/// `trending.list`'s `data`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListParams {
    feed: Option<String>,
}

impl Handler<Rpc> for TrendingActor {
    type Result = Result<Value, Rejection>;

    fn handle(&mut self, rpc: Rpc, _: &mut Context<Self>) -> Self::Result {
        if rpc.action(PREFIX) != "list" {
            return Err(rpc.unknown());
        }
        let ListParams { feed } = if rpc.data.is_null() {
            ListParams::default()
        } else {
            rpc.params()?
        };
        let trending = Trending {
            inner: self.inner.clone(),
        };
        let feeds = trending.cached(feed.as_deref()).ok_or_else(|| {
            let name = feed.unwrap_or_default();
            Rejection::new("unknown_feed", format!("no feed named '{name}'"))
        })?;
        Ok(json!({ "feeds": feeds }))
    }
}
