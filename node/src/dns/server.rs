//! The DNS server of every node: UDP and TCP on one address (port 53 of the advertise address
//! by default), authoritative for the cluster domain and forwarding every other name upstream,
//! so that a LAN, the host and the containers can all use any node as their DNS server.
//! [`serve_pods`] adds port 53 of the pod network's gateway once the agent has made the
//! network: the node's own containers name that address as their resolver (they cannot reach
//! the node's LAN address wherever that is loopback, as in a testnet), and their queries come
//! from the pod subnet, so they get the zone's pods view.
//!
//! The answers for the cluster domain come from [`answer`], a pure function of the latest
//! [`Zone`] snapshot (read from a `watch` channel on every query, so that answering never waits
//! on the store), the client's address (pods and the LAN see different views) and the request.
//! Other names go to the [`Forwarder`]. Every packet, from either transport, enters through
//! [`Handler::handle_packet`], which never panics on any input: malformed queries get FORMERR
//! or are dropped, other opcodes NOTIMP, and UDP answers too large for the client are
//! truncated (TC) so that it retries over TCP.
//!
//! Why not `hickory-server`: its UDP loop spawns a task per packet without bound, logs every
//! answer at `info` level (a line per query for a whole LAN), and keeps its packet entry point
//! private, so that it could not be fuzzed directly; the loops here are short and bounded, and
//! hickory-proto does the wire format.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::{ForwardConfig, Forwarder};
use super::zone::{RecordData, Records, Zone};
use crate::runtime::PodNetwork;

/// The DNS server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP on this address (port 0: a free port, the same for both).
    pub listen: SocketAddr,
    /// Forwarding of names outside the cluster domain.
    pub forward: ForwardConfig,
    /// A TCP connection that sends no query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// The most TCP connections at once; more are closed at once.
    pub max_tcp_connections: usize,
    /// The most UDP queries being answered at once; more are dropped (clients retry).
    pub max_udp_in_flight: usize,
    /// The port [`serve_pods`] listens on at the pod network's gateway: 53, the only one a
    /// container's `resolv.conf` can name (tests choose another).
    pub pod_port: u16,
    /// The networks whose queries are answered (`dns-allow`; see [`super::guard`]).
    pub allow: Vec<crate::runtime::Subnet>,
}

impl DnsConfig {
    /// The defaults for this address and these upstreams.
    pub fn new(listen: SocketAddr, upstreams: Vec<SocketAddr>) -> DnsConfig {
        DnsConfig {
            listen,
            forward: ForwardConfig::new(upstreams),
            tcp_idle_timeout: Duration::from_secs(10),
            max_tcp_connections: 128,
            max_udp_in_flight: 1024,
            pod_port: 53,
            allow: super::guard::Guard::default_allow(),
        }
    }
}

/// Why the DNS server could not run.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "cannot listen for DNS on {addr} ({transport}): {source}; choose another address with \
         --dns-listen (dns-listen in the config file), or `off`"
    )]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The transport a packet came over: it bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The EDNS payload size this server advertises (the DNS flag day 2020 value).
const OUR_PAYLOAD: u16 = 1232;
/// The largest UDP answer sent, whatever a client advertises.
const MAX_UDP_ANSWER: usize = 4096;
/// SOA timers (seconds): nothing transfers this zone, but resolvers read them.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;

/// Answers packets: the zone snapshot and the forwarder. Cheap to clone (one per task); the
/// clones share one cache of encoded answers.
#[derive(Debug, Clone)]
pub struct Handler {
    zone: watch::Receiver<Arc<Zone>>,
    forwarder: Arc<Forwarder>,
    cache: Arc<std::sync::Mutex<AnswerCache>>,
    /// Who is answered and how much; None: everyone, without limit (tests of the rules).
    guard: Option<Arc<std::sync::Mutex<super::guard::Guard>>>,
}

/// What a packet needs, as far as can be known without waiting.
pub enum Step {
    /// The answer (`None`: send nothing).
    Done(Option<Vec<u8>>),
    /// A name outside the cluster domain: the upstreams must answer it.
    Forward(Box<Forwarding>),
}

/// A query on its way upstream.
pub struct Forwarding {
    request: Message,
    limit: usize,
}

/// The most answers [`AnswerCache`] keeps; it starts over when full.
const ANSWER_CACHE_ENTRIES: usize = 4096;
/// Queries longer than this are answered without the cache.
const ANSWER_CACHE_MAX_QUERY: usize = 512;

