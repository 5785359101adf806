//! The `trending` actor: fetches JSON feeds and broadcasts what changed to
//! the system room `$trending`.
//!
//! Owns: the refresh timer of every configured feed and the fetches in
//! flight. The feeds' state (cache, circuit breaker, statistics) lives in
//! the [`Trending`] handle, outside the actor.
//! Answers: [`Refresh`] (fetch a feed now unless its cache is fresh),
//! [`Rpc`](crate::handlers::Rpc) for `trending.list` ([`commands`]); the
//! HTTP layer reads [`Trending::statistics`] and [`Trending::snapshot`]
//! straight from the handle, so they answer even while the actor restarts.
//!
//! A refresh of a feed, every `interval` (the first at start):
//! 1. its cache is younger than `cache_ttl` → a cache hit, no request;
//! 2. the feed asked for a pause (`Retry-After`) that has not passed → skipped;
//! 3. its circuit breaker is open → rejected, no request; once the breaker's
//!    open time has passed it goes half-open and exactly one trial request
//!    is sent: success closes it, failure opens it again;
//! 4. otherwise a fetch: up to `retry_tries` requests with exponential
//!    back-off and full jitter (a delay drawn from `0..=min(cap, base * 2^n)`),
//!    retried only on connect errors, timeouts, 5xx and 429. A `Retry-After`
//!    of N seconds replaces the drawn delay; one longer than the back-off cap
//!    ends the fetch and defers the feed's next one until it has passed. A
//!    body that is not JSON, or too large, is never retried.
//!
//! Every request counts in the breaker: `breaker_failure_threshold`
//! consecutive failed requests open it for `breaker_open`. A success stores
//! the document in the cache and, when it differs from the last one
//! broadcast, publishes `{"feed", "fetched_at", "data"}` to `$trending`.
//!
//! HTTP: one pooled client (keep-alive) with a connect timeout, a read
//! timeout and a total timeout per request; `http://` or `https://` (TLS as
//! [`crate::tls`] sets it up: the system's CA certificates plus
//! `tls.ca_file`). A certificate the client does not trust fails the request
//! as a connect error. A feed's URL may carry a credential, so logs, health
//! and statistics name feeds, never their URLs.
//!
//! Restart policy: permanent, non-critical, stage `services`.
//! Lost on a crash: the fetches in flight (cancelled; the next tick starts
//! them again). Caches, breakers and statistics survive, so a restart never
//! hammers a feed whose breaker is open.
//! With no feed configured the actor is idle and healthy.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable;
use parking_lot::Mutex;
use prometheus::Registry;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::clock::now_rfc3339;
use crate::lease::Lease;
use crate::rooms::Rooms;
use crate::shutdown::Stage;
use crate::supervision::{ChildRef, ChildSpec};
use crate::tls::ClientTls;

mod actor;
mod breaker;
pub mod commands;
mod error;
mod metrics;
mod settings;

use actor::InFlight;
pub use actor::{Refresh, TrendingActor};
pub use breaker::BreakerState;
use breaker::{Breaker, Permit};
pub use commands::PREFIX;
pub use error::FetchError;
use metrics::TrendingMetrics;
pub use settings::{FeedSettings, TrendingSettings};

/// The system room updates go to.
pub const ROOM: &str = "$trending";

/// A feed's latest document.
#[derive(Clone, Debug)]
struct Cached {
    data: Arc<Value>,
    at: Instant,
    /// When it was fetched, RFC 3339.
    fetched_at: String,
}

/// One feed's statistics.
#[derive(Clone, Debug, Default, Serialize)]
struct FeedStats {
    total_requests: u64,
    successful_fetches: u64,
    failed_requests: u64,
    failed_fetches: u64,
    retries: u64,
    rejected_by_breaker: u64,
    cache_hits: u64,
    cache_misses: u64,
    last_fetch_time: Option<String>,
    last_error: Option<String>,
    last_error_time: Option<String>,
}

/// One feed: its config and everything that outlives the actor.
struct Feed {
    config: FeedSettings,
    breaker: Breaker,
    cache: Option<Cached>,
    /// A fetch is running; refreshes meanwhile are skipped.
    in_flight: bool,
    /// The feed asked (Retry-After) not to be fetched before this.
    not_before: Option<Instant>,
    /// Hash of the last document broadcast, so an unchanged one is not.
    broadcast: Option<u64>,
    stats: FeedStats,
}

