//! The validator's network: libp2p over TCP with Noise and Yamux, on tokio.
//!
//! * Gossip on two topics, `/annal/<chain_id>/records/1` and
//!   `/annal/<chain_id>/consensus/1` ([`Topic`]). Messages carry no author,
//!   sequence number or gossip signature (gossipsub's anonymous mode): what
//!   they say is signed inside them (records by their submitters, consensus
//!   messages and checkpoint signatures by validators), and the peer that
//!   relays one was admitted when it connected (ADR 0004). A message is
//!   identified by the BLAKE3 hash of its data (a duplicate is dropped), and held
//!   until the application reports a
//!   [`Verdict`] with [`NetworkHandle::report`]: only accepted messages are
//!   relayed.
//! * Request-response on `/annal/<chain_id>/sync/1`, opaque bytes each way
//!   ([`NetworkHandle::request`], [`NetEvent::Request`], [`NetworkHandle::respond`]),
//!   length-prefixed and bounded ([`codec`]).
//! * Admission: a connection whose peer is not in the [`Allowlist`] (the
//!   genesis validators' `p2p_key`s plus configured observers) is denied as
//!   soon as the Noise handshake names the peer, before any protocol runs on
//!   it. [`NetworkHandle::set_allowlist`] replaces the list at runtime and
//!   closes connections to peers it no longer admits (ADR 0004).
//! * Configured peers are dialled at start and re-dialled with exponential
//!   back-off when the connection drops ([`redial`]).
//!
//! Everything that crosses the wire has a `_max` in [`Limits`]. The swarm
//! runs in one task ([`actor`]); the rest of the node talks to it through a
//! [`NetworkHandle`] and reads [`NetEvent`]s from a bounded channel.

mod actor;
pub mod codec;
mod redial;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use annal_ledger::genesis::Genesis;
use annal_ledger::keys::{PublicKey, SecretKey};
use libp2p::gossipsub::MessageId;
use tokio::sync::{mpsc, oneshot};

pub use libp2p::{Multiaddr, PeerId};

/// A gossip topic. Its wire name carries the chain id, so two chains never share a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Signed records on their way to a block.
    Records,
    /// Consensus messages (proposals, votes, certificates).
    Consensus,
}

impl Topic {
    pub const ALL: [Topic; 2] = [Topic::Records, Topic::Consensus];

    /// The gossipsub topic name, e.g. `/annal/<chain_id>/records/1`.
    pub fn name(self, chain_id: &str) -> String {
        match self {
            Topic::Records => format!("/annal/{chain_id}/records/1"),
            Topic::Consensus => format!("/annal/{chain_id}/consensus/1"),
        }
    }
}

/// The name of the request-response protocol used for sync.
pub fn sync_protocol(chain_id: &str) -> String {
    format!("/annal/{chain_id}/sync/1")
}

/// The application's judgement of a received gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver it and relay it to the mesh.
    Accept,
    /// Invalid: drop it and do not relay it (a peer that sends it misbehaves).
    Reject,
    /// Not useful now (e.g. stale): drop it, do not relay it, blame no one.
    Ignore,
}

/// Names one received gossip message for [`NetworkHandle::report`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GossipId {
    message: MessageId,
    source: PeerId,
}

impl GossipId {
    /// The message id: SHA-256 of the message data.
    pub fn digest(&self) -> &[u8] {
        &self.message.0
    }
}

impl fmt::Debug for GossipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipId({} from {})", self.message, self.source)
    }
}

/// Where to send the answer to a [`NetEvent::Request`]; give it to [`NetworkHandle::respond`].
/// Dropping it unanswered makes the request fail at the requester.
pub struct ResponseChannel(libp2p::request_response::ResponseChannel<Vec<u8>>);

impl fmt::Debug for ResponseChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseChannel")
    }
}

/// What the network tells the rest of the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message awaiting a [`Verdict`]; until one is reported it is not relayed.
    Gossip {
        topic: Topic,
        /// The connected (so admitted) peer that relayed it to us; not
        /// necessarily the one that published it.
        from: PeerId,
        id: GossipId,
        data: Vec<u8>,
    },
    /// A sync request; answer with [`NetworkHandle::respond`].
    Request { from: PeerId, data: Vec<u8>, channel: ResponseChannel },
    /// The first connection to an admitted peer is up.
    PeerConnected { peer: PeerId },
    /// The last connection to a peer closed.
    PeerDisconnected { peer: PeerId },
    /// A connected peer joined a topic (a publish on it can now reach that peer).
    PeerSubscribed { peer: PeerId, topic: Topic },
}