/// Encoded answers for the cluster domain, for the zone snapshot they were made from. An
/// answer is a pure function of the snapshot, the view (LAN or pods), the transport (which
/// bounds its size) and the query's bytes after its id (flags, question, EDNS), so a query
/// seen before is answered by copying its bytes and setting the id, without parsing or
/// encoding. A new snapshot empties it.
#[derive(Debug, Default)]
struct AnswerCache {
    zone: Option<Arc<Zone>>,
    answers: std::collections::HashMap<CacheKey, (ResponseCode, Arc<[u8]>)>,
}

type CacheKey = (bool, Transport, Box<[u8]>);

impl AnswerCache {
    /// The cache for `zone`, emptied if it was for another snapshot.
    fn for_zone(&mut self, zone: &Arc<Zone>) -> &mut Self {
        if !self.zone.as_ref().is_some_and(|z| Arc::ptr_eq(z, zone)) {
            self.zone = Some(zone.clone());
            self.answers.clear();
        }
        self
    }
}

impl Handler {
    pub fn new(zone: watch::Receiver<Arc<Zone>>, forwarder: Arc<Forwarder>) -> Handler {
        Handler {
            zone,
            forwarder,
            cache: Arc::default(),
            guard: None,
        }
    }

    /// Answers only the sources `guard` lets in, as often as it lets them.
    pub fn with_guard(mut self, guard: super::guard::Guard) -> Handler {
        self.guard = Some(Arc::new(std::sync::Mutex::new(guard)));
        self
    }

    /// The answer to one packet from `source`, encoded, or `None` to send nothing (packets
    /// shorter than a header, responses). Never panics, whatever the bytes.
    pub async fn handle_packet(
        &self,
        packet: &[u8],
        source: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        match self.step(packet, source, transport) {
            Step::Done(answer) => answer,
            Step::Forward(f) => self.forward(*f).await,
        }
    }

    /// Asks the upstreams a query [`Handler::step`] could not answer.
    pub async fn forward(&self, f: Forwarding) -> Option<Vec<u8>> {
        let mut response = self.forwarder.forward(&f.request).await;
        response.edns = response_edns(&f.request);
        crate::metrics::dns_answered(false, response.metadata.response_code);
        encode(&response, f.limit)
    }

    /// Everything about a packet that needs no waiting: the answer for the cluster domain (from
    /// the cache when the same query came before), errors, or what to forward.
    pub fn step(&self, packet: &[u8], source: SocketAddr, transport: Transport) -> Step {
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            return Step::Done(None);
        };
        if header.metadata.message_type == MessageType::Response {
            // Answering responses would let forged ones bounce between servers.
            return Step::Done(None);
        }
        let bare = |code| {
            crate::metrics::dns_error(crate::metrics::DnsError::Request);
            let mut m = Message::error_msg(header.metadata.id, header.metadata.op_code, code);
            m.metadata.recursion_desired = header.metadata.recursion_desired;
            Step::Done(encode(&m, 512))
        };
        if let Some(guard) = &self.guard {
            // A short critical section, never held across an await.
            let verdict = guard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(source.ip(), tokio::time::Instant::now());
            match verdict {
                super::guard::Verdict::Answer => {}
                super::guard::Verdict::Refuse => return bare(ResponseCode::Refused),
                super::guard::Verdict::Drop => {
                    crate::metrics::dns_error(crate::metrics::DnsError::Dropped);
                    return Step::Done(None);
                }
            }
        }
        if header.metadata.op_code != OpCode::Query {
            return bare(ResponseCode::NotImp);
        }
        // Checked before parsing: a header may claim 65,535 questions.
        if header.counts.queries != 1 {
            return bare(ResponseCode::FormErr);
        }
        let zone = self.zone.borrow().clone();
        let source_ip = source.ip().to_canonical();
        let pods_view = std::ptr::eq(zone.view(source_ip), &zone.pods);
        let key = (packet.len() <= ANSWER_CACHE_MAX_QUERY)
            .then(|| packet.get(2..))
            .flatten()
            .map(|rest| (pods_view, transport, Box::<[u8]>::from(rest)));
        if let Some(key) = &key
            && let Some(hit) = self.cached(&zone, key, header.metadata.id)
        {
            return Step::Done(Some(hit));
        }
        let Ok(request) = Message::from_vec(packet) else {
            return bare(ResponseCode::FormErr);
        };
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(request.max_payload()).min(MAX_UDP_ANSWER),
        };
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            let mut response = Message::error_msg(
                request.metadata.id,
                request.metadata.op_code,
                ResponseCode::BADVERS,
            );
            response.queries = request.queries.clone();
            response.edns = response_edns(&request);
            return Step::Done(encode(&response, limit));
        }
        let in_zone = request
            .queries
            .first()
            .is_some_and(|q| zone_apex(&zone).is_some_and(|apex| apex.zone_of(q.name())));
        if !in_zone {
            return Step::Forward(Box::new(Forwarding { request, limit }));
        }
        let mut response = answer(&zone, source_ip, &request);
        response.metadata.recursion_available = self.forwarder.has_upstreams();
        response.edns = response_edns(&request);
        let code = response.metadata.response_code;
        crate::metrics::dns_answered(true, code);
        let encoded = encode(&response, limit);
        if let (Some(key), Some(bytes)) = (key, &encoded) {
            self.remember(&zone, key, code, bytes);
        }
        Step::Done(encoded)
    }

    /// A cached answer to the query `key` for `zone`, with the query's `id`.
    fn cached(&self, zone: &Arc<Zone>, key: &CacheKey, id: u16) -> Option<Vec<u8>> {
        // A short critical section (a lookup and a copy), never held across an await.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (code, bytes) = cache.for_zone(zone).answers.get(key)?;
        crate::metrics::dns_answered(true, *code);
        let mut out = bytes.to_vec();
        if let Some(head) = out.get_mut(..2) {
            head.copy_from_slice(&id.to_be_bytes());
        }
        Some(out)
    }

    fn remember(&self, zone: &Arc<Zone>, key: CacheKey, code: ResponseCode, bytes: &[u8]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let cache = cache.for_zone(zone);
        if cache.answers.len() >= ANSWER_CACHE_ENTRIES {
            cache.answers.clear();
        }
        cache.answers.insert(key, (code, Arc::from(bytes)));
    }
}

