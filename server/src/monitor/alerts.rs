//! Alerts: what they say, the gate that drops duplicates and limits their
//! rate, and where they go (a webhook, email over SMTP). Delivery never
//! delays the polls.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use holdfast_actors::services::error_chain;
use holdfast_actors::tls::ClientTls;
use holdfast_actors::window::SlidingWindow;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::DELIVERY_TIMEOUT;
use crate::config::{ConfigError, MonitorSettings, Secret, SmtpSecurity};

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Good news (recovered).
    Info,
    /// Something failed and was handled (restarted, unhealthy).
    Warning,
    /// An operator must act (gave up, cannot start); never rate-limited.
    Critical,
}

impl Severity {
    /// The lowercase name, as in the alert's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// Always `holdfast monitor`.
    pub source: &'static str,
    /// The machine the monitor runs on.
    pub host: String,
    /// How bad.
    pub severity: Severity,
    /// `unhealthy`, `recovered`, `exited`, `restarted`, `gave_up`, `start_failed`.
    pub kind: &'static str,
    /// The URL watched.
    pub target: String,
    /// A sentence for a human.
    pub message: String,
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Alerts dropped (duplicates, rate limit) since the previous one sent.
    pub suppressed: u64,
    /// What de-duplicates this alert: same key within the period, dropped.
    #[serde(skip)]
    pub dedup_key: String,
}

/// Whether an alert goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateDecision {
    /// Send it; `suppressed` were dropped since the last one sent.
    Send {
        /// Dropped since the last alert sent.
        suppressed: u64,
    },
    /// The same alert went out within the de-duplication period.
    Duplicate,
    /// Over the rate limit.
    RateLimited,
}

/// De-duplication and rate limiting of alerts, fed with the clock.
#[derive(Debug)]
pub struct AlertGate {
    dedup: Duration,
    limit: u32,
    window: Duration,
    /// When each key was last sent.
    last_sent: HashMap<String, Instant>,
    /// Sends inside the rate window.
    recent: SlidingWindow,
    /// Dropped since the last send.
    suppressed: u64,
}

impl AlertGate {
    /// A gate with these periods and limit.
    pub fn new(dedup: Duration, limit: u32, window: Duration) -> Self {
        Self {
            dedup,
            limit,
            window,
            last_sent: HashMap::new(),
            recent: SlidingWindow::default(),
            suppressed: 0,
        }
    }

