//! Logging: `tracing` to JSON lines (or human lines) on stdout, optionally
//! also to a file rotated by size, and panics routed into the log; beside
//! it, the trace exporter's layer ([`crate::telemetry`]).

use std::path::Path;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings};
use crate::telemetry::{Traces, TARGET};

/// Keeps the log writers (and the trace exporter) alive; dropping it
/// exports the last spans, then flushes buffered lines. Drop it before
/// `std::process::exit`, which runs no destructors.
pub struct LogGuard {
    // Declared first: dropped first, while the log still takes its warning.
    _traces: Option<Traces>,
    _guards: Vec<WorkerGuard>,
}

/// Installs the global subscriber (the log, and the exporter of `traces`
/// when there is one) and the panic hook. A second call (tests) keeps the
/// first subscriber.
///
/// # Errors
/// When the log file's directory cannot be created.
pub fn init(settings: &LogSettings, traces: Option<Traces>) -> std::io::Result<LogGuard> {
    // The exported spans are never log lines, whatever `log.level` says.
    let filter = EnvFilter::try_new(&settings.level)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(format!("{TARGET}=off").parse().expect("a valid directive"));
    let mut guards = Vec::new();
    let (stdout, guard) = tracing_appender::non_blocking(std::io::stdout());
    guards.push(guard);
    let writer = if settings.file.is_empty() {
        BoxMakeWriter::new(stdout)
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
        let (file, guard) = tracing_appender::non_blocking(rotating);
        guards.push(guard);
        BoxMakeWriter::new(stdout.and(file))
    };
    let result = tracing_subscriber::registry()
        .with(traces.as_ref().map(Traces::layer))
        .with(log_layer(settings.format, writer).with_filter(filter))
        .try_init();
    if result.is_ok() {
        install_panic_hook();
    }
    Ok(LogGuard {
        _traces: traces,
        _guards: guards,
    })
}

/// The log lines, as `format` says.
fn log_layer<S>(format: LogFormat, writer: BoxMakeWriter) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        LogFormat::Human => layer.boxed(),
    }
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
