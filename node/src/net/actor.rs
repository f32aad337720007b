//! The swarm task: owns the libp2p swarm, turns its events into [`NetEvent`]s
//! and handle [`Command`]s into swarm calls. Nothing else touches the swarm.

use std::collections::HashMap;
use std::time::Instant;

use futures::StreamExt;
use libp2p::allow_block_list::{self, AllowedPeers};
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{DialError, ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::codec::SyncCodec;
use super::redial::Redial;
use super::{
    duration_ms, keypair, sync_protocol, Allowlist, Command, GossipId, Limits, NetConfig, NetError, NetEvent,
    ResponseChannel, Timing, Topic, Verdict, GOSSIP_FRAME_OVERHEAD_BYTES,
};

/// How long [`Actor::bind`] waits for the listeners to report their addresses.
const LISTEN_WAIT_MS: u64 = 5_000;

/// Admission comes first: a denied connection never reaches the other behaviours.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    admission: allow_block_list::Behaviour<AllowedPeers>,
    connection_limits: connection_limits::Behaviour,
    gossip: gossipsub::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
}

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

pub(crate) struct Actor {
    swarm: Swarm<Behaviour>,
    events: mpsc::Sender<NetEvent>,
    allowlist: Allowlist,
    topics: Vec<(Topic, TopicHash)>,
    redial: Redial,
    pending: HashMap<OutboundRequestId, Reply<Vec<u8>>>,
    limits: Limits,
    events_dropped: u64,
}