/// The EDNS of a response: present when the request had it (RFC 6891), version 0.
fn response_edns(request: &Message) -> Option<Edns> {
    request.edns.as_ref().map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_PAYLOAD);
        edns.set_version(0);
        edns
    })
}

/// `message` encoded in at most `limit` bytes: whole if it fits, else without its additional
/// records, else only its question with TC set so that the client retries over TCP. A message
/// that cannot be encoded becomes a SERVFAIL.
fn encode(message: &Message, limit: usize) -> Option<Vec<u8>> {
    let fits = |m: &Message| m.to_vec().ok().filter(|b| b.len() <= limit);
    if let Some(bytes) = fits(message) {
        return Some(bytes);
    }
    let mut smaller = message.clone();
    smaller.additionals.clear();
    if !message.additionals.is_empty()
        && let Some(bytes) = fits(&smaller)
    {
        return Some(bytes);
    }
    smaller.answers.clear();
    smaller.authorities.clear();
    smaller.metadata.truncation = true;
    if let Some(bytes) = fits(&smaller) {
        return Some(bytes);
    }
    let mut failure = Message::error_msg(
        message.metadata.id,
        message.metadata.op_code,
        ResponseCode::ServFail,
    );
    failure.metadata.recursion_desired = message.metadata.recursion_desired;
    failure.to_vec().ok()
}

/// The zone's apex as a name, or `None` when the zone has no domain (it then holds nothing).
fn zone_apex(zone: &Zone) -> Option<Name> {
    if zone.domain.is_empty() {
        return None;
    }
    fqdn(&zone.domain)
}

/// A zone-style name (`a.b`, no trailing dot) as a fully qualified [`Name`].
fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

/// A query name as the zone spells its keys: lower case, dots between labels, no trailing
/// dot. `None` for a label with a byte no key can hold (a dot, a space, a non-ASCII byte).
fn zone_key(name: &Name) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    for label in name.iter() {
        if !label.iter().all(|b| b.is_ascii_graphic() && *b != b'.') {
            return None;
        }
        if !key.is_empty() {
            key.push('.');
        }
        key.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    Some(key)
}

