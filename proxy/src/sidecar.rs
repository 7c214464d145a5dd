//! Sidecar mode: connections that iptables redirected to the proxy.
//!
//! The outbound listener receives the application's connections to
//! anywhere. It recovers where each one was going (`SO_ORIGINAL_DST`), looks
//! at its first bytes, and either serves it as HTTP through the table (a
//! route is scoped to the destination, or names the first request's Host)
//! or passes it through, byte for byte, to where it was going. The inbound
//! listener serves the pod's incoming connections and sends every request
//! to the local application (see `CompiledTable::with_local_app`).

mod prefixed;
mod sniff;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(crate) use prefixed::Prefixed;
use sniff::{Sniffed, sniff};

use crate::state::State;

/// How a request reached the proxy, when a sidecar listener took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intercepted {
    /// Through the outbound listener, on a connection to this address.
    Outbound(SocketAddr),
    /// Through the inbound listener: it goes to the local application.
    Inbound,
}

/// The outbound listener's decisions.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) state: Arc<State>,
    /// How long to wait for a client's first bytes before passing the
    /// connection through (protocols where the server speaks first).
    pub(crate) detect_timeout: Duration,
    pub(crate) connect_timeout: Duration,
}

impl Outbound {
    /// Takes an intercepted connection: returns it (with the bytes read so
    /// far put back) and its destination when the table routes it, or
    /// passes it through to its destination itself and returns `None`.
    pub(crate) async fn take(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(Prefixed<TcpStream>, SocketAddr)> {
        let metrics = self.state.metrics();
        let local = stream.local_addr().ok().map(canonical);
        let destination = match original_destination(&stream) {
            // Not redirected: passing it "through" would connect back to
            // this listener, forever.
            Ok(destination) if Some(destination) == local => {
                tracing::debug!(%peer, "outbound connection was not redirected; refused");
                metrics.count_outbound("refused");
                return None;
            }
            Ok(destination) => destination,
            Err(error) => {
                tracing::debug!(%peer, %error, "outbound connection without an original destination; refused");
                metrics.count_outbound("refused");
                return None;
            }
        };
        let (sniffed, prefix) = sniff(&mut stream, self.detect_timeout).await;
        let host = match &sniffed {
            Sniffed::Http1 { host } => Some(host.as_deref()),
            Sniffed::Http2 => Some(None),
            Sniffed::Other => None,
        };
        let routed = host.is_some_and(|host| {
            self.state
                .snapshot()
                .is_some_and(|snapshot| snapshot.table.intercepts(destination, host))
        });
        if routed {
            metrics.count_outbound("routed");
            return Some((Prefixed::new(prefix, stream), destination));
        }
        let upstream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(destination))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()));
        match upstream {
            Ok(upstream) => {
                metrics.count_outbound("passthrough");
                if let Err(error) = pass_through(stream, &prefix, upstream).await {
                    tracing::debug!(%peer, %destination, %error, "pass-through connection ended with an error");
                }
            }
            Err(error) => {
                tracing::debug!(%peer, %destination, %error, "pass-through connect failed");
                metrics.count_outbound("passthrough_failed");
            }
        }
        None
    }
}

/// Copies bytes both ways until both sides are done: first what was read
/// while detecting the protocol, then everything else, untouched.
async fn pass_through(
    mut client: TcpStream,
    prefix: &[u8],
    mut upstream: TcpStream,
) -> io::Result<()> {
    if let Err(error) = upstream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    upstream.write_all(prefix).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// An IPv4 address as itself, not mapped into IPv6 (a dual-stack `[::]`
/// listener sees IPv4 clients as `::ffff:a.b.c.d`).
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// Where a connection redirected by iptables or ip6tables `REDIRECT` was
/// going.
#[cfg(target_os = "linux")]
fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    // An IPv4 connection on a dual-stack listener was redirected by
    // iptables, whose answer is the IPv4 one.
    let address = match canonical(stream.local_addr()?) {
        SocketAddr::V4(_) => socket.original_dst_v4()?,
        SocketAddr::V6(_) => socket.original_dst_v6()?,
    };
    address
        .as_socket()
        .ok_or_else(|| io::Error::other("the original destination is not an IP address"))
}

#[cfg(not(target_os = "linux"))]
fn original_destination(_stream: &TcpStream) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "original destinations need Linux (SO_ORIGINAL_DST)",
    ))
}