/// Bounds on everything the network accepts, holds or sends.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest gossip message data; the gossipsub frame limit is this plus [`GOSSIP_FRAME_OVERHEAD_BYTES`].
    pub gossip_bytes_max: usize,
    /// Largest sync request, sent or received.
    pub request_bytes_max: usize,
    /// Largest sync response, sent or received.
    pub response_bytes_max: usize,
    /// How long a sync request may wait for its response.
    pub request_timeout_ms: u64,
    /// Sync streams open at once on one connection.
    pub sync_streams_max: usize,
    /// Events queued for the application; past it gossip is ignored and requests dropped (logged).
    pub events_max: usize,
    /// Commands queued from handles; past it callers wait.
    pub commands_max: usize,
    /// Incoming connections still in their handshake.
    pub pending_inbound_max: u32,
    /// Established connections to one peer.
    pub connections_per_peer_max: u32,
}

/// Room for gossipsub's framing and topic (messages carry no signature, key or sequence number).
pub const GOSSIP_FRAME_OVERHEAD_BYTES: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A consensus message may carry a block of up to 2 MiB (annal_consensus::wire::Limits).
            gossip_bytes_max: 2 << 20,
            request_bytes_max: 64 << 10,
            response_bytes_max: 16 << 20,
            request_timeout_ms: 10_000,
            sync_streams_max: 16,
            events_max: 4096,
            commands_max: 1024,
            pending_inbound_max: 64,
            connections_per_peer_max: 2,
        }
    }
}

/// Timers of the swarm.
#[derive(Clone, Debug)]
pub struct Timing {
    pub gossip_heartbeat_ms: u64,
    /// First delay before re-dialling a configured peer; it doubles on each failure.
    pub redial_min_ms: u64,
    pub redial_max_ms: u64,
    /// A connection with no open stream closes after this long.
    pub idle_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { gossip_heartbeat_ms: 1_000, redial_min_ms: 500, redial_max_ms: 30_000, idle_timeout_ms: 3_600_000 }
    }
}

/// The peers allowed to stay connected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    peers: BTreeSet<PeerId>,
}

