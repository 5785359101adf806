//! The server API for backends under `/api/v1` (PROTOCOL.md, "Server API"):
//! publish and broadcast through the same path as clients (the same
//! offsets on every node), presence and history of a room.
//!
//! Off unless `api.key` is set: the routes are then not registered and
//! answer the JSON 404 of any unknown path. With a key, every request must
//! carry `Authorization: Bearer <key>` (checked in constant time, never
//! logged); a missing or wrong one is a JSON 401 before any route is looked
//! up. Publishes are trusted: no room handler, no `client_publish`, but the
//! size and nesting limits of clients.
//!
//! | route | answers |
//! |---|---|
//! | `POST /api/v1/publish` `{"room","data","from"?}` | `{"room","offset","epoch"}` |
//! | `POST /api/v1/broadcast` `{"rooms":[…],"data","from"?}` | `{"results":[{"room","offset","epoch"} or {"room","error":{"code","message"}}]}` |
//! | `GET /api/v1/rooms?prefix=` | `{"rooms":[{"room","members","offset","epoch"}],"cluster":bool}`: by name, at most 10,000; with Redis (`cluster`) the rooms with members on any node (members: sessions on every node), else this node's rooms (with members or history here) |
//! | `GET /api/v1/rooms/{room}/presence` | `{"room","members":[{"user","sessions"}]}` |
//! | `GET /api/v1/rooms/{room}/history?since=&limit=` | `{"room","epoch","messages","complete"}` |
//! | `POST /api/v1/users/{user}/disconnect` `{"code"?,"reason"?,"forget"?}` | `{"disconnected":N,"cluster":bool}`: N of this node's connections of the user closed; with Redis (`cluster`) the other nodes close theirs |

use std::sync::Arc;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use holdfast_actors::disconnects::Disconnects;
use holdfast_actors::rooms::{Position, RoomError, Rooms};

use super::error::ApiError;
use crate::config::Secret;
use crate::ws::protocol::{nesting_within, valid_room, MAX_DATA_DEPTH};

/// Most rooms `GET /api/v1/rooms` lists.
const MAX_LISTED_ROOMS: usize = 10_000;
/// Most rooms one broadcast may name.
const MAX_BROADCAST_ROOMS: usize = 1000;
/// `history`'s `limit` when absent, and its largest value (as the WebSocket request).
const HISTORY_LIMIT: (usize, usize) = (100, 1000);

/// What the server API's handlers need.
pub struct ServerApi {
    key: Secret,
    rooms: Rooms,
    disconnects: Disconnects,
    max_data_bytes: usize,
}

impl ServerApi {
    /// The API with this key (empty: off) over these rooms, disconnecting
    /// through `disconnects` (every node with Redis).
    pub fn new(key: Secret, rooms: Rooms, disconnects: Disconnects, max_data_bytes: usize) -> Self {
        Self {
            key,
            rooms,
            disconnects,
            max_data_bytes,
        }
    }

    /// Registers the routes when the API is on.
    pub fn routes(api: &web::Data<Self>, cfg: &mut web::ServiceConfig) {
        if api.key.is_empty() {
            return;
        }
        cfg.app_data(api.clone()).service(
            web::scope("/api/v1")
                .service(web::resource("/publish").route(web::post().to(publish)))
                .service(web::resource("/broadcast").route(web::post().to(broadcast)))
                .service(web::resource("/rooms").route(web::get().to(rooms)))
                .service(web::resource("/rooms/{room}/presence").route(web::get().to(presence)))
                .service(web::resource("/rooms/{room}/history").route(web::get().to(history)))
                .service(
                    web::resource("/users/{user}/disconnect").route(web::post().to(disconnect)),
                )
                .wrap(from_fn(super::bearer::authorize::<ServerApi>)),
        );
    }

    /// Publishes `data` from `from` to `room`, checked as a client's would be.
    async fn publish(
        &self,
        room: &str,
        data: &RawValue,
        from: &Arc<str>,
    ) -> Result<Position, ApiError> {
        check_room(room)?;
        if data.get().len() > self.max_data_bytes {
            return Err(ApiError::BadRequest(format!(
                "`data` is over {} bytes",
                self.max_data_bytes
            )));
        }
        if !nesting_within(data.get(), MAX_DATA_DEPTH) {
            return Err(ApiError::BadRequest(format!(
                "`data` nests deeper than {MAX_DATA_DEPTH} arrays or objects"
            )));
        }
        self.rooms
            .publish(room, from.clone(), data.to_owned())
            .await
            .map_err(unavailable)
    }
}

