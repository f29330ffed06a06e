//! Forwarding of the names outside the cluster domain to the upstream resolvers (the host's
//! `resolv.conf` by default), so that a LAN, or a container, can use any node as its only DNS
//! server.
//!
//! The [`Forwarder`] asks the upstreams in turn over UDP (over TCP when an answer comes back
//! truncated), each query from a fresh socket with a random id, and relays the answer under
//! the client's id and question. Answers are cached (bounded, TTLs respected, negative answers
//! for their SOA minimum up to a cap), concurrent forwards are bounded, and a forward gives up
//! after an overall deadline (1.5 s by default) with SERVFAIL: a silent upstream never makes a
//! client hang. Without upstreams it answers REFUSED at once.
//!
//! Loops: a node whose upstream is another shoal node (or leads back to one) would pass a
//! query around until every forward slot is taken. Each forwarded query carries an EDNS
//! option ([`VIA_OPTION`]) listing the forwarders it went through; a node that finds itself
//! there, or a chain of [`MAX_VIA`], answers REFUSED at once ([`loops`]).
//!
//! It owns its cache; the server (`server.rs`) calls [`Forwarder::forward`] from its tasks.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How the forwarder behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The resolvers, asked in this order.
    pub upstreams: Vec<SocketAddr>,
    /// The deadline of one forward across all upstreams: then the client gets SERVFAIL.
    pub timeout: Duration,
    /// The most answers the cache holds.
    pub cache_entries: usize,
    /// The most forwards in flight at once; more wait for a slot within their deadline.
    pub max_in_flight: usize,
    /// The longest a positive answer is cached, in seconds.
    pub max_ttl: u32,
    /// The longest a negative answer (NXDOMAIN, NODATA) is cached, in seconds.
    pub max_negative_ttl: u32,
    /// This forwarder's tag in [`VIA_OPTION`]: random per process.
    pub tag: u32,
}

impl ForwardConfig {
    /// The defaults for these upstreams: 1.5 s deadline, 10,000 cached answers, 256 forwards
    /// in flight, positive answers cached up to a day, negative ones up to 5 minutes.
    pub fn new(upstreams: Vec<SocketAddr>) -> ForwardConfig {
        ForwardConfig {
            upstreams,
            timeout: Duration::from_millis(1500),
            cache_entries: 10_000,
            max_in_flight: 256,
            max_ttl: 86_400,
            max_negative_ttl: 300,
            tag: random_tag(),
        }
    }
}

/// The EDNS option (a code of the local range, RFC 6891 §9) a shoal node puts on the queries
/// it forwards: the 4-byte tags of the forwarders the query went through, oldest first.
pub const VIA_OPTION: u16 = 65_353;
/// The longest chain of forwarders a query may have gone through.
pub const MAX_VIA: usize = 8;

/// The forwarders `request` went through, from its [`VIA_OPTION`] (none without one; a
/// trailing partial tag is ignored). Pure.
pub fn via_of(request: &Message) -> Vec<u32> {
    let Some(EdnsOption::Unknown(_, data)) = request
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::from(VIA_OPTION)))
    else {
        return Vec::new();
    };
    data.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Whether forwarding a query that went through `via` would loop: `me` is in it, or the
/// chain is [`MAX_VIA`] long. Pure.
pub fn loops(via: &[u32], me: u32) -> bool {
    via.contains(&me) || via.len() >= MAX_VIA
}

/// The [`VIA_OPTION`] of a query forwarded by `me` after `via`.
fn via_option(via: &[u32], me: u32) -> EdnsOption {
    let data = via
        .iter()
        .chain(std::iter::once(&me))
        .flat_map(|t| t.to_be_bytes())
        .collect();
    EdnsOption::Unknown(VIA_OPTION, data)
}

fn random_tag() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        // Only loops through this very node would go unnoticed by a zero tag, and the chain's
        // length still ends them.
        return 0;
    }
    u32::from_be_bytes(b)
}