impl Allowlist {
    /// An allowlist of the libp2p identities of these ed25519 keys.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Result<Self, NetError> {
        let peers = keys.into_iter().map(peer_id).collect::<Result<_, _>>()?;
        Ok(Allowlist { peers })
    }

    /// The genesis validators' `p2p_key`s plus the node's configured observers.
    pub fn from_genesis(genesis: &Genesis, observers: &[PublicKey]) -> Result<Self, NetError> {
        Allowlist::new(genesis.validators.iter().map(|v| &v.p2p_key).chain(observers))
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains(peer)
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.iter()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// Everything the network needs to start.
#[derive(Debug)]
pub struct NetConfig {
    pub chain_id: String,
    /// The node's p2p key (its key file, read with `SecretKey::read_file`); its seed is the libp2p identity.
    pub identity: SecretKey,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/26656`.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial and keep dialling, e.g. `/ip4/10.0.0.2/tcp/26656` (a `/p2p/<id>` suffix is optional).
    pub peers: Vec<Multiaddr>,
    pub allowlist: Allowlist,
    pub limits: Limits,
    pub timing: Timing,
}

impl NetConfig {
    /// A configuration with default limits and timers that listens on nothing and dials no one.
    pub fn new(chain_id: impl Into<String>, identity: SecretKey, allowlist: Allowlist) -> Self {
        NetConfig {
            chain_id: chain_id.into(),
            identity,
            listen: Vec::new(),
            peers: Vec::new(),
            allowlist,
            limits: Limits::default(),
            timing: Timing::default(),
        }
    }

    /// Refuses limits and timers the network cannot run with.
    pub fn check(&self) -> Result<(), NetError> {
        let (l, t) = (&self.limits, &self.timing);
        let frame_max = u64::from(u32::MAX);
        let rules: [(&'static str, u64, bool, &'static str); 11] = [
            ("gossip_bytes_max", l.gossip_bytes_max as u64, l.gossip_bytes_max > 0, "positive"),
            (
                "request_bytes_max",
                l.request_bytes_max as u64,
                l.request_bytes_max as u64 <= frame_max,
                "at most 2^32-1",
            ),
            (
                "response_bytes_max",
                l.response_bytes_max as u64,
                l.response_bytes_max as u64 <= frame_max,
                "at most 2^32-1",
            ),
            ("request_timeout_ms", l.request_timeout_ms, l.request_timeout_ms > 0, "positive"),
            ("sync_streams_max", l.sync_streams_max as u64, l.sync_streams_max > 0, "positive"),
            ("events_max", l.events_max as u64, l.events_max > 0, "positive"),
            ("commands_max", l.commands_max as u64, l.commands_max > 0, "positive"),
            (
                "connections_per_peer_max",
                u64::from(l.connections_per_peer_max),
                l.connections_per_peer_max > 0,
                "positive",
            ),
            ("gossip_heartbeat_ms", t.gossip_heartbeat_ms, t.gossip_heartbeat_ms > 0, "positive"),
            ("redial_min_ms", t.redial_min_ms, t.redial_min_ms > 0, "positive"),
            ("redial_max_ms", t.redial_max_ms, t.redial_max_ms >= t.redial_min_ms, "at least redial_min_ms"),
        ];
        match rules.into_iter().find(|(_, _, ok, _)| !ok) {
            Some((name, value, _, rule)) => Err(NetError::Config { name, value, rule }),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network config {name} is {value}; it must be {rule}")]
    Config { name: &'static str, value: u64, rule: &'static str },
    #[error("p2p key {key} is not a valid ed25519 public key: {detail}")]
    BadPeerKey { key: PublicKey, detail: String },
    #[error("cannot set up the transport: {detail}")]
    Transport { detail: String },
    #[error("cannot listen on {addr}: {detail}")]
    Listen { addr: Multiaddr, detail: String },
    #[error("no listen address reported within {waited_ms} ms")]
    ListenTimeout { waited_ms: u64 },
    #[error("gossip message of {got} bytes exceeds gossip_bytes_max {max}")]
    GossipTooLarge { got: usize, max: usize },
    #[error("request of {got} bytes exceeds request_bytes_max {max}")]
    RequestTooLarge { got: usize, max: usize },
    #[error("response of {got} bytes exceeds response_bytes_max {max}")]
    ResponseTooLarge { got: usize, max: usize },
    #[error("cannot publish on {topic:?}: {detail}")]
    Publish { topic: Topic, detail: String },
    #[error("peer {peer} is not connected")]
    NotConnected { peer: PeerId },
    #[error("request to {peer} failed: {detail}")]
    RequestFailed { peer: PeerId, detail: String },
    #[error("the response could not be sent: the requester is gone or the request timed out")]
    ResponseFailed,
    #[error("the network task has stopped")]
    Stopped,
}

/// The libp2p peer id of an ed25519 public key (a genesis `p2p_key`).
pub fn peer_id(key: &PublicKey) -> Result<PeerId, NetError> {
    let ed = libp2p::identity::ed25519::PublicKey::try_from_bytes(&key.0)
        .map_err(|e| NetError::BadPeerKey { key: *key, detail: e.to_string() })?;
    Ok(libp2p::identity::PublicKey::from(ed).to_peer_id())
}

/// The libp2p identity of a node's p2p key: the same ed25519 key, from its 32-byte seed.
pub(crate) fn keypair(key: &SecretKey) -> libp2p::identity::Keypair {
    // `ed25519_from_bytes` zeroes the buffer it is given.
    let mut seed = key.seed();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).expect("a 32-byte seed is a valid ed25519 secret key")
}

pub(crate) enum Command {
    Publish { topic: Topic, data: Vec<u8>, reply: oneshot::Sender<Result<(), NetError>> },
    Report { id: GossipId, verdict: Verdict },
    Request { peer: PeerId, data: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, NetError>> },
    Respond { channel: ResponseChannel, data: Vec<u8>, reply: oneshot::Sender<Result<(), NetError>> },
    SetAllowlist { allowlist: Allowlist, reply: oneshot::Sender<()> },
    Peers { reply: oneshot::Sender<Vec<PeerId>> },
    ListenAddrs { reply: oneshot::Sender<Vec<Multiaddr>> },
    Shutdown,
}

/// Starts the network. Returns once every listen address is bound.
pub struct Network;

impl Network {
    /// Builds the swarm, binds the listeners, dials the configured peers and
    /// spawns the swarm task on the current tokio runtime.
    pub async fn start(config: NetConfig) -> Result<(NetworkHandle, mpsc::Receiver<NetEvent>), NetError> {
        config.check()?;
        let limits = config.limits.clone();
        let local_peer_id = keypair(&config.identity).public().to_peer_id();
        let (commands_tx, commands_rx) = mpsc::channel(limits.commands_max);
        let (events_tx, events_rx) = mpsc::channel(limits.events_max);
        let actor = actor::Actor::new(config, events_tx).await?;
        tokio::spawn(actor.run(commands_rx));
        Ok((NetworkHandle { commands: commands_tx, local_peer_id, limits }, events_rx))
    }
}

/// Talks to the swarm task. Cheap to clone; the task stops when every handle is dropped or on [`Self::shutdown`].
#[derive(Clone, Debug)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    limits: Limits,
}

impl NetworkHandle {
    /// Commands waiting for the network task (publishes, requests, answers).
    pub fn commands_queued(&self) -> usize {
        self.commands.max_capacity() - self.commands.capacity()
    }

    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Publishes `data` on `topic` to every subscribed peer.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetError> {
        if data.len() > self.limits.gossip_bytes_max {
            return Err(NetError::GossipTooLarge { got: data.len(), max: self.limits.gossip_bytes_max });
        }
        self.ask(|reply| Command::Publish { topic, data, reply }).await?
    }

    /// Reports the verdict on a received gossip message; only [`Verdict::Accept`] relays it.
    pub async fn report(&self, id: GossipId, verdict: Verdict) -> Result<(), NetError> {
        self.commands.send(Command::Report { id, verdict }).await.map_err(|_| NetError::Stopped)
    }

    /// Sends a sync request to a connected peer and waits for its response (at most `request_timeout_ms`).
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, NetError> {
        if data.len() > self.limits.request_bytes_max {
            return Err(NetError::RequestTooLarge { got: data.len(), max: self.limits.request_bytes_max });
        }
        self.ask(|reply| Command::Request { peer, data, reply }).await?
    }

    /// Answers a [`NetEvent::Request`]. A response over the limit is not sent, and the request fails at the requester.
    pub async fn respond(&self, channel: ResponseChannel, data: Vec<u8>) -> Result<(), NetError> {
        if data.len() > self.limits.response_bytes_max {
            return Err(NetError::ResponseTooLarge { got: data.len(), max: self.limits.response_bytes_max });
        }
        self.ask(|reply| Command::Respond { channel, data, reply }).await?
    }

    /// Replaces the allowlist and closes every connection to a peer it no longer admits.
    pub async fn set_allowlist(&self, allowlist: Allowlist) -> Result<(), NetError> {
        self.ask(|reply| Command::SetAllowlist { allowlist, reply }).await
    }

    /// The peers connected now.
    pub async fn peers(&self) -> Result<Vec<PeerId>, NetError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// The addresses the node listens on (with the actual ports when `tcp/0` was asked for).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }

    /// Stops the swarm task, closing every connection.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.commands.send(Command::Shutdown).await.map_err(|_| NetError::Stopped)
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| NetError::Stopped)?;
        answer.await.map_err(|_| NetError::Stopped)
    }
}

pub(crate) fn duration_ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a genesis `p2p_key` names the same peer as the libp2p identity derived from that key file's seed.
    #[test]
    fn p2p_key_and_identity_agree() {
        for n in 0..8u8 {
            let key = SecretKey::from_seed([n; 32]);
            assert_eq!(peer_id(&key.public()).unwrap(), keypair(&key).public().to_peer_id());
        }
        let other = SecretKey::from_seed([99; 32]);
        assert_ne!(peer_id(&other.public()).unwrap(), keypair(&SecretKey::from_seed([98; 32])).public().to_peer_id());
    }

    /// Goal: a limit or timer the network cannot run with is refused by name, and the defaults pass.
    #[test]
    fn config_is_checked() {
        let config = || NetConfig::new("c", SecretKey::from_seed([1; 32]), Allowlist::default());
        config().check().unwrap();
        let mut c = config();
        c.limits.events_max = 0;
        assert!(matches!(c.check(), Err(NetError::Config { name: "events_max", value: 0, .. })));
        let mut c = config();
        c.limits.response_bytes_max = u32::MAX as usize + 1;
        assert!(matches!(c.check(), Err(NetError::Config { name: "response_bytes_max", .. })));
        let mut c = config();
        c.timing.redial_max_ms = c.timing.redial_min_ms - 1;
        assert!(matches!(c.check(), Err(NetError::Config { name: "redial_max_ms", .. })));
    }

    /// Goal: the allowlist of the documented genesis holds every validator's p2p key plus the observers, and nothing else.
    #[test]
    fn allowlist_from_genesis() {
        let genesis = Genesis::from_json(include_str!("../../genesis/example.json")).unwrap();
        let observer = SecretKey::from_seed([7; 32]).public();
        let list = Allowlist::from_genesis(&genesis, &[observer]).unwrap();
        assert_eq!(list.len(), genesis.validators.len() + 1);
        for v in &genesis.validators {
            assert!(list.contains(&peer_id(&v.p2p_key).unwrap()));
            assert!(!list.contains(&peer_id(&v.consensus_key).unwrap()), "consensus keys are not p2p identities");
        }
        assert!(list.contains(&peer_id(&observer).unwrap()));
    }
}
