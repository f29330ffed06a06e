//! [`NetTask`]: the one task that owns the libp2p swarm.
//!
//! Role: run the swarm, answer [`NetHandle`](super::NetHandle) commands, run admission and
//! turn swarm events into [`NetEvent`]s. Owns the swarm, the admitted set, pending requests and
//! what is known of each peer. Talks to the handle (commands in), the event channel (events
//! out) and the other nodes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use libp2p::gossipsub::{self, MessageAcceptance, TopicHash};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, DialError, ListenError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::admission::{self, ClusterKeys, HelloRequest, HelloResponse, MAX_NODE_NAME};
use super::behaviour::{self, Behaviour, BehaviourEvent, UNADMITTED_SCORE};
use super::handle::Command;
use super::wire::{SyncRequest, SyncResponse};
use super::{NetConfig, NetError, NetEvent, PeerInfo, Topic};

/// How often the bootstrap addresses are dialled again while no peer is admitted.
const REDIAL_INTERVAL: Duration = Duration::from_secs(10);

/// How many refused peers are remembered (for `peers()` and to not redial mDNS peers).
const MAX_REFUSED: usize = 64;

/// What the task knows of one peer.
#[derive(Debug, Default)]
struct Peer {
    connections: HashMap<ConnectionId, Multiaddr>,
    listen_addrs: Vec<Multiaddr>,
    node_name: Option<String>,
    /// The run of the peer's process (from identify); a new one means that it restarted.
    run: Option<String>,
}

/// An answer to an inbound sync request, once the replication layer has given it.
type PendingReply = BoxFuture<'static, (u64, Option<Vec<u8>>)>;

/// The network task. Spawn [`run`](Self::run).
pub struct NetTask {
    swarm: Swarm<Behaviour>,
    config: NetConfig,
    keys: ClusterKeys,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    /// The admitted peers, for handles that need them without a round trip.
    admitted_tx: watch::Sender<Vec<PeerId>>,
    state_topic: TopicHash,
    observed_topic: TopicHash,
    events_topic: TopicHash,
    peers: HashMap<PeerId, Peer>,
    /// Peers that proved the cluster secret; the only ones that get gossip or sync.
    admitted: HashSet<PeerId>,
    /// Our outstanding challenges: request → (peer, nonce).
    challenges: HashMap<OutboundRequestId, (PeerId, [u8; 32])>,
    /// Peers we are challenging now.
    challenging: HashSet<PeerId>,
    /// Recently refused peers and why, oldest first.
    refused: VecDeque<(PeerId, String)>,
    /// Our sync requests waiting for an answer.
    sync_requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, NetError>>>,
    /// Inbound sync requests waiting for the replication layer's answer.
    reply_channels: HashMap<u64, ResponseChannel<SyncResponse>>,
    pending_replies: FuturesUnordered<PendingReply>,
    next_reply: u64,
    /// Peers that restarted while an old connection of theirs was still open here, since
    /// when: once they have had our hello answer, every connection to them is closed and
    /// dialled again, so that both sides start afresh (gossip subscriptions included).
    restarted: HashMap<PeerId, tokio::time::Instant>,
    /// Peers to dial again at these addresses once their last connection has closed.
    redial: HashMap<PeerId, Vec<Multiaddr>>,
}

/// How long a restarted peer may take to ask for our hello answer before it is reset anyway.
const RESTART_RESET_AFTER: Duration = Duration::from_secs(2);

impl NetTask {
    pub(crate) fn new(
        config: NetConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        admitted_tx: watch::Sender<Vec<PeerId>>,
    ) -> Result<Self, NetError> {
        let keys = ClusterKeys::derive(&config.cluster_id, &config.cluster_secret);
        let mut swarm = behaviour::build_swarm(&config, &keys)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        let state_topic = behaviour::topic(&config.cluster_id, Topic::State).hash();
        let observed_topic = behaviour::topic(&config.cluster_id, Topic::Observed).hash();
        let events_topic = behaviour::topic(&config.cluster_id, Topic::Events).hash();
        Ok(Self {
            swarm,
            config,
            keys,
            commands,
            events,
            admitted_tx,
            state_topic,
            observed_topic,
            events_topic,
            peers: HashMap::new(),
            admitted: HashSet::new(),
            challenges: HashMap::new(),
            challenging: HashSet::new(),
            refused: VecDeque::new(),
            sync_requests: HashMap::new(),
            reply_channels: HashMap::new(),
            pending_replies: FuturesUnordered::new(),
            next_reply: 0,
            restarted: HashMap::new(),
            redial: HashMap::new(),
        })
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// A control for raw streams over this swarm's connections.
    pub(crate) fn stream_control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().streams.new_control()
    }