/// What the handle shares with every incarnation of the actor.
struct Inner {
    settings: TrendingSettings,
    feeds: Mutex<Vec<Feed>>,
    client: reqwest::Client,
    rooms: Rooms,
    metrics: TrendingMetrics,
    actor: ChildRef<TrendingActor>,
    /// Whether this node fetches (one node at a time does).
    lease: Lease,
}

/// What a refresh decided.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    InFlight,
    Hit,
    Deferred,
    Rejected,
    Fetch { trial: bool },
}

/// The handle to the trending service; cheap to clone. Holds every feed's
/// cache, breaker and statistics.
#[derive(Clone)]
pub struct Trending {
    inner: Arc<Inner>,
}

impl Trending {
    /// A handle for `settings`, fetching with `tls` and broadcasting through
    /// `rooms` while this node holds `lease`; registers the
    /// `holdfast_trending_*` metrics.
    ///
    /// # Errors
    /// The metrics are registered already, or the HTTP client cannot be built.
    pub fn new(
        settings: TrendingSettings,
        tls: &ClientTls,
        rooms: Rooms,
        registry: &Registry,
        lease: Lease,
    ) -> Result<Self, String> {
        let metrics = TrendingMetrics::new(registry).map_err(|e| e.to_string())?;
        let mut builder = tls
            .http_client()
            .connect_timeout(settings.connect_timeout())
            .read_timeout(settings.read_timeout())
            .timeout(settings.timeout())
            .pool_idle_timeout(settings.pool_idle_timeout())
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .user_agent(concat!("holdfast/", env!("CARGO_PKG_VERSION")));
        if !settings.tcp_keepalive().is_zero() {
            builder = builder.tcp_keepalive(settings.tcp_keepalive());
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let feeds = settings
            .feeds
            .iter()
            .map(|config| {
                let name = config.name.as_str();
                // Every series exists from the start, at zero.
                for c in [
                    &metrics.requests,
                    &metrics.successes,
                    &metrics.failed_fetches,
                    &metrics.retries,
                    &metrics.rejected,
                    &metrics.hits,
                    &metrics.misses,
                ] {
                    c.with_label_values(&[name]);
                }
                metrics.set_breaker(name, BreakerState::Closed);
                Feed {
                    config: config.clone(),
                    breaker: Breaker::new(
                        settings.breaker_failure_threshold,
                        settings.breaker_open(),
                    ),
                    cache: None,
                    in_flight: false,
                    not_before: None,
                    broadcast: None,
                    stats: FeedStats::default(),
                }
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                feeds: Mutex::new(feeds),
                client,
                rooms,
                metrics,
                actor: ChildRef::default(),
                lease,
            }),
        })
    }

    /// The actor's spec: permanent, non-critical, stage `services`.
    pub fn spec(&self) -> ChildSpec<TrendingActor> {
        let inner = self.inner.clone();
        ChildSpec::new("trending", move |_| TrendingActor {
            inner: inner.clone(),
        })
        .critical(false)
        .stage(Stage::Services)
        .bind(&self.inner.actor)
    }

    /// The statistics of `GET /api/v1/trending/statistics`: totals over
    /// every feed, each feed's breaker state, and each feed's own figures.
    /// `total_requests = successful_fetches + failed_requests` always (a
    /// request that succeeds ends its fetch); `success_rate` is
    /// `successful_fetches / total_requests`, `null` before any request.
    pub fn statistics(&self) -> Value {
        let feeds = self.inner.feeds.lock();
        let mut total = FeedStats::default();
        let mut last_error_time: Option<&str> = None;
        let mut breakers = Map::new();
        let mut per_feed = Map::new();
        for f in feeds.iter() {
            let s = &f.stats;
            total.total_requests += s.total_requests;
            total.successful_fetches += s.successful_fetches;
            total.failed_requests += s.failed_requests;
            total.failed_fetches += s.failed_fetches;
            total.retries += s.retries;
            total.rejected_by_breaker += s.rejected_by_breaker;
            total.cache_hits += s.cache_hits;
            total.cache_misses += s.cache_misses;
            // RFC 3339 UTC with a fixed width orders as text.
            if s.last_fetch_time > total.last_fetch_time {
                total.last_fetch_time = s.last_fetch_time.clone();
            }
            if let Some(at) = s.last_error_time.as_deref() {
                if last_error_time.is_none_or(|t| at > t) {
                    last_error_time = Some(at);
                    total.last_error = s
                        .last_error
                        .as_ref()
                        .map(|e| format!("{}: {e}", f.config.name));
                }
            }
            breakers.insert(f.config.name.clone(), f.breaker.state.as_str().into());
            let mut detail = serde_json::to_value(s).unwrap_or(Value::Null);
            detail["success_rate"] = rate(s.successful_fetches, s.total_requests);
            detail["breaker"] = json!({
                "state": f.breaker.state,
                "consecutive_failures": f.breaker.failures,
                "opened": f.breaker.opened,
                "retry_in_ms": f.breaker.until.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64),
            });
            detail["cached"] = f.cache.is_some().into();
            detail["in_flight"] = f.in_flight.into();
            per_feed.insert(f.config.name.clone(), detail);
        }
        json!({
            "total_requests": total.total_requests,
            "successful_fetches": total.successful_fetches,
            "failed_requests": total.failed_requests,
            "success_rate": rate(total.successful_fetches, total.total_requests),
            "last_fetch_time": total.last_fetch_time,
            "last_error": total.last_error,
            "last_error_time": last_error_time,
            "cache_hits": total.cache_hits,
            "cache_misses": total.cache_misses,
            "failed_fetches": total.failed_fetches,
            "retries": total.retries,
            "rejected_by_breaker": total.rejected_by_breaker,
            "breakers": breakers,
            "feeds": per_feed,
        })
    }

    /// Every feed's cached document for `GET /api/v1/trending`, with its
    /// age and whether it is stale. Each feed read counts as a cache hit
    /// (fresh) or miss (stale or absent); a miss asks the actor for a
    /// refresh in the background and answers what is cached now.
    pub fn snapshot(&self) -> Value {
        json!({ "feeds": self.cached(None) })
    }

    /// The cached documents of every feed, or of the feed named `only`
    /// (`None` when no feed has that name), as [`Trending::snapshot`]
    /// counts and refreshes them.
    pub fn cached(&self, only: Option<&str>) -> Option<Map<String, Value>> {
        let now = Instant::now();
        let ttl = self.inner.settings.cache_ttl();
        let mut stale = Vec::new();
        let mut out = Map::new();
        {
            let mut feeds = self.inner.feeds.lock();
            for (idx, f) in feeds.iter_mut().enumerate() {
                if only.is_some_and(|name| name != f.config.name) {
                    continue;
                }
                let fresh = f
                    .cache
                    .as_ref()
                    .is_some_and(|c| now.duration_since(c.at) < ttl);
                self.inner.count_cache(f, fresh);
                if !fresh {
                    stale.push(idx);
                }
                let entry = match &f.cache {
                    Some(c) => json!({
                        "data": &*c.data,
                        "fetched_at": c.fetched_at,
                        "age_ms": now.duration_since(c.at).as_millis() as u64,
                        "stale": !fresh,
                    }),
                    None => {
                        json!({"data": null, "fetched_at": null, "age_ms": null, "stale": true})
                    }
                };
                out.insert(f.config.name.clone(), entry);
            }
        }
        if let Some(actor) = self.inner.actor.addr() {
            for feed in stale {
                actor.do_send(Refresh {
                    feed,
                    counted: true,
                });
            }
        }
        (only.is_none() || !out.is_empty()).then_some(out)
    }

    /// How many feeds are configured.
    pub fn feed_count(&self) -> usize {
        self.inner.settings.feeds.len()
    }
}

