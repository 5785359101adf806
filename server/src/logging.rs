//! Logging: `tracing` to JSON lines (or human lines) on stdout, optionally
//! also to a file rotated by size, and panics routed into the log.

use std::path::Path;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Keeps the log writers alive; dropping it flushes buffered lines. Drop it
/// before `std::process::exit`, which runs no destructors.
pub struct LogGuard {
    _guards: Vec<WorkerGuard>,
}

/// Installs the global subscriber and the panic hook. A second call (tests)
/// keeps the first subscriber.
///
/// # Errors
/// When the log file's directory cannot be created.
pub fn init(settings: &LogSettings) -> std::io::Result<LogGuard> {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut guards = Vec::new();
    let (stdout, guard) = tracing_appender::non_blocking(std::io::stdout());
    guards.push(guard);
    let file = if settings.file.is_empty() {
        None
    } else {
        let path = Path::new(&settings.file);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let rotating = FileRotate::new(
            path,
            AppendCount::new(settings.file_max_files),
            ContentLimit::BytesSurpassed(settings.file_max_bytes as usize),
            Compression::None,
            None,
        );
        let (writer, guard) = tracing_appender::non_blocking(rotating);
        guards.push(guard);
        Some(writer)
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (settings.format, file) {
        (LogFormat::Json, Some(f)) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(stdout.and(f))
            .try_init(),
        (LogFormat::Json, None) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(stdout)
            .try_init(),
        (LogFormat::Human, Some(f)) => builder.with_writer(stdout.and(f)).try_init(),
        (LogFormat::Human, None) => builder.with_writer(stdout).try_init(),
    };
    if result.is_ok() {
        install_panic_hook();
    }
    Ok(LogGuard { _guards: guards })
}

/// Routes panics into the structured log (with thread and location) instead
/// of bare stderr text. A supervised actor's panic is then also handled by
/// its supervisor; this hook only records it.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = holdfast_actors::supervision::panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %location,
            panic = %message,
            "panic"
        );
    }));
}