/// Why one upstream gave no usable answer (logged at debug level, never shown to clients).
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode the query: {0}")]
    Encode(#[from] hickory_proto::ProtoError),
    #[error("no random id: {0}")]
    Random(getrandom::Error),
    #[error("the answer does not parse: {0}")]
    Decode(#[from] hickory_proto::serialize::binary::DecodeError),
    #[error("the answer does not match the query")]
    Mismatch,
    #[error("timed out")]
    Timeout,
}

/// The forwarder: upstreams, cache and the bound on forwards in flight. Shared by the
/// server's tasks behind an `Arc`.
#[derive(Debug)]
pub struct Forwarder {
    config: ForwardConfig,
    /// A std mutex: lookups and inserts are short and never await.
    cache: Mutex<Cache>,
    slots: Semaphore,
}

impl Forwarder {
    pub fn new(config: ForwardConfig) -> Forwarder {
        Forwarder {
            cache: Mutex::new(Cache::new(config.cache_entries)),
            slots: Semaphore::new(config.max_in_flight.max(1)),
            config,
        }
    }

    /// Whether any upstream is configured (the server's RA flag).
    pub fn has_upstreams(&self) -> bool {
        !self.config.upstreams.is_empty()
    }

    /// The answer to `request` (one question, a name outside the cluster domain) from the
    /// cache or the upstreams, with the request's id, flags and question; SERVFAIL when no
    /// upstream answered in time, REFUSED when there are none. The caller adds EDNS and
    /// truncates.
    pub async fn forward(&self, request: &Message) -> Message {
        let Some(query) = single_query(request) else {
            return reply(request, ResponseCode::FormErr);
        };
        if self.config.upstreams.is_empty() {
            return reply(request, ResponseCode::Refused);
        }
        let via = via_of(request);
        if loops(&via, self.config.tag) {
            crate::metrics::dns_error(crate::metrics::DnsError::Loop);
            tracing::debug!(name = %query.name(), hops = via.len(),
                "refused a forwarding loop: the query came back to this node, or went through \
                 too many forwarders (is another shoal node one of this node's upstreams?)");
            return reply(request, ResponseCode::Refused);
        }
        let key = CacheKey::of(query, request);
        let cached = self.lock_cache().get(&key, Instant::now());
        if let Some(cached) = cached {
            return relay(request, &cached);
        }
        let deadline = Instant::now() + self.config.timeout;
        let Ok(Ok(_slot)) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            tracing::debug!(name = %query.name(), "too many DNS forwards in flight");
            return reply(request, ResponseCode::ServFail);
        };
        match self.ask_upstreams(query, request, &via, deadline).await {
            Some(answer) => {
                if let Some(ttl) = cache_ttl(&answer, &self.config) {
                    self.lock_cache()
                        .insert(key, answer.clone(), ttl, Instant::now());
                }
                relay(request, &answer)
            }
            None => reply(request, ResponseCode::ServFail),
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the cache inconsistent (each operation
        // is a single map call), so a poisoned lock is still usable.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the upstreams in turn, sharing the time left among those not yet asked. A
    /// NOERROR or NXDOMAIN answer ends the search; another (SERVFAIL, REFUSED) is kept in case
    /// no upstream does better.
    async fn ask_upstreams(
        &self,
        query: &Query,
        request: &Message,
        via: &[u32],
        deadline: Instant,
    ) -> Option<Message> {
        let upstreams = &self.config.upstreams;
        let via = via_option(via, self.config.tag);
        let mut fallback = None;
        for (i, upstream) in upstreams.iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let left = u32::try_from(upstreams.len() - i).unwrap_or(u32::MAX);
            let share = (deadline - now) / left;
            let asked = ask(*upstream, query, request, &via);
            let result = match tokio::time::timeout(share, asked).await {
                Ok(r) => r,
                Err(_) => Err(UpstreamError::Timeout),
            };
            match result {
                Ok(answer)
                    if matches!(
                        answer.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    return Some(answer);
                }
                Ok(answer) => {
                    tracing::debug!(%upstream, name = %query.name(),
                        rcode = %answer.metadata.response_code, "upstream DNS error answer");
                    fallback.get_or_insert(answer);
                }
                Err(error) => {
                    crate::metrics::dns_error(crate::metrics::DnsError::Upstream);
                    tracing::debug!(%upstream, name = %query.name(), %error,
                        "upstream DNS gave no answer");
                }
            }
        }
        fallback
    }
}

/// The request's only question, if it has exactly one.
fn single_query(request: &Message) -> Option<&Query> {
    match request.queries.as_slice() {
        [q] => Some(q),
        _ => None,
    }
}

/// An answerless response to `request` with `code`.
fn reply(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.metadata.recursion_available = true;
    response.metadata.response_code = code;
    response.queries = request.queries.clone();
    response
}

/// The upstream's `answer` as the response to `request`: the client's id, flags and question
/// (in its own letter case), the upstream's code and records.
fn relay(request: &Message, answer: &Message) -> Message {
    let code = answer.metadata.response_code;
    // An extended code needs EDNS to travel; the client may not have it.
    let code = if code.high() > 0 {
        ResponseCode::ServFail
    } else {
        code
    };
    let mut response = reply(request, code);
    response.metadata.authentic_data = answer.metadata.authentic_data;
    response.metadata.truncation = answer.metadata.truncation;
    response.answers = answer.answers.clone();
    response.authorities = answer.authorities.clone();
    response.additionals = answer.additionals.clone();
    response
}

/// Asks one upstream over UDP, then over TCP if the answer was truncated (keeping the
/// truncated one if TCP fails: the client can retry over TCP with us).
async fn ask(
    upstream: SocketAddr,
    query: &Query,
    request: &Message,
    via: &EdnsOption,
) -> Result<Message, UpstreamError> {
    let id = random_id()?;
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.metadata.checking_disabled = request.metadata.checking_disabled;
    message.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    edns.set_dnssec_ok(dnssec_ok(request));
    edns.options_mut().insert(via.clone());
    message.set_edns(edns);
    let bytes = message.to_vec()?;

    let answer = ask_udp(upstream, &bytes, id, query).await?;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    match ask_tcp(upstream, &bytes, id, query).await {
        Ok(full) => Ok(full),
        Err(error) => {
            tracing::debug!(%upstream, %error, "upstream DNS over TCP failed; relaying the truncated answer");
            Ok(answer)
        }
    }
}

/// The EDNS payload size the forwarder offers upstreams (the DNS flag day 2020 value).
const UPSTREAM_PAYLOAD: u16 = 1232;

async fn ask_udp(
    upstream: SocketAddr,
    bytes: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, UpstreamError> {
    let local: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).await?;
    // A connected socket only receives from the upstream.
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Anything else on this port (a late or forged packet) is ignored; the caller's
        // timeout ends the wait.
        if let Ok(answer) = Message::from_vec(&buf[..n])
            && answers(&answer, id, query)
        {
            return Ok(answer);
        }
    }
}

async fn ask_tcp(
    upstream: SocketAddr,
    bytes: &[u8],
    id: u16,
    query: &Query,
) -> Result<Message, UpstreamError> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| UpstreamError::Mismatch)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    let answer = Message::from_vec(&buf)?;
    if answers(&answer, id, query) {
        Ok(answer)
    } else {
        Err(UpstreamError::Mismatch)
    }
}