    /// Runs the swarm until `shutdown` fires or every handle is dropped.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = info_span!("net", node = %self.config.node_name);
        self.run_inner(shutdown).instrument(span).await
    }

    async fn run_inner(mut self, shutdown: CancellationToken) {
        info!(peer_id = %self.local_peer_id(), cluster = %self.config.cluster_id, "network starting");
        self.dial_bootstrap();
        let mut redial = tokio::time::interval(REDIAL_INTERVAL);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        redial.tick().await;
        let mut maintain = tokio::time::interval(Duration::from_secs(1));
        maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Step::Stop,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => Step::Command(cmd),
                    None => Step::Stop,
                },
                Some((id, answer)) = self.pending_replies.next(), if !self.pending_replies.is_empty() => {
                    Step::Reply(id, answer)
                }
                event = self.swarm.select_next_some() => Step::Swarm(Box::new(event)),
                _ = redial.tick() => Step::Redial,
                _ = maintain.tick() => Step::Maintain,
            };
            match step {
                Step::Stop => break,
                Step::Command(cmd) => self.on_command(cmd),
                Step::Reply(id, answer) => self.on_reply(id, answer),
                Step::Swarm(event) => self.on_swarm_event(*event),
                Step::Redial => {
                    if self.admitted.is_empty() {
                        self.dial_bootstrap();
                    }
                }
                Step::Maintain => {
                    let overdue: Vec<PeerId> = self
                        .restarted
                        .iter()
                        .filter(|(_, since)| since.elapsed() >= RESTART_RESET_AFTER)
                        .map(|(p, _)| *p)
                        .collect();
                    for peer in overdue {
                        self.reset(peer);
                    }
                }
            }
        }
        info!(peer_id = %self.local_peer_id(), "network stopped");
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.config.bootstrap.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                warn!(%addr, error = %e, "cannot dial bootstrap address");
            }
        }
    }

    fn publish_admitted(&self) {
        let mut ids: Vec<PeerId> = self.admitted.iter().copied().collect();
        ids.sort();
        self.admitted_tx.send_replace(ids);
    }

    fn emit(&self, event: NetEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                warn!(?event, "network event channel is full: event dropped");
            }
            // Nobody listens any more: the node is shutting down.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr, reply } => {
                let result = self.swarm.dial(addr.clone()).map_err(|e| NetError::Dial {
                    addr,
                    reason: e.to_string(),
                });
                let _ = reply.send(result);
            }
            Command::Publish { topic, data, reply } => {
                let t = behaviour::topic(&self.config.cluster_id, topic);
                let bytes = data.len();
                let result = match self.swarm.behaviour_mut().gossipsub.publish(t, data) {
                    Ok(_) => {
                        crate::metrics::gossip_sent(topic, bytes);
                        Ok(())
                    }
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                        debug!(?topic, "published with no peer subscribed");
                        Ok(())
                    }
                    Err(e) => Err(NetError::Publish {
                        topic,
                        reason: e.to_string(),
                    }),
                };
                let _ = reply.send(result);
            }
            Command::RequestSync { peer, data, reply } => {
                if !self.admitted.contains(&peer) {
                    let _ = reply.send(Err(NetError::NotAdmitted(peer)));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, SyncRequest(data));
                self.sync_requests.insert(id, reply);
            }
            Command::Connect { peer, addrs } => {
                if peer == self.local_peer_id()
                    || self.swarm.is_connected(&peer)
                    || self.redial.contains_key(&peer)
                    || addrs.is_empty()
                {
                    return;
                }
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    debug!(%peer, error = %e, "cannot dial a member");
                }
            }
            Command::Reset { peer } => {
                if self.swarm.is_connected(&peer) {
                    self.reset(peer);
                }
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_infos());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(id, p)| {
                let mut addrs = p.listen_addrs.clone();
                for a in p.connections.values() {
                    if !addrs.contains(a) {
                        addrs.push(a.clone());
                    }
                }
                PeerInfo {
                    peer_id: *id,
                    addrs,
                    admitted: self.admitted.contains(id),
                    connected: !p.connections.is_empty(),
                    node_name: p.node_name.clone(),
                    refused: self.refusal(id).map(str::to_string),
                }
            })
            .collect();
        for (id, reason) in &self.refused {
            if !self.peers.contains_key(id) && !out.iter().any(|p| p.peer_id == *id) {
                out.push(PeerInfo {
                    peer_id: *id,
                    addrs: Vec::new(),
                    admitted: false,
                    connected: false,
                    node_name: None,
                    refused: Some(reason.clone()),
                });
            }
        }
        out.sort_by_key(|p| p.peer_id);
        out
    }

    fn refusal(&self, peer: &PeerId) -> Option<&str> {
        self.refused
            .iter()
            .rev()
            .find(|(p, _)| p == peer)
            .map(|(_, r)| r.as_str())
    }

    /// Refuses a peer: remembers why, logs it and closes every connection to it.
    fn refuse(&mut self, peer: PeerId, reason: String) {
        let addr = self.peer_addr(&peer);
        warn!(%peer, addr = %addr, %reason, "peer {peer} at {addr} {reason}: refused");
        self.refused.retain(|(p, _)| *p != peer);
        self.refused.push_back((peer, reason));
        while self.refused.len() > MAX_REFUSED {
            self.refused.pop_front();
        }
        if self.admitted.remove(&peer) {
            self.publish_admitted();
            self.emit(NetEvent::PeerGone(peer));
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn peer_addr(&self, peer: &PeerId) -> String {
        self.peers
            .get(peer)
            .and_then(|p| p.connections.values().next())
            .map(|a| a.to_string())
            .unwrap_or_else(|| "an unknown address".to_string())
    }

    fn on_reply(&mut self, id: u64, answer: Option<Vec<u8>>) {
        let Some(channel) = self.reply_channels.remove(&id) else {
            return;
        };
        match answer {
            Some(data) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, SyncResponse(data))
                    .is_err()
                {
                    debug!("sync answer not sent: the peer's connection closed");
                }
            }
            // Dropping the channel makes the request fail on the peer's side.
            None => debug!("sync request left unanswered"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Hello(e)) => self.on_hello(e),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(e)) => self.on_sync(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.on_identify(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(e)) => self.on_mdns(e),
            // Streams are opened and accepted through the control; the behaviour reports nothing.
            SwarmEvent::Behaviour(BehaviourEvent::Streams(())) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping)) => {
                if let Err(e) = ping.result {
                    debug!(peer = %ping.peer, error = %e, "ping failed: closing the connection");
                    self.swarm.close_connection(ping.connection);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, peer_id = %self.local_peer_id(), "listening");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                debug!(peer = %peer_id, %addr, "connection established");
                self.peers
                    .entry(peer_id)
                    .or_default()
                    .connections
                    .insert(connection_id, addr);
                if !self.admitted.contains(&peer_id) {
                    // Gossipsub knows the peer by now; keep it out until admitted.
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .set_application_score(&peer_id, UNADMITTED_SCORE);
                    self.challenge(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, cause = ?cause, "connection closed");
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connections.remove(&connection_id);
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.challenging.remove(&peer_id);
                    if self.admitted.remove(&peer_id) {
                        self.publish_admitted();
                        info!(peer = %peer_id, "admitted peer gone");
                        self.emit(NetEvent::PeerGone(peer_id));
                    }
                    if let Some(addrs) = self.redial.remove(&peer_id) {
                        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer_id)
                            .addresses(addrs)
                            .build();
                        if let Err(e) = self.swarm.dial(opts) {
                            warn!(peer = %peer_id, error = %e, "cannot dial a restarted peer again");
                        }
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.on_dial_error(peer_id, &error)
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => self.on_incoming_error(&send_back_addr, &error),
            _ => {}
        }
    }

    /// Sends our admission challenge to `peer`, unless one is in flight.
    fn challenge(&mut self, peer: PeerId) {
        if !self.challenging.insert(peer) {
            return;
        }
        let nonce = match admission::nonce() {
            Ok(n) => n,
            Err(e) => {
                self.challenging.remove(&peer);
                self.refuse(
                    peer,
                    format!("could not be challenged (no randomness: {e})"),
                );
                return;
            }
        };
        let id = self
            .swarm
            .behaviour_mut()
            .hello
            .send_request(&peer, HelloRequest { nonce });
        self.challenges.insert(id, (peer, nonce));
    }

    fn on_hello(&mut self, event: request_response::Event<HelloRequest, HelloResponse>) {
        let local = self.local_peer_id();
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    // Anyone may ask: the answer proves our knowledge, and binds both ids.
                    let mac = admission::prove(
                        &self.keys.hello,
                        &peer,
                        &local,
                        &request.nonce,
                        &self.config.node_name,
                    );
                    let answer = HelloResponse {
                        node_name: self.config.node_name.clone(),
                        mac,
                    };
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .hello
                        .send_response(channel, answer);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let Some((_, nonce)) = self.challenges.remove(&request_id) else {
                        return;
                    };
                    self.challenging.remove(&peer);
                    let name_ok = response.node_name.len() <= MAX_NODE_NAME;
                    if name_ok
                        && admission::verify(
                            &self.keys.hello,
                            &local,
                            &peer,
                            &nonce,
                            &response.node_name,
                            &response.mac,
                        )
                    {
                        self.admit(peer, response.node_name);
                    } else {
                        self.refuse(
                            peer,
                            "did not prove the cluster secret (one of us has a wrong or missing secret)".to_string(),
                        );
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if self.challenges.remove(&request_id).is_none() {
                    return;
                }
                self.challenging.remove(&peer);
                if self.admitted.contains(&peer) {
                    return;
                }
                let reason = match error {
                    OutboundFailure::ConnectionClosed | OutboundFailure::Io(_) => {
                        "closed the connection before proving the cluster secret (it refused us: wrong or missing cluster secret on one side?)".to_string()
                    }
                    OutboundFailure::Timeout => "did not answer the cluster-secret challenge in time".to_string(),
                    OutboundFailure::UnsupportedProtocols => {
                        "does not speak shoal's admission protocol (not a shoal node?)".to_string()
                    }
                    other => format!("failed the cluster-secret challenge ({other})"),
                };
                self.refuse(peer, reason);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "could not answer a hello");
            }
            request_response::Event::ResponseSent { peer, .. } => {
                if self.restarted.contains_key(&peer) {
                    self.reset(peer);
                }
            }
        }
    }

    /// Closes every connection to a peer and dials it again once they are closed: after the
    /// peer restarted (its old connections are stale, and gossip would go on sending on them),
    /// or when its gossip stopped reaching us although it is connected.
    fn reset(&mut self, peer: PeerId) {
        self.restarted.remove(&peer);
        let addrs = self
            .peers
            .get(&peer)
            .map(|p| p.listen_addrs.clone())
            .unwrap_or_default();
        info!(%peer, "reconnecting to the peer");
        if !addrs.is_empty() {
            self.redial.insert(peer, addrs);
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn admit(&mut self, peer: PeerId, node_name: String) {
        if !self.admitted.insert(peer) {
            return;
        }
        self.refused.retain(|(p, _)| *p != peer);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, 0.0);
        let addr = self.peer_addr(&peer);
        info!(%peer, %addr, node = %node_name, "peer admitted");
        self.peers.entry(peer).or_default().node_name = Some(node_name);
        self.publish_admitted();
        self.emit(NetEvent::PeerAdmitted(peer));
    }

    fn topic_of(&self, hash: &TopicHash) -> Option<Topic> {
        if *hash == self.state_topic {
            Some(Topic::State)
        } else if *hash == self.observed_topic {
            Some(Topic::Observed)
        } else if *hash == self.events_topic {
            Some(Topic::Events)
        } else {
            None
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let topic = self.topic_of(&message.topic);
        let admitted = self.admitted.contains(&propagation_source);
        let acceptance = match (admitted, topic) {
            (true, Some(_)) => MessageAcceptance::Accept,
            (true, None) => MessageAcceptance::Ignore,
            (false, _) => {
                warn!(peer = %propagation_source, "gossip from a peer that is not admitted: dropped");
                MessageAcceptance::Reject
            }
        };
        let accepted = matches!(acceptance, MessageAcceptance::Accept);
        // The message is forwarded to others only once accepted here.
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
        if let (true, Some(topic)) = (accepted, topic) {
            crate::metrics::gossip_received(topic, message.data.len());
            let from = message.source.unwrap_or(propagation_source);
            self.emit(NetEvent::Gossip {
                from,
                topic,
                data: message.data,
            });
        }
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if !self.admitted.contains(&peer) {
                        warn!(%peer, "sync request from a peer that is not admitted: dropped");
                        return;
                    }
                    let (tx, rx) = oneshot::channel();
                    let id = self.next_reply;
                    self.next_reply = self.next_reply.wrapping_add(1);
                    self.reply_channels.insert(id, channel);
                    let limit = self.config.request_timeout;
                    self.pending_replies.push(Box::pin(async move {
                        let answer = tokio::time::timeout(limit, rx)
                            .await
                            .ok()
                            .and_then(Result::ok);
                        (id, answer)
                    }));
                    self.emit(NetEvent::SyncRequest {
                        from: peer,
                        data: request.0,
                        reply: tx,
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.sync_requests.remove(&request_id) {
                        let _ = reply.send(Ok(response.0));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.sync_requests.remove(&request_id) {
                    let err = match error {
                        OutboundFailure::Timeout => NetError::Timeout(self.config.request_timeout),
                        other => NetError::Sync {
                            peer,
                            reason: other.to_string(),
                        },
                    };
                    let _ = reply.send(Err(err));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "sync request not answered");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        match behaviour::agent_cluster(&info.agent_version) {
            Some(cluster) if cluster == self.config.cluster_id => {
                let run = behaviour::agent_run(&info.agent_version).map(str::to_string);
                let mut restarted = false;
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.listen_addrs = info.listen_addrs;
                    restarted = p.run.is_some() && run.is_some() && p.run != run;
                    p.run = run;
                }
                if restarted && self.admitted.contains(&peer_id) {
                    info!(peer = %peer_id, "peer restarted");
                    self.restarted.insert(peer_id, tokio::time::Instant::now());
                }
            }
            Some(cluster) => {
                let reason = format!(
                    "belongs to cluster {cluster:?}, not {:?}",
                    self.config.cluster_id
                );
                self.refuse(peer_id, reason);
            }
            None => {
                let reason = format!("is not a shoal node (agent {:?})", info.agent_version);
                self.refuse(peer_id, reason);
            }
        }
    }

    fn on_mdns(&mut self, event: mdns::Event) {
        let mdns::Event::Discovered(found) = event else {
            return;
        };
        let local = self.local_peer_id();
        for (peer, addr) in found {
            let known = self.peers.contains_key(&peer) || self.refusal(&peer).is_some();
            if peer == local || known {
                continue;
            }
            debug!(%peer, %addr, "discovered by mDNS: dialling (admission still applies)");
            if let Err(e) = self.swarm.dial(addr.clone()) {
                debug!(%peer, %addr, error = %e, "cannot dial mDNS peer");
            }
        }
    }

    fn on_dial_error(&mut self, peer: Option<PeerId>, error: &DialError) {
        match error {
            DialError::Transport(attempts) => {
                for (addr, err) in attempts {
                    if is_unreachable(err) {
                        warn!(%addr, error = %err, "could not connect to {addr}: {}", chain(err));
                    } else {
                        warn!(
                            %addr, error = %chain(err),
                            "could not connect to {addr}: the peer is not in this cluster (wrong or missing cluster secret), or not a shoal node"
                        );
                    }
                }
            }
            other => warn!(peer = ?peer, error = %other, "could not connect: {other}"),
        }
    }

    fn on_incoming_error(&mut self, from: &Multiaddr, error: &ListenError) {
        match error {
            ListenError::Transport(err) => warn!(
                %from, error = %chain(err),
                "refused a connection from {from}: the peer is not in this cluster (wrong or missing cluster secret), or not a shoal node"
            ),
            other => debug!(%from, error = %other, "incoming connection failed"),
        }
    }
}

/// One branch of the task's loop, handled outside the `select!`.
enum Step {
    Stop,
    Command(Command),
    Reply(u64, Option<Vec<u8>>),
    Swarm(Box<SwarmEvent<BehaviourEvent>>),
    Redial,
    Maintain,
}

/// Whether a dial failed because nothing answered (rather than because the handshake failed).
fn is_unreachable(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | AddrNotAvailable
                    | NotFound
            ) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// An error and its causes on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        // Wrappers often repeat their cause, or say nothing.
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}