fn rate(ok: u64, total: u64) -> Value {
    if total == 0 {
        Value::Null
    } else {
        json!(ok as f64 / total as f64)
    }
}

impl Inner {
    fn count_cache(&self, f: &mut Feed, hit: bool) {
        let name = [f.config.name.as_str()];
        if hit {
            f.stats.cache_hits += 1;
            self.metrics.hits.with_label_values(&name).inc();
        } else {
            f.stats.cache_misses += 1;
            self.metrics.misses.with_label_values(&name).inc();
        }
    }

    /// Decides what a refresh of feed `idx` does, and marks a fetch in flight.
    /// `counted`: the caller already counted the cache read.
    fn decide(&self, idx: usize, counted: bool) -> Decision {
        let now = Instant::now();
        let mut feeds = self.feeds.lock();
        let Some(f) = feeds.get_mut(idx) else {
            return Decision::InFlight;
        };
        if f.in_flight {
            return Decision::InFlight;
        }
        let fresh = f
            .cache
            .as_ref()
            .is_some_and(|c| now.duration_since(c.at) < self.settings.cache_ttl());
        if fresh {
            if !counted {
                self.count_cache(f, true);
            }
            return Decision::Hit;
        }
        if f.not_before.is_some_and(|t| now < t) {
            return Decision::Deferred;
        }
        if !counted {
            self.count_cache(f, false);
        }
        let decision = match f.breaker.permit(now) {
            Permit::Allow => Decision::Fetch { trial: false },
            Permit::Trial => {
                info!(feed = %f.config.name, "circuit half-open; sending one trial request");
                self.metrics
                    .set_breaker(&f.config.name, BreakerState::HalfOpen);
                Decision::Fetch { trial: true }
            }
            Permit::Reject => {
                f.stats.rejected_by_breaker += 1;
                self.metrics
                    .rejected
                    .with_label_values(&[&f.config.name])
                    .inc();
                Decision::Rejected
            }
        };
        if matches!(decision, Decision::Fetch { .. }) {
            f.in_flight = true;
        }
        decision
    }

