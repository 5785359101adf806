//! The listening socket.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use super::StartError;

/// Binds a listening socket with a deep accept backlog.
pub(super) fn bind(host: &str, port: u16) -> Result<TcpListener, StartError> {
    let shown = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let fail = |source| StartError::Bind {
        addr: shown.clone(),
        source,
    };
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()
        .map_err(fail)?
        .next()
        .ok_or_else(|| {
            fail(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    Ok(socket.into())
}
