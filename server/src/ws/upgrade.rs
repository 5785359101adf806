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
//! service, so that an application's own WebSocket routes (actix-ws's,
//! for one) and streaming answers work beside `/ws`: what the
//! client sends after the head is the request's payload, and the response
//! is written as its body comes. The connection closes after it.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_codec::{Encoder, Framed, FramedParts};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::h1::{Codec, Message};
use actix_http::{ConnectionType, HttpMessage, Payload, Request, Response, StatusCode};
use actix_rt::net::TcpStream;
use actix_web::dev::{fn_factory, fn_service, Service, ServiceFactory};
use bytes::{Bytes, BytesMut};
use futures::future::LocalBoxFuture;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::fanout::{poll_drain, poll_read, Takeover, LINGER};

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

async fn serve<S, R>(app: Rc<S>, (req, framed): Upgrade) -> Result<(), actix_http::Error>
where
    S: Service<Request, Response = R>,
    S::Error: Into<Response<BoxBody>>,
    R: Into<Response<BoxBody>>,
{
    // `write_buf` holds what the HTTP layer had not written yet: the
    // answers of requests pipelined ahead of this one, which go first.
    let FramedParts {
        io,
        read_buf,
        write_buf: mut out,
        mut codec,
        ..
    } = framed.into_parts();
    let socket = Socket::new(io, read_buf);
    let payload: actix_http::BoxedPayloadStream = Box::pin(SocketPayload(socket.clone()));
    let (req, _) = req.replace_payload(Payload::Stream { payload });
    req.extensions_mut().insert(Upgradable);
    let mut res: Response<BoxBody> = match app.call(req).await {
        Ok(res) => res.into(),
        Err(e) => e.into(),
    };
    let Some(takeover) = res.extensions_mut().remove::<Takeover>() else {
        let head = res.head_mut();
        if head.status != StatusCode::SWITCHING_PROTOCOLS {
            head.set_connection_type(ConnectionType::Close);
        }
        // The codec decoded an upgrade request, so it writes a streamed
        // body as it comes, not in chunks: the head must not announce
        // chunks, and the close ends the body.
        head.no_chunking(true);
        if let Err(e) = respond(&socket, &mut codec, out, res).await {
            tracing::debug!(error = %e, "an upgrade request's answer was not written");
        }
        close(&socket).await;
        return Ok(());
    };
    let Some((io, read_buf)) = socket.take() else {
        return Ok(());
    };
    // The 101 is written with the session's first frames (its welcome),
    // in one write.
    let (head, _) = res.into_parts();
    if let Err(e) = codec.encode(Message::Item((head, BodySize::None)), &mut out) {
        tracing::debug!(error = %e, "a 101 could not be encoded");
        return Ok(());
    }
    takeover.start(io, read_buf, out.freeze());
    Ok(())
}

/// Writes what `out` holds, then a response that takes nothing over: the
/// head, then each chunk of the body as soon as it is there.
async fn respond(
    socket: &Socket,
    codec: &mut Codec,
    mut out: BytesMut,
    res: Response<BoxBody>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (head, body) = res.into_parts();
    codec.encode(Message::Item((head, body.size())), &mut out)?;
    // The head at once: a client that upgraded waits for it to speak.
    socket.write_all(&mut out).await?;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        codec.encode(Message::Chunk(Some(chunk?)), &mut out)?;
        socket.write_all(&mut out).await?;
    }
    codec.encode(Message::Chunk(None), &mut out)?;
    socket.write_all(&mut out).await?;
    Ok(())
}

/// Ends a connection whose answer was written, or could not be: the
/// request's payload ends; the client gets a FIN after the answer, and what
/// it still sends is read and dropped for up to [`LINGER`], as the driver
/// does.
async fn close(socket: &Socket) {
    let Some((mut io, _)) = socket.take() else {
        return;
    };
    if io.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, poll_fn(|cx| poll_drain(&io, cx))).await;
}

/// An upgrade request's socket, shared by the request's payload (which
/// reads it) and the writer of an answer that takes nothing over, until it
/// is taken: by a takeover, or to close the connection once the answer is
/// written. The payload then ends.
#[derive(Clone)]
struct Socket(Rc<RefCell<Shared>>);

struct Shared {
    /// The socket and what was read past the request's head; `None` once
    /// taken.
    io: Option<(TcpStream, BytesMut)>,
    /// The payload's reader while it waits on the socket, woken when the
    /// socket is taken (tokio wakes no one when a socket is dropped).
    reader: Option<Waker>,
}

impl Socket {
    fn new(io: TcpStream, read_buf: BytesMut) -> Self {
        Self(Rc::new(RefCell::new(Shared {
            io: Some((io, read_buf)),
            reader: None,
        })))
    }

    /// Takes the socket out; the payload's reader sees the end.
    fn take(&self) -> Option<(TcpStream, BytesMut)> {
        let (io, reader) = {
            let mut held = self.0.borrow_mut();
            (held.io.take(), held.reader.take())
        };
        if let Some(reader) = reader {
            reader.wake();
        }
        io
    }

    /// Writes and empties `out`. The socket is borrowed for each write
    /// only: the request's payload reads it meanwhile.
    async fn write_all(&self, out: &mut BytesMut) -> std::io::Result<()> {
        while !out.is_empty() {
            let n = poll_fn(|cx| match self.0.borrow_mut().io.as_mut() {
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
}

/// What the client sends after an upgrade request's head, as the request's
/// payload: the bytes read past the head, then the socket's, until the
/// client's side ends or the socket is taken.
struct SocketPayload(Socket);

impl futures::Stream for SocketPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut held = self.0 .0.borrow_mut();
        let Shared { io, reader } = &mut *held;
        let Some((io, read_buf)) = io.as_mut() else {
            return Poll::Ready(None);
        };
        if !read_buf.is_empty() {
            return Poll::Ready(Some(Ok(read_buf.split().freeze())));
        }
        match poll_read(io, cx, Bytes::copy_from_slice) {
            Poll::Ready(read) => Poll::Ready(read.map(|r| r.map_err(PayloadError::Io))),
            Poll::Pending => {
                if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
