//! Client connection metrics, per listener: accepted and open by
//! protocol, rejected at the connection limit, parked while idle, handed
//! from the HTTP/1.1 fast path to hyper.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    listener: &'static str,
    /// `http1`, `http2`, or `none` before (or without) a first request.
    protocol: &'static str,
}

/// Values of the `protocol` label of downstream connections, indexed by
/// [`ConnectionProtocol`].
const PROTOCOLS: [&str; 3] = ["none", "http1", "http2"];

/// What a client connection turned out to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionProtocol {
    /// No request yet (or never).
    None = 0,
    /// HTTP/1.0 or HTTP/1.1.
    Http1 = 1,
    /// HTTP/2.
    Http2 = 2,
}

/// The client connection families, registered once.
#[derive(Debug)]
pub(super) struct ConnectionFamilies {
    accepted: Family<ConnectionLabels, Counter>,
    open: Family<ConnectionLabels, Gauge>,
    rejected: Family<ListenerLabels, Counter>,
    parked: Family<ListenerLabels, Gauge>,
    handed_over: Family<ListenerLabels, Counter>,
}

impl ConnectionFamilies {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let accepted = Family::default();
        registry.register(
            "switchyard_downstream_connections_accepted",
            "Client connections accepted, by listener and protocol (counted at the first request; `none` when a connection closed without one)",
            accepted.clone(),
        );
        let open = Family::default();
        registry.register(
            "switchyard_downstream_connections_open",
            "Client connections open, by listener and protocol (`none` until the first request)",
            open.clone(),
        );
        let rejected = Family::default();
        registry.register(
            "switchyard_downstream_connections_rejected",
            "Client connections closed at accept because the listener was at --max-connections",
            rejected.clone(),
        );
        let parked = Family::default();
        registry.register(
            "switchyard_downstream_connections_parked",
            "Idle HTTP/1.1 client connections parked: open, holding no buffers until the client sends again (also counted in switchyard_downstream_connections_open)",
            parked.clone(),
        );
        let handed_over = Family::default();
        registry.register(
            "switchyard_downstream_http1_handovers",
            "Times an HTTP/1.1 connection left the proxy's own loop for plain bodiless requests and went to hyper's server, at a request that loop does not take (a body, an upgrade, Connection: close, HTTP/1.0, a head in pieces, a malformed head)",
            handed_over.clone(),
        );
        Self {
            accepted,
            open,
            rejected,
            parked,
            handed_over,
        }
    }

    /// The handles of one listener.
    pub(super) fn downstream(&self, listener: &'static str) -> Downstream {
        let labels = |protocol| ConnectionLabels { listener, protocol };
        Downstream {
            accepted: PROTOCOLS.map(|p| self.accepted.get_or_create_owned(&labels(p))),
            open: PROTOCOLS.map(|p| self.open.get_or_create_owned(&labels(p))),
            rejected: self
                .rejected
                .get_or_create_owned(&ListenerLabels { listener }),
            parked: self
                .parked
                .get_or_create_owned(&ListenerLabels { listener }),
            handed_over: self
                .handed_over
                .get_or_create_owned(&ListenerLabels { listener }),
        }
    }
}

/// Connection metrics of one listener (`default()`: registered nowhere).
#[derive(Debug, Clone, Default)]
pub struct Downstream {
    /// Connections accepted, by [`ConnectionProtocol`].
    accepted: [Counter; 3],
    /// Connections open now, by [`ConnectionProtocol`].
    open: [Gauge; 3],
    /// Connections closed at once for `--max-connections`.
    pub rejected: Counter,
    /// Idle HTTP/1.1 connections parked (holding no buffers).
    pub parked: Gauge,
    /// HTTP/1.1 connections handed from the fast path to hyper.
    pub handed_over: Counter,
}

impl Downstream {
    /// A connection was accepted: open, no protocol yet.
    pub fn opened(&self) {
        self.open[ConnectionProtocol::None as usize].inc();
    }

    /// Its first request showed its protocol.
    pub fn identified(&self, protocol: ConnectionProtocol) {
        self.open[ConnectionProtocol::None as usize].dec();
        self.open[protocol as usize].inc();
        self.accepted[protocol as usize].inc();
    }

    /// It closed, speaking `protocol` (`None`: it never sent a request).
    pub fn closed(&self, protocol: ConnectionProtocol) {
        self.open[protocol as usize].dec();
        if protocol == ConnectionProtocol::None {
            self.accepted[ConnectionProtocol::None as usize].inc();
        }
    }
}