/// The authoritative answer to `request` for the cluster zone, as a client at `source` sees it
/// (pods get the pod view): NOERROR with the records of the type asked, NODATA (NOERROR, no
/// answers, SOA in AUTHORITY) for a name that exists without them, NXDOMAIN (SOA in AUTHORITY)
/// for a name that does not. REFUSED for a name outside the zone, a class other than IN, or a
/// zone transfer; FORMERR for anything but one question. The caller adds EDNS and truncates.
pub fn answer(zone: &Zone, source: IpAddr, request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.queries = request.queries.clone();
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    let Some(apex) = zone_apex(zone).filter(|apex| apex.zone_of(query.name())) else {
        response.metadata.response_code = ResponseCode::Refused;
        return response;
    };
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY)
        || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
    {
        response.metadata.response_code = ResponseCode::Refused;
        return response;
    }
    response.metadata.authoritative = true;
    let view = zone.view(source);
    let lookup = Lookup {
        zone,
        view,
        owner: query.name(),
    };
    let key = zone_key(query.name());
    let answers = key
        .as_deref()
        .map(|k| lookup.records(k, query.query_type()))
        .unwrap_or_default();
    if !answers.is_empty() {
        response.additionals = lookup.additionals(&answers);
        response.answers = answers;
        return response;
    }
    if !key.as_deref().is_some_and(|k| exists(zone, view, k)) {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    response.authorities.extend(soa(zone, &apex));
    response
}

/// Whether `name` exists in the view: the apex, the name server's name, a name with records
/// (even none), or an ancestor of one (an empty non-terminal).
fn exists(zone: &Zone, view: &Records, name: &str) -> bool {
    let under = |k: &str| {
        k.len() > name.len()
            && k.ends_with(name)
            && k.as_bytes().get(k.len() - name.len() - 1) == Some(&b'.')
    };
    name == zone.domain
        || name == zone.ns_name
        || under(&zone.ns_name)
        || view.contains_key(name)
        || view.keys().any(|k| under(k))
}

/// The records of one name of a zone view, as resource records owned by the name as asked.
#[derive(Clone, Copy)]
struct Lookup<'a> {
    zone: &'a Zone,
    view: &'a Records,
    owner: &'a Name,
}

impl Lookup<'_> {
    /// The records of `key` of type `qtype` (ANY: all).
    fn records(&self, key: &str, qtype: RecordType) -> Vec<Record> {
        let zone = self.zone;
        let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        let mut out = Vec::new();
        if key == zone.domain {
            if wants(RecordType::SOA)
                && let Some(apex) = zone_apex(zone)
            {
                out.extend(soa(zone, &apex));
            }
            if wants(RecordType::NS)
                && let Some(ns) = fqdn(&zone.ns_name)
            {
                out.push(Record::from_rdata(
                    self.owner.clone(),
                    zone.ttl,
                    RData::NS(NS(ns)),
                ));
            }
        }
        let mut data: Vec<&RecordData> = self.view.get(key).into_iter().flatten().collect();
        let ns_addresses: Vec<RecordData> = if key == zone.ns_name {
            zone.ns_addresses
                .iter()
                .map(|ip| RecordData::Address(*ip))
                .collect()
        } else {
            Vec::new()
        };
        for d in &ns_addresses {
            if !data.contains(&d) {
                data.push(d);
            }
        }
        for d in data {
            let rdata = match d {
                RecordData::Address(IpAddr::V4(ip)) if wants(RecordType::A) => RData::A(A(*ip)),
                RecordData::Address(IpAddr::V6(ip)) if wants(RecordType::AAAA) => {
                    RData::AAAA(AAAA(*ip))
                }
                RecordData::Srv {
                    priority,
                    weight,
                    port,
                    target,
                } if wants(RecordType::SRV) => {
                    let Some(target) = fqdn(target) else { continue };
                    RData::SRV(SRV::new(*priority, *weight, *port, target))
                }
                _ => continue,
            };
            out.push(Record::from_rdata(self.owner.clone(), zone.ttl, rdata));
        }
        out
    }

    /// The A and AAAA records of the SRV targets and NS names in `answers`, when the view (or
    /// the name server's addresses) has them.
    fn additionals(&self, answers: &[Record]) -> Vec<Record> {
        let mut targets: Vec<&Name> = Vec::new();
        for r in answers {
            let target = match &r.data {
                RData::SRV(srv) => &srv.target,
                RData::NS(ns) => &ns.0,
                _ => continue,
            };
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        let mut out = Vec::new();
        for target in targets {
            let Some(key) = zone_key(target) else {
                continue;
            };
            let lookup = Lookup {
                owner: target,
                ..*self
            };
            out.extend(lookup.records(&key, RecordType::A));
            out.extend(lookup.records(&key, RecordType::AAAA));
        }
        out
    }
}

