//! The built-in services, mounted like any part of the application:
//! always in the tree, idle when not configured, on one node at a time with
//! Redis (the services lease).

use actix_web::web;

use holdfast_actors::services::files::{self, Files};
use holdfast_actors::services::printers::{self, Printers};
use holdfast_actors::services::trending::{self, Trending};

use super::{Mount, StartError};
use crate::handlers::Target;

/// `trending`: polled feeds, cached, published to `$trending`; its HTTP
/// routes and `trending.list` read the cache.
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
    let spec = trending.spec();
    mount.rpc(trending::PREFIX, Target::of(spec.child_ref()))?;
    mount.service(spec);
    let data = web::Data::new(trending);
    mount.routes(move |cfg| {
        cfg.app_data(data.clone())
            .configure(crate::http::trending::routes);
    });
    Ok(())
}

/// `printers`: OctoPrint printers polled, their state published to
/// `$printers`; the `printers.` RPC methods (list, status, pause, resume,
/// cancel).
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
    let spec = printers.spec();
    mount.rpc(printers::PREFIX, Target::of(spec.child_ref()))?;
    mount.service(spec);
    Ok(())
}

/// `files`: a directory indexed into the database, changes to `$files`;
/// `files.list` and `files.search` read the index.
pub(super) fn files(mount: &mut Mount<'_>) -> Result<(), StartError> {
    let cx = mount.context();
    let files = Files::new(
        cx.settings.files.clone(),
        cx.db.clone(),
        cx.rooms.clone(),
        cx.lease.clone(),
    );
    let spec = files.spec();
    mount.rpc(files::PREFIX, Target::of(spec.child_ref()))?;
    mount.service(spec);
    Ok(())
}

/// The server API for backends (`/api/v1/...`), when `api.key` is set.
pub(super) fn server_api(mount: &mut Mount<'_>) -> Result<(), StartError> {
    let cx = mount.context();
    let api = web::Data::new(crate::http::api::ServerApi::new(
        cx.settings.api.key.clone(),
        cx.rooms.clone(),
        cx.disconnects.clone(),
        cx.settings.ws.max_data_bytes,
    ));
    mount.routes(move |cfg| crate::http::api::ServerApi::routes(&api, cfg));
    Ok(())
}