impl super::bearer::Guard for ServerApi {
    const SCOPE: &'static str = "server API";
    const MISSING: &'static str = "the server API needs 'Authorization: Bearer <api key>'";
    const WRONG: &'static str = "the API key is wrong";

    fn secret(&self) -> &Secret {
        &self.key
    }
}

fn check_room(room: &str) -> Result<(), ApiError> {
    if valid_room(room) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "'{}' is not a room name: 1 to 128 bytes of [A-Za-z0-9_.:-], optionally after a leading '$'",
            room.chars().take(140).collect::<String>()
        )))
    }
}

fn unavailable(_: RoomError) -> ApiError {
    ApiError::Unavailable("the room service is restarting; retry".into())
}

fn published(room: &str, p: &Position) -> Value {
    json!({"room": room, "offset": p.offset, "epoch": &*p.epoch})
}

fn server() -> String {
    "server".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    data: Box<RawValue>,
    #[serde(default = "server")]
    from: String,
}

/// `POST /api/v1/publish`.
async fn publish(
    api: web::Data<ServerApi>,
    body: web::Json<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let from: Arc<str> = body.from.as_str().into();
    let position = api.publish(&body.room, &body.data, &from).await?;
    Ok(HttpResponse::Ok().json(published(&body.room, &position)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    rooms: Vec<String>,
    data: Box<RawValue>,
    #[serde(default = "server")]
    from: String,
}

/// `POST /api/v1/broadcast`: one result per room, in the order given.
async fn broadcast(
    api: web::Data<ServerApi>,
    body: web::Json<BroadcastBody>,
) -> Result<HttpResponse, ApiError> {
    if body.rooms.len() > MAX_BROADCAST_ROOMS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BROADCAST_ROOMS} rooms per broadcast"
        )));
    }
    let from: Arc<str> = body.from.as_str().into();
    let mut results = Vec::with_capacity(body.rooms.len());
    for room in &body.rooms {
        results.push(match api.publish(room, &body.data, &from).await {
            Ok(position) => published(room, &position),
            Err(e) => {
                let status = e.status_code();
                json!({"room": room, "error": {"code": super::error::code_for(status), "message": e.to_string()}})
            }
        });
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsQuery {
    #[serde(default)]
    prefix: String,
}

/// `GET /api/v1/rooms`.
async fn rooms(api: web::Data<ServerApi>, query: web::Query<RoomsQuery>) -> HttpResponse {
    HttpResponse::Ok().json(api.rooms.list(&query.prefix, MAX_LISTED_ROOMS).await)
}

/// `GET /api/v1/rooms/{room}/presence`.
async fn presence(
    api: web::Data<ServerApi>,
    room: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_room(&room)?;
    let members = api.rooms.presence(&room).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({"room": &*room, "members": members})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/rooms/{room}/history`.
async fn history(
    api: web::Data<ServerApi>,
    room: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    check_room(&room)?;
    let limit = query.limit.unwrap_or(HISTORY_LIMIT.0).min(HISTORY_LIMIT.1);
    let page = api
        .rooms
        .history(&room, query.since.unwrap_or(0), limit)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({
        "room": &*room,
        "epoch": &*page.epoch,
        "messages": page.messages,
        "complete": page.complete,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(default = "first_application_code")]
    code: u16,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    forget: bool,
}

fn first_application_code() -> u16 {
    4000
}

/// `POST /api/v1/users/{user}/disconnect`: closes the user's connections
/// with an application close code (4000–4499: may reconnect and resume;
/// 4500–4999: must not reconnect on its own); `forget` ends the sessions.
async fn disconnect(
    api: web::Data<ServerApi>,
    user: web::Path<String>,
    body: Option<web::Json<DisconnectBody>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_or_else(
        || DisconnectBody {
            code: first_application_code(),
            reason: String::new(),
            forget: false,
        },
        web::Json::into_inner,
    );
    if !(4000..=4999).contains(&body.code) {
        return Err(ApiError::BadRequest(format!(
            "`code` must be an application close code, 4000 to 4999 (got {})",
            body.code
        )));
    }
    // A close reason is at most 123 bytes (RFC 6455 §5.5).
    if body.reason.len() > 123 {
        return Err(ApiError::BadRequest("`reason` is at most 123 bytes".into()));
    }
    let n = api
        .disconnects
        .disconnect_user(&user, body.code, &body.reason, body.forget);
    Ok(HttpResponse::Ok()
        .json(json!({ "disconnected": n, "cluster": api.disconnects.cluster_wide() })))
}