    fn update_ratio(&self, feeds: &[Feed]) {
        let (ok, all) = feeds.iter().fold((0, 0), |(o, a), f| {
            (o + f.stats.successful_fetches, a + f.stats.total_requests)
        });
        if all > 0 {
            self.metrics.success_ratio.set(ok as f64 / all as f64);
        }
    }

    /// One request of a fetch; `n` counts from 1. Records it in the
    /// statistics and the breaker.
    async fn attempt(self: Arc<Self>, idx: usize, n: u32) -> Result<Arc<Value>, FetchError> {
        let (name, url) = {
            let mut feeds = self.feeds.lock();
            let f = &mut feeds[idx];
            if n > 1 && f.breaker.state == BreakerState::Open {
                return Err(FetchError::BreakerOpen);
            }
            f.stats.total_requests += 1;
            (f.config.name.clone(), f.config.url.expose().to_owned())
        };
        self.metrics.requests.with_label_values(&[&name]).inc();
        let began = Instant::now();
        let result = self.request(&url).await;
        self.metrics
            .duration
            .with_label_values(&[&name])
            .observe(began.elapsed().as_secs_f64());
        let now = Instant::now();
        let mut feeds = self.feeds.lock();
        let f = &mut feeds[idx];
        match &result {
            Ok(_) => {
                f.stats.successful_fetches += 1;
                let reopened = f.breaker.state != BreakerState::Closed;
                f.breaker.success();
                if reopened {
                    info!(feed = %name, "circuit closed; feed answers again");
                }
                self.metrics.set_breaker(&name, BreakerState::Closed);
                self.metrics.successes.with_label_values(&[&name]).inc();
            }
            Err(e) => {
                f.stats.failed_requests += 1;
                f.stats.last_error = Some(e.to_string());
                f.stats.last_error_time = Some(now_rfc3339());
                if let Some(after) = e.retry_after() {
                    f.not_before = Some(now + after);
                }
                self.metrics
                    .failures
                    .with_label_values(&[&name, e.reason()])
                    .inc();
                if f.breaker.failure(now) {
                    warn!(feed = %name, failures = f.breaker.failures, open_ms = self.settings.breaker_open().as_millis() as u64,
                        error = %e, "circuit opened; feed not requested until it half-opens");
                    self.metrics.set_breaker(&name, BreakerState::Open);
                } else {
                    debug!(feed = %name, attempt = n, error = %e, "feed request failed");
                }
            }
        }
        self.update_ratio(&feeds);
        result
    }

