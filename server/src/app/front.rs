//! The HTTP front: the listener served by actix-server, each connection by
//! actix-http's HTTP/1 service over the application (what actix-web's
//! `HttpServer` builds, with its defaults), plus the WebSocket transport's
//! upgrade service, which takes the socket of a `/ws` upgrade over from
//! the HTTP layer (see `ws::upgrade`).

use std::net::TcpListener;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::{HttpService, KeepAlive};
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::App;

use crate::config::Settings;

/// Serves `listener` with the application `app` builds (once per worker
/// and service). Must run inside an actix system.
///
/// # Errors
/// The listener cannot be registered.
pub(super) fn serve<F, T, B>(
    listener: TcpListener,
    settings: &Settings,
    app: F,
) -> std::io::Result<Server>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let mut server = actix_server::Server::build()
        .disable_signals()
        .shutdown_timeout(settings.shutdown.http_timeout_ms.div_ceil(1000).max(1));
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    let shutdown = server.graceful_shutdown_signal();
    // The application's service: actix-web's `AppConfig` only carries the
    // host a request without `Host` is taken to be for, which nothing here reads.
    let service = move || {
        map_config(app().into_factory(), |()| AppConfig::default())
            .map_err(|e: actix_web::Error| e.error_response())
    };
    let server = server.listen("holdfast-http", listener, move || {
        let shutdown = shutdown.clone();
        HttpService::build()
            .keep_alive(KeepAlive::default())
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(crate::ws::LINGER)
            // Realtime frames are small and must not wait for Nagle's
            // algorithm (with delayed ACKs on the client, up to 40 ms per frame).
            .tcp_nodelay(true)
            .local_addr(addr)
            // Idle keep-alive connections close when a graceful stop begins.
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .upgrade(crate::ws::upgrade_service(
                service().map(ServiceResponse::map_into_boxed_body),
            ))
            .finish(service())
            .tcp()
    })?;
    Ok(server.run())
}
