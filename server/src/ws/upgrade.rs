//! The upgrade service: actix-http hands it every request that asks for a
//! WebSocket (`Upgrade: websocket`), with the connection's socket. It serves
//! the request through the application, routes and middleware as any other
//! (so `/ws`'s checks, metrics and logs stay in one place). When the
//! response carries a [`Takeover`] (the `/ws` handler admitted a
//! WebSocket), the connection's driver takes the socket over, in a task of
//! its own, and writes the 101 with the session's welcome in one write: the
//! HTTP layer's task, buffers and this service's future then end.
//!
//! Any other path is served as actix-http would serve it without this
//! service, so that an application's own WebSocket routes (actix-ws,
//! actix-web-actors) and streaming answers work beside `/ws`: what the
//! client sends after the head is the request's payload, and the response
//! is written as its body comes. The connection closes after it.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_codec::{Encoder, Framed, FramedParts};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, HttpMessage, Payload, Request, Response, StatusCode};
use actix_rt::net::TcpStream;
use actix_web::dev::{fn_factory, fn_service, Service, ServiceFactory};
use bytes::{Bytes, BytesMut};
use futures::future::LocalBoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// An upgrade request's socket, shared by the request's payload (which
/// reads it) and the writer of a response that takes nothing over, until a
/// takeover moves it out (the payload then ends).
type Socket = Rc<RefCell<Option<(TcpStream, BytesMut)>>>;

async fn serve<S, R>(app: Rc<S>, (req, framed): Upgrade) -> Result<(), actix_http::Error>
where
    S: Service<Request, Response = R>,
    S::Error: Into<Response<BoxBody>>,
    R: Into<Response<BoxBody>>,
{
    let FramedParts {
        io,
        read_buf,
        mut codec,
        ..
    } = framed.into_parts();
    let socket: Socket = Rc::new(RefCell::new(Some((io, read_buf))));
    let payload: actix_http::BoxedPayloadStream = Box::pin(SocketPayload(socket.clone()));
    let (req, _) = req.replace_payload(Payload::Stream { payload });
    req.extensions_mut().insert(Upgradable);
    let mut res: Response<BoxBody> = match app.call(req).await {
        Ok(res) => res.into(),
        Err(e) => e.into(),
    };
    let Some(takeover) = res.extensions_mut().remove::<Takeover>() else {
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            res.head_mut().set_connection_type(ConnectionType::Close);
        }
        if let Err(e) = respond(&socket, &mut codec, res).await {
            tracing::debug!(error = %e, "an upgrade request's answer was not written");
        }
        return Ok(());
    };
    let Some((io, read_buf)) = socket.borrow_mut().take() else {
        return Ok(());
    };
    // The 101 is written with the session's first frames (its welcome),
    // in one write.
    let (head, _) = res.into_parts();
    let mut handshake = BytesMut::new();
    if let Err(e) = codec.encode(Message::Item((head, BodySize::None)), &mut handshake) {
        tracing::debug!(error = %e, "a 101 could not be encoded");
        return Ok(());
    }
    takeover.start(io, read_buf, handshake.freeze());
    Ok(())
}

/// Writes a response that takes nothing over: the head, then each chunk of
/// the body as soon as it is there; the connection then closes.
async fn respond(
    socket: &Socket,
    codec: &mut Codec,
    res: Response<BoxBody>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (head, body) = res.into_parts();
    let mut out = BytesMut::new();
    codec.encode(Message::Item((head, body.size())), &mut out)?;
    // The head at once: a client that upgraded waits for it to speak.
    write_all(socket, &mut out).await?;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        codec.encode(Message::Chunk(Some(chunk?)), &mut out)?;
        write_all(socket, &mut out).await?;
    }
    codec.encode(Message::Chunk(None), &mut out)?;
    write_all(socket, &mut out).await?;
    Ok(())
}

/// Writes and empties `out`. The socket is borrowed for each write only:
/// the request's payload reads it meanwhile.
async fn write_all(socket: &Socket, out: &mut BytesMut) -> std::io::Result<()> {
    while !out.is_empty() {
        let n = poll_fn(|cx| match socket.borrow_mut().as_mut() {
            Some((io, _)) => Pin::new(io).poll_write(cx, out),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        })
        .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let _ = out.split_to(n);
    }
    Ok(())
}

/// What the client sends after an upgrade request's head, as the request's
/// payload: the bytes read past the head, then the socket's.
struct SocketPayload(Socket);

impl futures::Stream for SocketPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut socket = self.0.borrow_mut();
        let Some((io, read_buf)) = socket.as_mut() else {
            return Poll::Ready(None);
        };
        if !read_buf.is_empty() {
            return Poll::Ready(Some(Ok(read_buf.split().freeze())));
        }
        let mut chunk = [0u8; 8 * 1024];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(PayloadError::Io(e)))),
            Poll::Pending => Poll::Pending,
        }
    }
}