    /// GET `url`, bounded body, parsed as JSON.
    async fn request(&self, url: &str) -> Result<Arc<Value>, FetchError> {
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(FetchError::of)?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(FetchError::Status {
                status: status.as_u16(),
                retry_after,
            });
        }
        let max = self.settings.max_body_bytes;
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(FetchError::TooLarge(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(FetchError::of)? {
            if body.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice::<Value>(&body)
            .map(Arc::new)
            .map_err(|e| FetchError::Parse(e.to_string()))
    }

    /// A whole fetch of feed `idx`: its tries, then the cache and the
    /// broadcast on success. `trial`: the breaker's single half-open request.
    async fn fetch(self: Arc<Self>, idx: usize, trial: bool) {
        let _in_flight = InFlight {
            inner: self.clone(),
            idx,
        };
        let s = &self.settings;
        let retries = if trial { 0 } else { s.retry_tries.max(1) - 1 };
        let cap = s.retry_max();
        let mut n = 0;
        let this = self.clone();
        let result = (move || {
            n += 1;
            this.clone().attempt(idx, n)
        })
        // Waits drawn from 0..=min(cap, retry_base · 2^n): full jitter from half the base.
        .retry(Backoff::full_jitter(s.retry_base() / 2, cap).retries(retries))
        .sleep(tokio::time::sleep)
        .when(FetchError::is_retryable)
        .adjust(|e, delay| match (e.retry_after(), delay) {
            // The feed's own pause replaces the drawn delay...
            (Some(after), Some(_)) if after <= cap => Some(after),
            // ...and one longer than the cap ends the fetch.
            (Some(_), Some(_)) => None,
            (None, delay) | (_, delay @ None) => delay,
        })
        .notify(|e, delay| {
            let mut feeds = self.feeds.lock();
            let f = &mut feeds[idx];
            f.stats.retries += 1;
            self.metrics.retries.with_label_values(&[&f.config.name]).inc();
            debug!(feed = %f.config.name, error = %e, retry_in_ms = delay.as_millis() as u64, "retrying feed");
        })
        .await;
        let mut feeds = self.feeds.lock();
        let f = &mut feeds[idx];
        match result {
            Ok(data) => {
                let fetched_at = now_rfc3339();
                f.stats.last_fetch_time = Some(fetched_at.clone());
                self.metrics
                    .last_fetch
                    .with_label_values(&[&f.config.name])
                    .set(crate::clock::now_unix_ms() as f64 / 1e3);
                let digest = {
                    let mut h = DefaultHasher::new();
                    data.to_string().hash(&mut h);
                    h.finish()
                };
                f.cache = Some(Cached {
                    data: data.clone(),
                    at: Instant::now(),
                    fetched_at: fetched_at.clone(),
                });
                if f.broadcast != Some(digest) {
                    f.broadcast = Some(digest);
                    super::broadcast(
                        &self.rooms,
                        ROOM,
                        &json!({"feed": f.config.name, "fetched_at": fetched_at, "data": &*data}),
                    );
                }
            }
            Err(e) => {
                f.stats.failed_fetches += 1;
                self.metrics
                    .failed_fetches
                    .with_label_values(&[&f.config.name])
                    .inc();
                warn!(feed = %f.config.name, error = %e, "feed fetch failed; keeping the cached document");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_at_the_threshold_half_opens_and_closes() {
        let mut b = Breaker::new(2, Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(b.permit(t0), Permit::Allow);
        assert!(!b.failure(t0));
        assert!(b.failure(t0), "second consecutive failure opens it");
        assert_eq!(b.permit(t0), Permit::Reject);
        let later = t0 + Duration::from_millis(60);
        assert_eq!(b.permit(later), Permit::Trial);
        assert_eq!(b.permit(later), Permit::Reject, "one trial at a time");
        assert!(b.failure(later), "a failed trial opens it again");
        assert_eq!(b.permit(later), Permit::Reject);
        let again = later + Duration::from_millis(60);
        assert_eq!(b.permit(again), Permit::Trial);
        b.success();
        assert_eq!(
            (b.state, b.failures, b.opened),
            (BreakerState::Closed, 0, 2)
        );
    }

    #[test]
    fn only_connect_errors_timeouts_5xx_and_429_are_retried() {
        let status = |s| FetchError::Status {
            status: s,
            retry_after: None,
        };
        assert!(FetchError::Connect("x".into()).is_retryable());
        assert!(FetchError::Timeout("x".into()).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!FetchError::Parse("x".into()).is_retryable());
        assert!(!FetchError::TooLarge(1).is_retryable());
        assert!(!FetchError::Transport("x".into()).is_retryable());
    }
}
