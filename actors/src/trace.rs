//! The spans a trace exporter sees (the server's `telemetry` module exports
//! them over OTLP): `tracing` spans of target [`TARGET`], never log lines.

use tracing::Span;

/// The `tracing` target of every exported span.
pub const TARGET: &str = "holdfast::trace";

/// The span `make` builds as a child of `parent`, when `parent` is traced;
/// a disabled span otherwise, so that work nobody traced starts no trace of
/// its own (a service's broadcast, another node's publication).
pub fn child_of(parent: &Span, make: impl FnOnce() -> Span) -> Span {
    if parent.is_disabled() {
        Span::none()
    } else {
        make()
    }
}
