//! The first-run demo (`[demo] enabled`, on by default): a chat at `/`
//! over the `demo:` rooms, written against the JavaScript client the server
//! serves at `/client/holdfast.js`, with the server's own health beside it.
//!
//! It is mounted after every part of the application, so that an
//! application's own `/` route wins, and adds what its page needs only
//! where the configuration has nothing of its own: the `demo:` namespace
//! (history, presence events) and `demo:moderated` under [`Moderator`].

mod moderator;

use crate::app::{Mount, StartError};
use crate::config::{NamespaceSettings, RoomSettings, Settings};
use crate::handlers::RoomHandler;
use crate::http::assets::{self, asset, Bundle, CSS, HTML, JS};
pub use moderator::Moderator;

/// The demo's rooms.
pub const PREFIX: &str = "demo:";
/// The demo's moderated rooms.
pub const MODERATED: &str = "demo:moderated";
/// The moderator's name as a room handler.
const HANDLER: &str = "demo.moderator";

/// The page and its files, as `clients/demo/` holds them.
const FILES: Bundle = Bundle {
    mount: "/demo/",
    files: &[
        asset!("index.html", HTML, "../../../clients/demo/index.html"),
        asset!("demo.js", JS, "../../../clients/demo/demo.js"),
        asset!("demo.css", CSS, "../../../clients/demo/demo.css"),
    ],
};

/// Adds the demo's namespaces to `settings`, unless it is off or the
/// configuration has namespaces of those prefixes already.
pub fn namespaces(settings: &mut Settings) {
    if !settings.demo.enabled {
        return;
    }
    let rooms: &mut RoomSettings = &mut settings.rooms;
    let mut add = |namespace: NamespaceSettings| {
        if !rooms
            .namespaces
            .iter()
            .any(|n| n.prefix == namespace.prefix)
        {
            rooms.namespaces.push(namespace);
        }
    };
    add(NamespaceSettings {
        history_size: Some(200),
        presence_events: true,
        ..NamespaceSettings::new(PREFIX)
    });
    add(NamespaceSettings {
        history_size: Some(200),
        presence_events: true,
        handler: Some(HANDLER.to_owned()),
        ..NamespaceSettings::new(MODERATED)
    });
}

/// Mounts the page at `/` and `/demo/`, and the moderator.
///
/// # Errors
/// Another handler took the moderator's name.
pub fn mount(mount: &mut Mount<'_>) -> Result<(), StartError> {
    if !mount.context().settings().demo.enabled {
        return Ok(());
    }
    let spec = Moderator::spec();
    mount.room_handler(HANDLER, RoomHandler::of(spec.child_ref()))?;
    mount.service(spec);
    mount.routes(|cfg| assets::mount(cfg, &FILES, &["/"]));
    Ok(())
}
