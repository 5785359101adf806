//! The command line: `holdfast [serve]`, `holdfast check [--url URL]`,
//! `holdfast config`, `holdfast monitor [--url URL] [--exec PROGRAM ARGS...]`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use holdfast_actors::shutdown::{Shutdown, ShutdownReason};

use crate::app::Builder;
use crate::config::{Settings, EXIT_CONFIG};

/// Holdfast: a resilient, actor-based realtime server.
#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about)]
pub struct Cli {
    /// A TOML file layered over the defaults and config/$HOLDFAST_ENV.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Exit 0 if and only if the server's readiness answers 200 (Docker HEALTHCHECK).
    Check {
        /// Readiness URL; defaults to the configured host and port.
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// The external watchdog: run the server as a child (or watch a URL),
    /// poll its liveness, restart it when it fails, alert by webhook and email.
    Monitor {
        /// Liveness URL to poll. Without --exec: only watch it (and alert).
        #[arg(long)]
        url: Option<String>,
        /// Run this command as the child instead of `holdfast serve`; takes
        /// every argument after it, so put it last.
        #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "PROGRAM ARGS")]
        exec: Option<Vec<String>>,
    },
}

/// Exit code after a second SIGINT (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

/// Runs the `holdfast` CLI; returns the process exit code.
pub fn main() -> i32 {
    run(Builder::new)
}

/// Runs the CLI of an application built on Holdfast: every subcommand
/// (`serve`, `check`, `config`, `migrate`, `monitor`) and the signal
/// handling of `holdfast`, with `app` adding the application's parts to
/// the builder once the settings are loaded. Returns the exit code:
///
/// ```no_run
/// // In `fn main()`:
/// std::process::exit(holdfast_server::cli::run(|settings| {
///     holdfast_server::Builder::new(settings) // .room_handler(...).rpc(...)
/// }));
/// ```
pub fn run(app: impl FnOnce(Settings) -> Builder) -> i32 {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("holdfast: {e}");
            return EXIT_CONFIG;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(app(settings)),
        Command::Check { url, timeout } => check(&settings, url, Duration::from_secs(timeout)),
        Command::Config => {
            print!("{}", settings.to_toml());
            0
        }
        Command::Migrate => migrate(&settings),
        Command::Monitor { url, exec } => {
            match crate::monitor::target(&settings, cli.config.as_deref(), url, exec) {
                Ok(target) => crate::monitor::run(&settings, target),
                Err(e) => {
                    eprintln!("holdfast monitor: cannot find the holdfast binary: {e}");
                    1
                }
            }
        }
    }
}

/// `holdfast migrate`: applies pending migrations; 0 on success, 1 otherwise.
fn migrate(settings: &Settings) -> i32 {
    actix_rt::System::new().block_on(async {
        let registry = prometheus::Registry::new();
        let (shutdown, _events) = holdfast_actors::shutdown::Shutdown::new();
        let kernel =
            match holdfast_actors::Kernel::new(registry.clone(), shutdown, &settings.kernel()) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("holdfast migrate: {e}");
                    return 1;
                }
            };
        let db =
            match holdfast_actors::db::Db::new(settings.database.clone(), &registry, kernel.events)
            {
                Ok(db) => db,
                Err(e) => {
                    eprintln!("holdfast migrate: {e}");
                    return EXIT_CONFIG;
                }
            };
        match db.migrate().await {
            Ok(n) => {
                println!("{n} migration(s) applied to {}", db.redacted_url());
                0
            }
            Err(e) => {
                eprintln!("holdfast migrate: {e} ({})", db.redacted_url());
                1
            }
        }
    })
}

/// Runs the server `builder` sets up until a shutdown completes, with the
/// signal handling and systemd notifications of `holdfast serve`; returns
/// the exit code.
pub fn serve(builder: Builder) -> i32 {
    let traces = match crate::telemetry::Traces::start(builder.settings()) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("holdfast: config error: key `telemetry.otlp_endpoint`: {e}");
            return EXIT_CONFIG;
        }
    };
    let guard = match crate::logging::init(&builder.settings().log, traces) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("holdfast: config error: key `log.file`: {e}");
            return EXIT_CONFIG;
        }
    };
    let code = actix_rt::System::new().block_on(async move {
        let server = match builder.start().await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("holdfast: {e}");
                return e.exit_code();
            }
        };
        actix_rt::spawn(forward_signals(server.shutdown_handle()));
        crate::systemd::start(server.probe(), server.shutdown_handle());
        server.run_until_stopped().await.exit_code
    });
    drop(guard);
    code
}

/// SIGTERM and SIGINT take the same path as any shutdown request; a second
/// SIGINT exits at once.
async fn forward_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(
            "cannot install signal handlers; stop the process with the admin API or SIGKILL"
        );
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if name == "SIGINT" && shutdown.is_draining() {
            tracing::warn!("second SIGINT: exiting now");
            std::process::exit(EXIT_INTERRUPTED);
        }
        tracing::info!(signal = name, "signal received; shutting down");
        shutdown.request(ShutdownReason::Signal {
            signal: name.to_owned(),
        });
    }
}

/// The readiness path `holdfast check` asks for when given a bare host.
const READINESS_PATH: &str = "/health/ready";

/// The URL `holdfast check` asks: `--url` as given when it names a path,
/// that host's readiness probe when it names none (`http://host:8080` or
/// `http://host:8080/`), else this config's own server.
fn check_url(settings: &Settings, url: Option<String>) -> String {
    let Some(url) = url else {
        return crate::monitor::local_url(settings, READINESS_PATH);
    };
    match reqwest::Url::parse(&url) {
        Ok(mut parsed) if parsed.path() == "/" && parsed.query().is_none() => {
            parsed.set_path(READINESS_PATH);
            parsed.to_string()
        }
        _ => url, // a path of its own, or not a URL (the request says why)
    }
}

/// `holdfast check`: GET the readiness URL; 0 if and only if it answers 200.
fn check(settings: &Settings, url: Option<String>, timeout: Duration) -> i32 {
    let url = check_url(settings, url);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdfast check: {e}");
            return 1;
        }
    };
    let tls = match settings.tls.client() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("holdfast: {e}");
            return EXIT_CONFIG;
        }
    };
    runtime.block_on(async {
        let client = match tls.http_client().timeout(timeout).build() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("holdfast check: {e}");
                return 1;
            }
        };
        match client.get(&url).send().await {
            Ok(res) if res.status() == reqwest::StatusCode::OK => {
                println!("ready: {url}");
                0
            }
            Ok(res) => {
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                eprintln!("not ready: {url} answered {status}: {body}");
                1
            }
            Err(e) => {
                // The chain says why ("invalid peer certificate: UnknownIssuer").
                let e = holdfast_actors::services::error_chain(&e.without_url());
                eprintln!("not ready: {url}: {e}");
                1
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_asks_a_bare_host_for_its_readiness() {
        let s = Settings::defaults();
        let url = |u: &str| check_url(&s, Some(u.to_owned()));
        assert_eq!(url("http://h:8080"), "http://h:8080/health/ready");
        assert_eq!(url("http://h:8080/"), "http://h:8080/health/ready");
        assert_eq!(url("https://h"), "https://h/health/ready");
        assert_eq!(url("http://h:8080/health"), "http://h:8080/health");
        assert_eq!(url("http://h/readyz"), "http://h/readyz");
        assert_eq!(url("not a url"), "not a url");
        assert_eq!(check_url(&s, None), "http://127.0.0.1:8080/health/ready");
    }
}