/// Whether `answer` is the upstream's response to our query `id` for `query`.
fn answers(answer: &Message, id: u16, query: &Query) -> bool {
    answer.metadata.id == id
        && answer.metadata.message_type == MessageType::Response
        && matches!(answer.queries.as_slice(), [q] if q.name() == query.name()
            && q.query_type() == query.query_type()
            && q.query_class() == query.query_class())
}

fn random_id() -> Result<u16, UpstreamError> {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).map_err(UpstreamError::Random)?;
    Ok(u16::from_be_bytes(b))
}

fn dnssec_ok(request: &Message) -> bool {
    request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok)
}

/// How long `answer` may be cached, in seconds, or `None` for not at all: a positive answer
/// for its smallest TTL, a negative one (NXDOMAIN, or NOERROR without answers) for its SOA's
/// minimum (bounded by the SOA's own TTL); error codes, truncated answers and negative answers
/// without a SOA are not cached.
fn cache_ttl(answer: &Message, config: &ForwardConfig) -> Option<u32> {
    if answer.metadata.truncation {
        return None;
    }
    let code = answer.metadata.response_code;
    let ttl = if code == ResponseCode::NoError && !answer.answers.is_empty() {
        answer
            .answers
            .iter()
            .map(|r| r.ttl)
            .min()?
            .min(config.max_ttl)
    } else if matches!(code, ResponseCode::NoError | ResponseCode::NXDomain) {
        let soa = answer.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.minimum.min(r.ttl)),
            _ => None,
        })?;
        soa.min(config.max_negative_ttl)
    } else {
        return None;
    };
    (ttl > 0).then_some(ttl)
}

