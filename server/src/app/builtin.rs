//! The built-in services, mounted like any part of the application:
//! always in the tree, idle when not configured, on one node at a time with
//! Redis (the services lease).

use actix_web::web;

use holdfast_actors::services::{files::Files, printers::Printers, trending::Trending};

use super::{Mount, StartError};

/// `trending`: polled feeds, cached, published to `$trending`; its HTTP
/// routes read the cache.
pub(super) fn trending(mount: &mut Mount<'_>) -> Result<(), StartError> {
    let cx = mount.context();
    let trending = Trending::new(
        cx.settings.trending.clone(),
        &cx.tls,
        cx.rooms.clone(),
        &cx.registry,
        cx.lease.clone(),
    )
    .map_err(StartError::Services)?;
    mount.service(trending.spec());
    let data = web::Data::new(trending);
    mount.routes(move |cfg| {
        cfg.app_data(data.clone())
            .configure(crate::http::trending::routes);
    });
    Ok(())
}

/// `printers`: OctoPrint printers polled, their state published to `$printers`.
pub(super) fn printers(mount: &mut Mount<'_>) -> Result<(), StartError> {
    let cx = mount.context();
    let printers = Printers::new(
        cx.settings.printers.clone(),
        &cx.tls,
        cx.rooms.clone(),
        &cx.registry,
        cx.lease.clone(),
    )
    .map_err(StartError::Services)?;
    mount.service(printers.spec());
    Ok(())
}

/// `files`: a directory indexed into the database, changes to `$files`.
pub(super) fn files(mount: &mut Mount<'_>) -> Result<(), StartError> {
    let cx = mount.context();
    let files = Files::new(
        cx.settings.files.clone(),
        cx.db.clone(),
        cx.rooms.clone(),
        cx.lease.clone(),
    );
    mount.service(files.spec());
    Ok(())
}

/// The server API for backends (`/api/v1/...`), when `api.key` is set.
pub(super) fn server_api(mount: &mut Mount<'_>) -> Result<(), StartError> {
    let cx = mount.context();
    let api = web::Data::new(crate::http::api::ServerApi::new(
        cx.settings.api.key.clone(),
        cx.rooms.clone(),
        cx.connections.clone(),
        cx.settings.ws.max_data_bytes,
    ));
    mount.routes(move |cfg| crate::http::api::ServerApi::routes(&api, cfg));
    Ok(())
}
