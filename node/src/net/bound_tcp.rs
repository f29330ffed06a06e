//! TCP whose outgoing connections leave from the address the node listens on.
//!
//! Role: libp2p's TCP transport dials from the unspecified address, so the kernel picks the
//! source by route: on a machine with several addresses (or several nodes on loopback
//! addresses, as in the testnet) a peer would see connections from an address the node does
//! not listen on, and firewall rules written for the node's address would miss them. When
//! `p2p-listen` names one address, [`BoundTcp`] binds every outgoing socket to it (port chosen
//! by the kernel) before connecting; otherwise it dials as libp2p does. Listening is libp2p's.
//!
//! Owns the inner transport only. QUIC needs nothing of the kind: it dials from the socket it
//! listens on.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, Transport, tcp};

/// libp2p's tokio TCP transport, with dials bound to `source` when it is set.
pub(crate) struct BoundTcp {
    inner: tcp::tokio::Transport,
    source: Option<IpAddr>,
    nodelay: bool,
}

impl BoundTcp {
    /// `source`: the one address the node listens on (None when it listens on all).
    pub(crate) fn new(config: tcp::Config, source: Option<IpAddr>, nodelay: bool) -> Self {
        BoundTcp {
            inner: tcp::tokio::Transport::new(config),
            source: source.filter(|ip| !ip.is_unspecified()),
            nodelay,
        }
    }
}

/// `/ip4/A/tcp/P` or `/ip6/A/tcp/P` (and nothing more but an optional `/p2p/ID`) as a socket
/// address.
fn tcp_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip = match it.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    let Protocol::Tcp(port) = it.next()? else {
        return None;
    };
    match it.next() {
        None | Some(Protocol::P2p(_)) => Some(SocketAddr::new(ip, port)),
        Some(_) => None,
    }
}

async fn connect_from(
    source: IpAddr,
    to: SocketAddr,
    nodelay: bool,
) -> io::Result<tcp::tokio::TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(nodelay)?;
    Ok(tcp::tokio::TcpStream(stream))
}

impl Transport for BoundTcp {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = <tcp::tokio::Transport as Transport>::ListenerUpgrade;
    type Dial = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let target = tcp_socket_addr(&addr);
        match (self.source, target) {
            // Same family only: a v4 source cannot reach a v6 peer.
            (Some(source), Some(to)) if source.is_ipv4() == to.is_ipv4() => {
                let nodelay = self.nodelay;
                Ok(Box::pin(connect_from(source, to, nodelay)))
            }
            _ => {
                let dial = self.inner.dial(addr, opts)?;
                Ok(Box::pin(dial))
            }
        }
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tcp_addresses() {
        let p = |s: &str| s.parse::<Multiaddr>().unwrap();
        assert_eq!(
            tcp_socket_addr(&p("/ip4/127.0.0.5/tcp/7946")),
            Some("127.0.0.5:7946".parse().unwrap())
        );
        assert_eq!(
            tcp_socket_addr(&p(
                "/ip4/127.0.0.5/tcp/7946/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
            )),
            Some("127.0.0.5:7946".parse().unwrap())
        );
        assert_eq!(
            tcp_socket_addr(&p("/ip6/::1/tcp/1")),
            Some("[::1]:1".parse().unwrap())
        );
        assert_eq!(tcp_socket_addr(&p("/ip4/127.0.0.5/udp/1/quic-v1")), None);
        assert_eq!(tcp_socket_addr(&p("/dns4/example.org/tcp/1")), None);
    }

    #[tokio::test]
    async fn dials_leave_from_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.9:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let mut t = BoundTcp::new(tcp::Config::default(), "127.0.0.8".parse().ok(), true);
        let addr: Multiaddr = format!("/ip4/127.0.0.9/tcp/{}", to.port()).parse().unwrap();
        let opts = DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::Reuse,
        };
        let dial = t.dial(addr, opts).unwrap();
        let (accepted, _) = tokio::join!(listener.accept(), dial);
        let (_, from) = accepted.unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.8");
    }
}