    /// Decides about an alert with `key` and `severity` at `now`.
    pub fn admit(&mut self, key: &str, severity: Severity, now: Instant) -> GateDecision {
        if let Some(&at) = self.last_sent.get(key) {
            if now.saturating_duration_since(at) < self.dedup {
                self.suppressed += 1;
                return GateDecision::Duplicate;
            }
        }
        let sent = self.recent.count(self.window, now);
        if severity != Severity::Critical && sent >= self.limit as usize {
            self.suppressed += 1;
            return GateDecision::RateLimited;
        }
        self.recent.record(now);
        self.last_sent.insert(key.to_owned(), now);
        GateDecision::Send {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

/// Where alerts go, parsed once at start-up.
#[derive(Clone)]
pub(super) struct Channels {
    http: reqwest::Client,
    webhook: Option<Secret>,
    email: Option<Email>,
}

/// The SMTP channel.
#[derive(Clone)]
pub(super) struct Email {
    mailer: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Channels {
    /// Both channels speak TLS as `tls` sets it up.
    ///
    /// # Errors
    /// An address that does not parse, or SMTP TLS that cannot be set up,
    /// named by its key.
    pub(super) fn new(m: &MonitorSettings, tls: &ClientTls) -> Result<Self, ConfigError> {
        let http = tls
            .http_client()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .map_err(|e| ConfigError::Source(format!("cannot build the HTTP client: {e}")))?;
        let webhook = (!m.webhook_url.is_empty()).then(|| m.webhook_url.clone());
        let email = if m.smtp_host.is_empty() {
            None
        } else {
            let bad = |key: &str, e: lettre::address::AddressError| ConfigError::Key {
                key: key.to_owned(),
                message: format!("not an email address: {e}"),
            };
            let from: Mailbox = m
                .smtp_from
                .parse()
                .map_err(|e| bad("monitor.smtp_from", e))?;
            let to = m
                .smtp_to
                .iter()
                .map(|t| t.parse::<Mailbox>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("monitor.smtp_to", e))?;
            // "dangerous" only means no TLS yet: `smtp_security` decides it next.
            let mut builder =
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(m.smtp_host.as_str())
                    .port(m.smtp_port)
                    .timeout(Some(DELIVERY_TIMEOUT));
            builder = match m.smtp_security {
                SmtpSecurity::None => builder,
                SmtpSecurity::Starttls => builder.tls(Tls::Required(smtp_tls(m, tls)?)),
                SmtpSecurity::Tls => builder.tls(Tls::Wrapper(smtp_tls(m, tls)?)),
            };
            if !m.smtp_username.is_empty() {
                builder = builder.credentials(Credentials::new(
                    m.smtp_username.clone(),
                    m.smtp_password.expose().to_owned(),
                ));
            }
            Some(Email {
                mailer: builder.build(),
                from,
                to,
            })
        };
        Ok(Self {
            http,
            webhook,
            email,
        })
    }

    /// Delivers one alert to every channel, in the background (a task of
    /// `inflight`). Failures are logged without the webhook URL (it may hold
    /// a credential).
    pub(super) fn deliver(&self, alert: Alert, inflight: &mut tokio::task::JoinSet<()>) {
        let channels = self.clone();
        inflight.spawn(async move {
            if let Some(url) = &channels.webhook {
                let sent = channels.http.post(url.expose()).json(&alert).send().await;
                match sent.and_then(|r| r.error_for_status()) {
                    Ok(_) => debug!(kind = alert.kind, "alert delivered to the webhook"),
                    Err(e) => {
                        // Without the URL: it may hold a credential.
                        let error = error_chain(&e.without_url());
                        warn!(
                            kind = alert.kind,
                            error, "alert not delivered to the webhook"
                        )
                    }
                }
            }
            if let Some(email) = &channels.email {
                match email.send(&alert).await {
                    Ok(()) => debug!(kind = alert.kind, "alert emailed"),
                    Err(e) => warn!(kind = alert.kind, error = %e, "alert not emailed"),
                }
            }
        });
    }
}

/// lettre's TLS for `smtp_host`: the system's CA certificates plus those of
/// `tls.ca_file` (lettre builds its own rustls configuration, with ring).
///
/// # Errors
/// The TLS configuration cannot be built (e.g. no CA certificate at all).
fn smtp_tls(m: &MonitorSettings, tls: &ClientTls) -> Result<TlsParameters, ConfigError> {
    let mut params = TlsParameters::builder(m.smtp_host.clone());
    for der in tls.extra_roots() {
        let cert = Certificate::from_der(der.to_vec()).map_err(|e| ConfigError::Key {
            key: "tls.ca_file".into(),
            message: format!("not usable for SMTP: {e}"),
        })?;
        params = params.add_root_certificate(cert);
    }
    params.build_rustls().map_err(|e| ConfigError::Key {
        key: "monitor.smtp_security".into(),
        message: format!("cannot set up TLS: {e}"),
    })
}

impl Email {
    async fn send(&self, alert: &Alert) -> Result<(), String> {
        let mut message = lettre::Message::builder()
            .from(self.from.clone())
            .subject(format!(
                "[holdfast] {} {}: {}",
                alert.severity.as_str().to_uppercase(),
                alert.kind,
                alert.target
            ))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let body = format!(
            "{}\n\ntarget:     {}\nhost:       {}\nkind:       {}\nseverity:   {}\nat:         {}\nsuppressed: {}\n",
            alert.message,
            alert.target,
            alert.host,
            alert.kind,
            alert.severity.as_str(),
            alert.at,
            alert.suppressed
        );
        let message = message.body(body).map_err(|e| e.to_string())?;
        self.mailer
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }
}

/// Raises alerts through the gate to the channels.
pub(super) struct Alerter {
    pub(super) gate: AlertGate,
    pub(super) channels: Channels,
    pub(super) host: String,
    pub(super) target: String,
    /// Deliveries under way; awaited (bounded) before the monitor exits.
    pub(super) inflight: tokio::task::JoinSet<()>,
}

impl Alerter {
    /// Waits, at most [`DELIVERY_TIMEOUT`], for the deliveries under way.
    pub(super) async fn flush(&mut self) {
        let all = async { while self.inflight.join_next().await.is_some() {} };
        if tokio::time::timeout(DELIVERY_TIMEOUT, all).await.is_err() {
            warn!("alerts still being delivered at exit were abandoned");
        }
    }

    pub(super) fn raise(
        &mut self,
        severity: Severity,
        kind: &'static str,
        dedup_key: String,
        message: String,
    ) {
        while self.inflight.try_join_next().is_some() {} // reap finished deliveries
        let decision = self.gate.admit(&dedup_key, severity, Instant::now());
        let GateDecision::Send { suppressed } = decision else {
            debug!(kind, ?decision, "alert suppressed");
            return;
        };
        info!(kind, severity = severity.as_str(), suppressed, detail = %message, "alert raised");
        let alert = Alert {
            source: "holdfast monitor",
            host: self.host.clone(),
            severity,
            kind,
            target: self.target.clone(),
            message,
            at: holdfast_actors::clock::now_rfc3339(),
            suppressed,
            dedup_key,
        };
        self.channels.deliver(alert, &mut self.inflight);
    }
}

/// The machine's name, for alerts.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