impl Actor {
    /// Builds the swarm, binds every listen address and starts dialling the configured peers.
    pub async fn new(config: NetConfig, events: mpsc::Sender<NetEvent>) -> Result<Self, NetError> {
        let keypair = keypair(&config.identity);
        let transport_err = |detail: String| NetError::Transport { detail };
        let behaviour = behaviour(&config)?;
        let idle = duration_ms(config.timing.idle_timeout_ms);
        let swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .map_err(|e| transport_err(e.to_string()))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| transport_err(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();
        let topics = Topic::ALL.iter().map(|t| (*t, IdentTopic::new(t.name(&config.chain_id)).hash())).collect();
        let Timing { redial_min_ms, redial_max_ms, .. } = config.timing;
        let redial = Redial::new(config.peers, duration_ms(redial_min_ms), duration_ms(redial_max_ms), Instant::now());
        info!(peer = %swarm.local_peer_id(), chain_id = %config.chain_id, admitted = config.allowlist.len(), "network starting");
        let mut actor = Actor {
            swarm,
            events,
            allowlist: config.allowlist,
            topics,
            redial,
            pending: HashMap::new(),
            limits: config.limits,
            events_dropped: 0,
        };
        actor.bind(config.listen).await?;
        actor.redial();
        Ok(actor)
    }

    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let wake = self.redial.next_due().unwrap_or_else(|| Instant::now() + duration_ms(3_600_000));
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(command),
                },
                () = tokio::time::sleep_until(wake.into()) => self.redial(),
            }
        }
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(NetError::Stopped));
        }
        info!(peer = %self.swarm.local_peer_id(), "network stopped");
    }

    /// Listens on every address and waits until each listener reports its bound address.
    async fn bind(&mut self, listen: Vec<Multiaddr>) -> Result<(), NetError> {
        let mut waiting = HashMap::new();
        for addr in listen {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen { addr: addr.clone(), detail: e.to_string() })?;
            waiting.insert(id, addr);
        }
        let deadline = tokio::time::Instant::now() + duration_ms(LISTEN_WAIT_MS);
        while !waiting.is_empty() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| NetError::ListenTimeout { waited_ms: LISTEN_WAIT_MS })?;
            match event {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    info!(%address, "listening");
                    waiting.remove(&listener_id);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } if waiting.contains_key(&listener_id) => {
                    let detail = reason.err().map_or_else(|| "listener closed".into(), |e| e.to_string());
                    return Err(NetError::Listen { addr: waiting.remove(&listener_id).expect("present"), detail });
                }
                SwarmEvent::ListenerError { listener_id, error } if waiting.contains_key(&listener_id) => {
                    let addr = waiting.remove(&listener_id).expect("present");
                    return Err(NetError::Listen { addr, detail: error.to_string() });
                }
                other => self.on_swarm_event(other),
            }
        }
        Ok(())
    }

    fn redial(&mut self) {
        let now = Instant::now();
        let swarm = &self.swarm;
        for (slot, addr) in self.redial.due(now, |peer| swarm.is_connected(peer)) {
            let opts = match addr.iter().last() {
                Some(Protocol::P2p(peer)) => DialOpts::peer_id(peer).addresses(vec![addr.clone()]).build(),
                _ => DialOpts::unknown_peer_id().address(addr.clone()).build(),
            };
            let connection = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    debug!(%addr, "dialling");
                    self.redial.dialing(slot, connection);
                }
                Err(error) => {
                    debug!(%addr, %error, "dial not started");
                    self.redial.dial_refused(slot, now);
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Admission(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::ConnectionLimits(never)) => match never {},
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                self.redial.established(connection_id, peer_id, now);
                if num_established.get() == 1 {
                    info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.emit(NetEvent::PeerConnected { peer: peer_id });
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. } => {
                info!(peer = %peer_id, cause = ?cause, "peer disconnected");
                self.redial.disconnected(peer_id, now);
                self.emit(NetEvent::PeerDisconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                self.redial.dial_failed(connection_id, now);
                match error {
                    DialError::Denied { cause } => info!(peer = ?peer_id, %cause, "dialled peer refused: not admitted"),
                    error => debug!(peer = ?peer_id, %error, "dial failed"),
                }
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, peer_id, error, .. } => match error {
                ListenError::Denied { cause } => {
                    info!(peer = ?peer_id, addr = %send_back_addr, %cause, "incoming connection refused")
                }
                error => debug!(addr = %send_back_addr, %error, "incoming connection failed"),
            },
            SwarmEvent::NewListenAddr { address, .. } => info!(%address, "listening"),
            SwarmEvent::ListenerClosed { addresses, reason, .. } => warn!(?addresses, ?reason, "listener closed"),
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                let id = GossipId { message: message_id, source: propagation_source };
                let topic = match self.precheck(&message) {
                    Ok(checked) => checked,
                    Err(reason) => {
                        info!(from = %propagation_source, ?id, reason, "gossip rejected before the application");
                        return self.apply_verdict(&id, Verdict::Reject);
                    }
                };
                debug!(?id, ?topic, bytes = message.data.len(), "gossip received");
                let event = NetEvent::Gossip { topic, from: propagation_source, id: id.clone(), data: message.data };
                if !self.emit(event) {
                    self.apply_verdict(&id, Verdict::Ignore);
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic, .. } => {
                if let Some(topic) = self.topic_of(&topic) {
                    debug!(peer = %peer_id, ?topic, "peer subscribed");
                    self.emit(NetEvent::PeerSubscribed { peer: peer_id, topic });
                }
            }
            gossipsub::Event::SlowPeer { peer_id, .. } => warn!(peer = %peer_id, "gossip peer is slow"),
            _ => {}
        }
    }

    /// Checks the network can make without the application: a known topic,
    /// data within `gossip_bytes_max`. Messages name no author (gossipsub's
    /// anonymous mode): the peer that relayed one was admitted when it
    /// connected, and what the data says is signed inside it (ADR 0004).
    fn precheck(&self, message: &gossipsub::Message) -> Result<Topic, &'static str> {
        let topic = self.topic_of(&message.topic).ok_or("unknown topic")?;
        if message.data.len() > self.limits.gossip_bytes_max {
            return Err("data exceeds gossip_bytes_max");
        }
        Ok(topic)
    }

    fn apply_verdict(&mut self, id: &GossipId, verdict: Verdict) {
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        let held =
            self.swarm.behaviour_mut().gossip.report_message_validation_result(&id.message, &id.source, acceptance);
        if !held {
            debug!(?id, ?verdict, "verdict on a message no longer held");
        }
    }

    fn on_sync(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                debug!(%peer, bytes = request.len(), "sync request received");
                self.emit(NetEvent::Request { from: peer, data: request, channel: ResponseChannel(channel) });
            }
            Event::Message { peer, message: Message::Response { request_id, response }, .. } => {
                debug!(%peer, bytes = response.len(), "sync response received");
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure { peer, request_id, error, .. } => {
                info!(%peer, %error, "sync request failed");
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(NetError::RequestFailed { peer, detail: error.to_string() }));
                }
            }
            Event::InboundFailure { peer, error, .. } => info!(%peer, %error, "sync request from peer failed"),
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data, reply } => {
                let hash = self.topic_hash(topic);
                let result = self.swarm.behaviour_mut().gossip.publish(hash, data);
                let _ = reply.send(result.map(|_| ()).map_err(|e| NetError::Publish { topic, detail: e.to_string() }));
            }
            Command::Report { id, verdict } => self.apply_verdict(&id, verdict),
            Command::Request { peer, data, reply } => {
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(NetError::NotConnected { peer }));
                    return;
                }
                let request_id = self.swarm.behaviour_mut().sync.send_request(&peer, data);
                self.pending.insert(request_id, reply);
            }
            Command::Respond { channel, data, reply } => {
                let result = self.swarm.behaviour_mut().sync.send_response(channel.0, data);
                let _ = reply.send(result.map_err(|_| NetError::ResponseFailed));
            }
            Command::SetAllowlist { allowlist, reply } => {
                self.set_allowlist(allowlist);
                let _ = reply.send(());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Shutdown => unreachable!("run() handles Shutdown"),
        }
    }

    /// Replaces the allowlist; the admission behaviour closes every connection to a removed peer.
    fn set_allowlist(&mut self, allowlist: Allowlist) {
        let removed: Vec<PeerId> = self.allowlist.peers().filter(|p| !allowlist.contains(p)).copied().collect();
        let admission = &mut self.swarm.behaviour_mut().admission;
        for peer in &removed {
            admission.disallow_peer(*peer);
        }
        for peer in allowlist.peers() {
            admission.allow_peer(*peer);
        }
        info!(admitted = allowlist.len(), removed = removed.len(), "allowlist replaced");
        for peer in &removed {
            if self.swarm.is_connected(peer) {
                info!(%peer, "disconnecting a peer no longer admitted");
            }
        }
        self.allowlist = allowlist;
    }

    /// Queues an event for the application without waiting; false if it was dropped (a full queue is logged).
    fn emit(&mut self, event: NetEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.events_dropped += 1;
                let kind = match event {
                    NetEvent::Gossip { .. } => "gossip",
                    NetEvent::Request { .. } => "request",
                    NetEvent::PeerConnected { .. } | NetEvent::PeerDisconnected { .. } => "peer",
                    NetEvent::PeerSubscribed { .. } => "subscription",
                };
                let (dropped, events_max) = (self.events_dropped, self.limits.events_max);
                warn!(kind, dropped, events_max, "event queue full; dropping");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn topic_of(&self, hash: &TopicHash) -> Option<Topic> {
        self.topics.iter().find(|(_, h)| h == hash).map(|(t, _)| *t)
    }

    fn topic_hash(&self, topic: Topic) -> TopicHash {
        self.topics.iter().find(|(t, _)| *t == topic).map(|(_, h)| h.clone()).expect("every topic has a hash")
    }
}