/// The zone's SOA record (owned by the apex; its minimum, the negative-answer TTL, is the
/// zone's TTL).
fn soa(zone: &Zone, apex: &Name) -> Option<Record> {
    let mname = fqdn(&zone.ns_name)?;
    let rname = fqdn(&format!("hostmaster.{}", zone.domain))?;
    Some(Record::from_rdata(
        apex.clone(),
        zone.ttl,
        RData::SOA(SOA::new(
            mname,
            rname,
            zone.serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            zone.ttl,
        )),
    ))
}

/// A bound DNS server: its sockets, ready to [`run`](DnsServer::run).
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    config: DnsConfig,
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` (with port 0, one free port for both).
    pub async fn bind(config: DnsConfig) -> Result<DnsServer, DnsError> {
        let attempts = if config.listen.port() == 0 { 10 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let udp = UdpSocket::bind(config.listen)
                .await
                .map_err(|source| DnsError::Bind {
                    addr: config.listen,
                    transport: "UDP",
                    source,
                })?;
            let addr = udp.local_addr().map_err(|source| DnsError::Bind {
                addr: config.listen,
                transport: "UDP",
                source,
            })?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(DnsServer { udp, tcp, config }),
                Err(source) => {
                    last = Some(DnsError::Bind {
                        addr,
                        transport: "TCP",
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| DnsError::Bind {
            addr: config.listen,
            transport: "TCP",
            source: std::io::Error::other("no attempt made"),
        }))
    }

    /// The address the server listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap_or(self.config.listen)
    }

    /// Answers queries until `shutdown`, then waits (briefly) for the queries in progress.
    pub async fn run(self, zone: watch::Receiver<Arc<Zone>>, shutdown: CancellationToken) {
        let forwarder = Arc::new(Forwarder::new(self.config.forward.clone()));
        self.run_with(zone, forwarder, shutdown).await;
    }

    /// [`DnsServer::run`] forwarding through `forwarder` (and its cache), which another
    /// listener of this node may share.
    pub async fn run_with(
        self,
        zone: watch::Receiver<Arc<Zone>>,
        forwarder: Arc<Forwarder>,
        shutdown: CancellationToken,
    ) {
        let addr = self.local_addr();
        tracing::info!(%addr, domain = %zone.borrow().domain,
            upstreams = ?self.config.forward.upstreams, "DNS server listening (UDP and TCP)");
        let handler = Handler::new(zone, forwarder)
            .with_guard(super::guard::Guard::new(self.config.allow.clone()));
        let tasks = TaskTracker::new();
        let udp = udp_loop(
            Arc::new(self.udp),
            handler.clone(),
            Arc::new(Semaphore::new(self.config.max_udp_in_flight.max(1))),
            &tasks,
            &shutdown,
        );
        let tcp = tcp_loop(
            self.tcp,
            handler,
            Arc::new(Semaphore::new(self.config.max_tcp_connections.max(1))),
            self.config.tcp_idle_timeout,
            &tasks,
            &shutdown,
        );
        tokio::join!(udp, tcp);
        tasks.close();
        // Forwards end by their own deadline (1.5 s); TCP connections on shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(3), tasks.wait()).await;
        tracing::info!(%addr, "DNS server stopped");
    }
}

/// Binds and runs the DNS server until `shutdown`. Fails only when it cannot bind: the caller
/// logs that and the node goes on without DNS.
pub async fn serve(
    config: DnsConfig,
    zone: watch::Receiver<Arc<Zone>>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let server = DnsServer::bind(config).await?;
    server.run(zone, shutdown).await;
    Ok(())
}

/// How soon a gateway address that could not be bound is tried again.
const POD_BIND_RETRY: Duration = Duration::from_secs(2);
/// How often a bind failure that persists is logged again as an error.
const POD_BIND_ERROR_EVERY: Duration = Duration::from_secs(60);

/// Serves this node's pods until `shutdown`: UDP and TCP on `config.pod_port` (53) of the
/// gateway that `network` publishes (the agent learns it when it makes the pod network, which
/// may be long after the node started), moving when it changes. An address that cannot be
/// bound is logged as an error and tried again every 2 s; it never stops the
/// node. `config.listen` is not used; `forwarder` is shared with the node's main listener.
pub async fn serve_pods(
    config: DnsConfig,
    zone: watch::Receiver<Arc<Zone>>,
    mut network: watch::Receiver<Option<PodNetwork>>,
    forwarder: Arc<Forwarder>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let mut current: Option<(IpAddr, CancellationToken, tokio::task::JoinHandle<()>)> = None;
    let mut logged: Option<(SocketAddr, Instant)> = None;
    let mut open = true;
    loop {
        let gateway = network.borrow_and_update().map(|n| n.gateway);
        if let Some((ip, stop, task)) = &current
            && (Some(*ip) != gateway || task.is_finished())
        {
            tracing::info!(address = %ip, "the pods' DNS listener closes");
            stop.cancel();
            current = None;
        }
        if current.is_none()
            && let Some(ip) = gateway
        {
            let listen = SocketAddr::new(ip, config.pod_port);
            let bound = DnsServer::bind(DnsConfig {
                listen,
                ..config.clone()
            })
            .await;
            match bound {
                Ok(server) => {
                    logged = None;
                    let stop = shutdown.child_token();
                    let task =
                        tasks.spawn(server.run_with(zone.clone(), forwarder.clone(), stop.clone()));
                    current = Some((ip, stop, task));
                }
                Err(e) => {
                    let now = Instant::now();
                    let due = logged.is_none_or(|(addr, at)| {
                        addr != listen || now.duration_since(at) >= POD_BIND_ERROR_EVERY
                    });
                    let source = match &e {
                        DnsError::Bind {
                            transport, source, ..
                        } => format!("{transport}: {source}"),
                    };
                    if due {
                        tracing::error!(address = %listen, error = %source,
                            "cannot listen for the pods' DNS queries on the pod network's \
                             gateway; retrying");
                        logged = Some((listen, now));
                    } else {
                        tracing::debug!(address = %listen, error = %source,
                            "still cannot listen for the pods' DNS queries");
                    }
                }
            }
        }
        let retry = current.is_none() && gateway.is_some();
        let wait = if retry {
            POD_BIND_RETRY
        } else {
            Duration::from_secs(5)
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = network.changed(), if open => open = r.is_ok(),
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if let Some((_, stop, _)) = &current {
        stop.cancel();
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    handler: Handler,
    slots: Arc<Semaphore>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, source) = match received {
            Ok(r) => r,
            Err(error) => {
                // Such as an ICMP error for an earlier answer: the socket is still good.
                tracing::debug!(%error, "DNS UDP receive error");
                continue;
            }
        };
        if source.port() == 0 || source.ip().is_unspecified() {
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%source, "too many DNS queries in progress: dropped one");
            crate::metrics::dns_error(crate::metrics::DnsError::Dropped);
            continue;
        };
        // Answers for the cluster domain are made here, without a task: they need no waiting.
        let forwarding = match handler.step(&buf[..n], source, Transport::Udp) {
            Step::Done(answer) => {
                if let Some(answer) = answer
                    && let Err(error) = socket.send_to(&answer, source).await
                {
                    tracing::debug!(%source, %error, "cannot send a DNS answer");
                }
                drop(slot);
                continue;
            }
            Step::Forward(f) => f,
        };
        let handler = handler.clone();
        let socket = socket.clone();
        tasks.spawn(async move {
            if let Some(answer) = handler.forward(*forwarding).await
                && let Err(error) = socket.send_to(&answer, source).await
            {
                tracing::debug!(%source, %error, "cannot send a DNS answer");
            }
            drop(slot);
        });
    }
}

async fn tcp_loop(
    listener: TcpListener,
    handler: Handler,
    slots: Arc<Semaphore>,
    idle: Duration,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, source) = match accepted {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%error, "DNS TCP accept error");
                // Such as too many open files: let some close.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%source, "too many DNS TCP connections: closed one");
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = tcp_connection(stream, source, &handler, idle, &shutdown).await {
                tracing::debug!(%source, %error, "DNS TCP connection ended");
            }
            drop(slot);
        });
    }
}

/// Serves one TCP connection: length-prefixed queries, answered in order, until the client
/// closes, stays idle too long, or the server stops.
async fn tcp_connection(
    mut stream: TcpStream,
    source: SocketAddr,
    handler: &Handler,
    idle: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    loop {
        let len = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Ok(Ok(len)) => len,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            },
        };
        let mut packet = vec![0u8; usize::from(len)];
        match tokio::time::timeout(idle, stream.read_exact(&mut packet)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        let Some(answer) = handler.handle_packet(&packet, source, Transport::Tcp).await else {
            continue;
        };
        let Ok(alen) = u16::try_from(answer.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&alen.to_be_bytes());
        framed.extend_from_slice(&answer);
        stream.write_all(&framed).await?;
    }
}

#[cfg(test)]
#[path = "tests_server.rs"]
mod tests;