/// What an answer depends on: the name (lower case), type and class asked, and the DNSSEC
/// flags (DO, CD) that change what upstreams send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    name: String,
    qtype: u16,
    qclass: u16,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl CacheKey {
    fn of(query: &Query, request: &Message) -> CacheKey {
        CacheKey {
            name: query.name().to_lowercase().to_ascii(),
            qtype: u16::from(query.query_type()),
            qclass: u16::from(query.query_class()),
            dnssec_ok: dnssec_ok(request),
            checking_disabled: request.metadata.checking_disabled,
        }
    }
}

#[derive(Debug)]
struct CacheEntry {
    answer: Message,
    stored: Instant,
    ttl: u32,
}

/// A bounded answer cache. When full, it first drops the expired entries, then arbitrary
/// ones (the hash map's order): random eviction, O(1), good enough for a LAN's names.
#[derive(Debug)]
struct Cache {
    entries: HashMap<CacheKey, CacheEntry>,
    capacity: usize,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The cached answer with its TTLs lowered by its age, if it has not expired.
    fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Message> {
        let entry = self.entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored).as_secs();
        let age = u32::try_from(age).unwrap_or(u32::MAX);
        if age >= entry.ttl {
            self.entries.remove(key);
            return None;
        }
        let mut answer = entry.answer.clone();
        let age_records = |records: &mut Vec<Record>| {
            for r in records.iter_mut() {
                r.ttl = r.ttl.saturating_sub(age);
            }
        };
        age_records(&mut answer.answers);
        age_records(&mut answer.authorities);
        age_records(&mut answer.additionals);
        Some(answer)
    }

    fn insert(&mut self, key: CacheKey, answer: Message, ttl: u32, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| {
                u64::from(e.ttl) > now.saturating_duration_since(e.stored).as_secs()
            });
            while self.entries.len() >= self.capacity {
                let Some(victim) = self.entries.keys().next().cloned() else {
                    break;
                };
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(
            key,
            CacheEntry {
                answer,
                stored: now,
                ttl,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RecordType};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m
    }

    fn soa_record(zone: &str, ttl: u32, minimum: u32) -> Record {
        let apex = Name::from_ascii(zone).unwrap();
        Record::from_rdata(
            apex.clone(),
            ttl,
            RData::SOA(SOA::new(apex.clone(), apex, 1, 3600, 600, 86400, minimum)),
        )
    }

    /// A fake upstream on 127.0.0.1: answers every A query with 192.0.2.1 (TTL 60), names
    /// starting with `nx` with NXDOMAIN, and counts the queries it gets.
    async fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                seen.fetch_add(1, Ordering::SeqCst);
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.queries = q.queries.clone();
                let name = q.queries[0].name().clone();
                if name.to_ascii().starts_with("nx") {
                    r.metadata.response_code = ResponseCode::NXDomain;
                    r.authorities.push(soa_record("example.", 3600, 30));
                } else {
                    r.answers
                        .push(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1))));
                }
                socket.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn forwards_and_caches() {
        let (upstream, count) = fake_upstream().await;
        let f = Forwarder::new(ForwardConfig::new(vec![upstream]));
        let request = query("www.example.", RecordType::A);
        let r = f.forward(&request).await;
        assert_eq!(r.metadata.id, 0x4242);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.recursion_available);
        assert_eq!(r.queries, request.queries);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A::new(192, 0, 2, 1)));
        assert_eq!(count.load(Ordering::SeqCst), 1);

        // The same name in another case, under another id: from the cache.
        let mut again = query("WWW.Example.", RecordType::A);
        again.metadata.id = 7;
        let r = f.forward(&again).await;
        assert_eq!(r.metadata.id, 7);
        assert_eq!(r.queries, again.queries);
        assert_eq!(r.answers.len(), 1);
        assert!(r.answers[0].ttl <= 60);
        assert_eq!(count.load(Ordering::SeqCst), 1, "the cache answered");

        // Another type is another entry.
        f.forward(&query("www.example.", RecordType::AAAA)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);

        // Negative answers are cached too.
        let r = f.forward(&query("nx.example.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1);
        let r = f.forward(&query("nx.example.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn silent_upstream_is_servfail_within_two_seconds() {
        // A socket that never answers, and an address where nothing listens.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let f = Forwarder::new(ForwardConfig::new(vec![
            silent.local_addr().unwrap(),
            closed_addr,
        ]));
        let started = std::time::Instant::now();
        let r = f.forward(&query("www.example.", RecordType::A)).await;
        let took = started.elapsed();
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(r.metadata.id, 0x4242);
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[tokio::test]
    async fn a_dead_first_upstream_falls_through_to_the_next() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (upstream, count) = fake_upstream().await;
        let f = Forwarder::new(ForwardConfig::new(vec![
            silent.local_addr().unwrap(),
            upstream,
        ]));
        let r = f.forward(&query("www.example.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_upstreams_is_refused_at_once() {
        let f = Forwarder::new(ForwardConfig::new(vec![]));
        assert!(!f.has_upstreams());
        let r = f.forward(&query("www.example.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn cache_ttls() {
        let config = ForwardConfig::new(vec![]);
        let mut m = query("a.example.", RecordType::A);
        m.metadata.message_type = MessageType::Response;
        let a = |ttl| {
            Record::from_rdata(
                m.queries[0].name().clone(),
                ttl,
                RData::A(A::new(192, 0, 2, 1)),
            )
        };
        let mut pos = m.clone();
        pos.answers = vec![a(300), a(30)];
        assert_eq!(cache_ttl(&pos, &config), Some(30));
        pos.answers = vec![a(10 * 86_400)];
        assert_eq!(cache_ttl(&pos, &config), Some(86_400));
        pos.answers = vec![a(0)];
        assert_eq!(cache_ttl(&pos, &config), None);
        pos.answers = vec![a(30)];
        pos.metadata.truncation = true;
        assert_eq!(cache_ttl(&pos, &config), None);

        let mut neg = m.clone();
        neg.metadata.response_code = ResponseCode::NXDomain;
        assert_eq!(cache_ttl(&neg, &config), None, "no SOA: not cached");
        neg.authorities = vec![soa_record("example.", 3600, 60)];
        assert_eq!(cache_ttl(&neg, &config), Some(60));
        neg.authorities = vec![soa_record("example.", 20, 60)];
        assert_eq!(cache_ttl(&neg, &config), Some(20));
        neg.authorities = vec![soa_record("example.", 86_400, 86_400)];
        assert_eq!(cache_ttl(&neg, &config), Some(300), "capped");
        neg.metadata.response_code = ResponseCode::NoError;
        assert_eq!(cache_ttl(&neg, &config), Some(300), "NODATA");
        neg.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&neg, &config), None);
    }

    #[test]
    fn cache_expires_ages_and_stays_bounded() {
        let mut cache = Cache::new(3);
        let t0 = Instant::now();
        let key = |n: &str| CacheKey {
            name: n.to_string(),
            qtype: 1,
            qclass: 1,
            dnssec_ok: false,
            checking_disabled: false,
        };
        let mut answer = query("a.example.", RecordType::A);
        answer.answers.push(Record::from_rdata(
            Name::from_ascii("a.example.").unwrap(),
            10,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        cache.insert(key("a"), answer.clone(), 10, t0);
        let got = cache.get(&key("a"), t0 + Duration::from_secs(4)).unwrap();
        assert_eq!(got.answers[0].ttl, 6);
        assert!(cache.get(&key("a"), t0 + Duration::from_secs(10)).is_none());
        assert_eq!(cache.len(), 0);

        for (i, n) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            cache.insert(
                key(n),
                answer.clone(),
                10,
                t0 + Duration::from_secs(i as u64),
            );
            assert!(cache.len() <= 3);
        }
        assert!(cache.get(&key("e"), t0 + Duration::from_secs(5)).is_some());
        // Expired entries go first when the cache is full.
        cache.insert(key("f"), answer.clone(), 1, t0 + Duration::from_secs(20));
        assert_eq!(cache.len(), 1);
    }
}