fn behaviour(config: &NetConfig) -> Result<Behaviour, NetError> {
    let transport_err = |detail: String| NetError::Transport { detail };
    let limits = &config.limits;

    let mut admission = allow_block_list::Behaviour::<AllowedPeers>::default();
    for peer in config.allowlist.peers() {
        admission.allow_peer(*peer);
    }

    let connection_limits = connection_limits::Behaviour::new(
        ConnectionLimits::default()
            .with_max_pending_incoming(Some(limits.pending_inbound_max))
            .with_max_established_per_peer(Some(limits.connections_per_peer_max)),
    );

    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(message_id)
        .max_transmit_size(limits.gossip_bytes_max + GOSSIP_FRAME_OVERHEAD_BYTES)
        .heartbeat_interval(duration_ms(config.timing.gossip_heartbeat_ms))
        .build()
        .map_err(|e| transport_err(e.to_string()))?;
    let mut gossip = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config)
        .map_err(|e| transport_err(e.to_string()))?;
    for topic in Topic::ALL {
        gossip.subscribe(&IdentTopic::new(topic.name(&config.chain_id))).map_err(|e| transport_err(e.to_string()))?;
    }

    let protocol = StreamProtocol::try_from_owned(sync_protocol(&config.chain_id))
        .map_err(|e| transport_err(format!("sync protocol name: {e}")))?;
    let sync = request_response::Behaviour::with_codec(
        SyncCodec::new(limits.request_bytes_max, limits.response_bytes_max),
        [(protocol, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(duration_ms(limits.request_timeout_ms))
            .with_max_concurrent_streams(limits.sync_streams_max),
    );

    Ok(Behaviour { admission, connection_limits, gossip, sync })
}

/// A gossip message's id: the BLAKE3 hash of its data, so the same bytes
/// arriving by two routes are one message, and no relay can pass other bytes
/// off as a message already seen. Ids stay in the gossip layer (its duplicate
/// cache and IHAVE / IWANT / IDONTWANT); nothing signed or stored uses them.
/// SHA-256 here was 1.3 % of a validator at rate max: a record batch is a few
/// hundred KB, which BLAKE3 hashes ~3 times faster (docs/BENCHMARKS.md, session 28).
fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8], source: Option<PeerId>, sequence_number: Option<u64>) -> gossipsub::Message {
        let topic = IdentTopic::new("/annal/test/records/1").hash();
        gossipsub::Message { source, data: data.to_vec(), sequence_number, topic }
    }

    /// Goal: a message's id is its bytes' alone: the same data from anyone is
    /// one message, and one changed byte is another.
    #[test]
    fn the_message_id_binds_the_data_only() {
        let a = message(b"a record batch", None, None);
        let relayed = message(b"a record batch", Some(PeerId::random()), Some(7));
        let changed = message(b"a record batcH", None, None);
        assert_eq!(message_id(&a), message_id(&relayed));
        assert_ne!(message_id(&a), message_id(&changed));
        assert_eq!(message_id(&a).0.len(), 32);
    }
}
