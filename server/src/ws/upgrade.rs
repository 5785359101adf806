//! The upgrade service: actix-http hands it every request that asks for a
//! `Connection: Upgrade`, with the connection's socket. It serves the
//! request through the application, routes and middleware as any other
//! (so `/ws`'s checks, metrics and logs stay in one place); when the
//! response carries a [`Takeover`] (the `/ws` handler admitted a
//! WebSocket), the connection's driver takes the socket over, in a task of
//! its own, and writes the 101 with the session's welcome in one write: the
//! HTTP layer's task, buffers and this service's future then end. Any other
//! response is written as it is, and the connection then closes: only
//! `/ws` upgrades.

use std::rc::Rc;

use actix_codec::{Encoder, Framed, FramedParts};
use actix_http::body::{BodySize, BoxBody};
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, HttpMessage, Request, Response};
use actix_rt::net::TcpStream;
use actix_web::dev::{fn_factory, fn_service, Service, ServiceFactory};
use bytes::BytesMut;
use futures::future::LocalBoxFuture;
use futures::SinkExt;

use super::fanout::Takeover;

/// Marks a request that came through the upgrade service: the socket can
/// be taken over after its response.
pub(crate) struct Upgradable;

/// The socket of an upgrade request, with the request.
type Upgrade = (Request, Framed<TcpStream, Codec>);

/// The upgrade service of one worker, over `app`, the application's
/// service factory (a second instance of the one serving other requests).
pub(crate) fn service<F, R>(
    app: F,
) -> impl ServiceFactory<Upgrade, Config = (), Response = (), Error = actix_http::Error, InitError = ()>
where
    F: ServiceFactory<Request, Config = (), Response = R> + 'static,
    F::Service: 'static,
    F::Error: Into<Response<BoxBody>>,
    F::InitError: std::fmt::Debug,
    R: Into<Response<BoxBody>> + 'static,
{
    fn_factory(move || {
        let app = app.new_service(());
        async move {
            let app = Rc::new(app.await.map_err(|e| {
                tracing::error!(error = ?e, "the application's service for upgrades did not start");
            })?);
            Ok(fn_service(
                move |upgrade: Upgrade| -> LocalBoxFuture<'static, _> {
                    Box::pin(serve(app.clone(), upgrade))
                },
            ))
        }
    })
}

async fn serve<S, R>(app: Rc<S>, (req, mut framed): Upgrade) -> Result<(), actix_http::Error>
where
    S: Service<Request, Response = R>,
    S::Error: Into<Response<BoxBody>>,
    R: Into<Response<BoxBody>>,
{
    req.extensions_mut().insert(Upgradable);
    let mut res: Response<BoxBody> = match app.call(req).await {
        Ok(res) => res.into(),
        Err(e) => e.into(),
    };
    let Some(takeover) = res.extensions_mut().remove::<Takeover>() else {
        res.head_mut().set_connection_type(ConnectionType::Close);
        if let Err(e) = respond(framed, res).await {
            tracing::debug!(error = %e, "an upgrade request's answer was not written");
        }
        return Ok(());
    };
    // The 101 is written with the session's first frames (its welcome),
    // in one write.
    let (head, _) = res.into_parts();
    let mut handshake = BytesMut::new();
    if let Err(e) = framed
        .codec_mut()
        .encode(Message::Item((head, BodySize::None)), &mut handshake)
    {
        tracing::debug!(error = %e, "a 101 could not be encoded");
        return Ok(());
    }
    let FramedParts { io, read_buf, .. } = framed.into_parts();
    takeover.start(io, read_buf, handshake.freeze());
    Ok(())
}

/// Writes a response that takes nothing over; the connection then closes.
async fn respond(
    mut framed: Framed<TcpStream, Codec>,
    res: Response<BoxBody>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (head, body) = res.into_parts();
    let body = actix_http::body::to_bytes(body).await?;
    let size = BodySize::Sized(body.len() as u64);
    framed.feed(Message::Item((head, size))).await?;
    if !body.is_empty() {
        framed.feed(Message::Chunk(Some(body))).await?;
    }
    framed.send(Message::Chunk(None)).await?;
    Ok(())
}
