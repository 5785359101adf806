//! [`OctoPrint`]: the client of OctoPrint's REST API, the one place that
//! knows its paths, bodies and status codes. A poll reads
//! `GET /api/printer` (and `GET /api/job` while a job runs) into an
//! [`Observation`]; a [`Command`] is `POST /api/job`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Observation, PrinterState};
use crate::services::error_chain;
use crate::tls::ClientTls;

/// OctoPrint's REST API over one HTTP client (shared connections, TLS,
/// every request bounded by `timeout`).
pub(super) struct OctoPrint {
    client: reqwest::Client,
    timeout: Duration,
}

/// Where one printer's OctoPrint is, and its key.
pub(super) struct Device {
    /// The base URL, without a trailing `/`.
    pub(super) url: String,
    pub(super) key: String,
}

/// A job command (`POST /api/job`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Command {
    Pause,
    Resume,
    Cancel,
}

impl Command {
    /// The body OctoPrint takes.
    fn body(self) -> Value {
        match self {
            Command::Pause => json!({"command": "pause", "action": "pause"}),
            Command::Resume => json!({"command": "pause", "action": "resume"}),
            Command::Cancel => json!({"command": "cancel"}),
        }
    }

    /// What the command is, for messages.
    pub(super) fn verb(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Cancel => "cancel",
        }
    }
}

/// Why a command did not take effect.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 409: the printer is not in a state that allows it (idle, not
    /// paused, not connected).
    Conflict,
    /// 401/403: OctoPrint refused the API key.
    Key(u16),
    /// No answer, or a 5xx: the printer cannot be reached.
    Unreachable(String),
    /// Any other status.
    Status(u16),
}

/// An answer: JSON on 2xx, else the status.
enum Answer {
    Json(Value),
    Status(u16),
}

/// `/api/printer`, the parts used.
#[derive(Deserialize)]
struct PrinterAnswer {
    state: PrinterStatus,
}

#[derive(Deserialize)]
struct PrinterStatus {
    #[serde(default)]
    text: String,
    flags: Flags,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Flags {
    operational: bool,
    printing: bool,
    paused: bool,
    pausing: bool,
    error: bool,
    closed_or_error: bool,
}

/// `/api/job`, the parts used.
#[derive(Deserialize, Default)]
#[serde(default)]
struct JobAnswer {
    job: Job,
    progress: Progress,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Job {
    file: JobFile,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JobFile {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Progress {
    completion: Option<f64>,
    print_time_left: Option<i64>,
}

impl OctoPrint {
    /// A client whose requests (connect included) are bounded by `timeout`.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub(super) fn new(tls: &ClientTls, timeout: Duration) -> Result<Self, String> {
        let client = tls
            .http_client()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("holdfast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { client, timeout })
    }

    /// One poll of `device`; never fails, an error is a state.
    pub(super) async fn observe(&self, device: &Device) -> Observation {
        let printer: PrinterAnswer = match self.send(device, "/api/printer", None).await {
            Ok(Answer::Json(v)) => match serde_json::from_value(v) {
                Ok(p) => p,
                Err(e) => {
                    return Observation {
                        answered: true,
                        ..Observation::offline(format!("unexpected answer from OctoPrint: {e}"))
                    }
                    .with_state(PrinterState::Error)
                }
            },
            Ok(Answer::Status(409)) => {
                return Observation {
                    answered: true,
                    ..Observation::offline("no printer connected to OctoPrint")
                }
            }
            Ok(Answer::Status(s @ (401 | 403))) => {
                return Observation::offline(format!("OctoPrint refused the API key (HTTP {s})"))
                    .with_state(PrinterState::Error)
            }
            Ok(Answer::Status(s)) => {
                return Observation::offline(format!("OctoPrint answered HTTP {s}"))
            }
            Err(e) => return Observation::offline(e),
        };
        let PrinterStatus { text, flags } = printer.state;
        let mut obs = Observation {
            state: PrinterState::Idle,
            progress: None,
            file: None,
            time_left_s: None,
            message: text,
            answered: true,
        };
        if flags.error {
            obs.state = PrinterState::Error;
        } else if flags.printing || flags.paused || flags.pausing {
            obs.state = if flags.printing {
                PrinterState::Printing
            } else {
                PrinterState::Paused
            };
            // Without the job (it failed or timed out), still printing, progress unknown.
            if let Ok(Answer::Json(v)) = self.send(device, "/api/job", None).await {
                let job: JobAnswer = serde_json::from_value(v).unwrap_or_default();
                obs.progress = job.progress.completion;
                obs.file = job.job.file.name;
                obs.time_left_s = job.progress.print_time_left;
            }
        } else if !flags.operational || flags.closed_or_error {
            obs.state = PrinterState::Offline;
        }
        obs
    }

    /// Sends `command` to `device`'s current job.
    ///
    /// # Errors
    /// OctoPrint refused it, or could not be reached.
    pub(super) async fn command(&self, device: &Device, command: Command) -> Result<(), Refusal> {
        match self.send(device, "/api/job", Some(command.body())).await {
            Ok(Answer::Json(_)) => Ok(()),
            Ok(Answer::Status(409)) => Err(Refusal::Conflict),
            Ok(Answer::Status(s @ (401 | 403))) => Err(Refusal::Key(s)),
            Ok(Answer::Status(s)) if s >= 500 => {
                Err(Refusal::Unreachable(format!("OctoPrint answered HTTP {s}")))
            }
            Ok(Answer::Status(s)) => Err(Refusal::Status(s)),
            Err(e) => Err(Refusal::Unreachable(e)),
        }
    }

    /// GETs `path` (or POSTs `body` to it) with the key. A 2xx answer is
    /// parsed as JSON (an empty one, OctoPrint's 204, is `null`).
    async fn send(
        &self,
        device: &Device,
        path: &str,
        body: Option<Value>,
    ) -> Result<Answer, String> {
        let mut key = reqwest::header::HeaderValue::from_str(&device.key)
            .map_err(|_| "the API key is not a valid header value".to_owned())?;
        key.set_sensitive(true);
        let url = format!("{}{path}", device.url);
        let request = match body {
            None => self.client.get(url),
            Some(body) => self.client.post(url).json(&body),
        };
        let response = request.header("X-Api-Key", key).send().await.map_err(|e| {
            let e = e.without_url();
            if e.is_timeout() {
                format!("no answer within {} ms", self.timeout.as_millis())
            } else {
                format!("unreachable: {}", error_chain(&e))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Ok(Answer::Status(status.as_u16()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("bad answer to {path}: {}", e.without_url()))?;
        if bytes.is_empty() {
            return Ok(Answer::Json(Value::Null));
        }
        serde_json::from_slice(&bytes)
            .map(Answer::Json)
            .map_err(|e| format!("bad answer to {path}: {e}"))
    }
}
