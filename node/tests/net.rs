//! The network layer over real TCP sockets on 127.0.0.1, ephemeral ports.

// `Node::expect`'s picker hands a skipped event back by value in `Err`; its size does not matter here.
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use annal_ledger::keys::{PublicKey, SecretKey};
use annal_node::net::{
    Allowlist, Multiaddr, NetConfig, NetError, NetEvent, Network, NetworkHandle, PeerId, Topic, Verdict,
};
use tokio::sync::mpsc;

const CHAIN: &str = "annal-net-test";
const WAIT: Duration = Duration::from_secs(10);

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn allowlist(admitted: &[u8]) -> Allowlist {
    let keys: Vec<PublicKey> = admitted.iter().map(|&n| key(n).public()).collect();
    Allowlist::new(&keys).unwrap()
}

/// Node `n` (key seed `[n; 32]`) admitting the nodes in `admitted` and dialling `peers`.
fn config(n: u8, admitted: &[u8], peers: &[&Node]) -> NetConfig {
    let mut config = NetConfig::new(CHAIN, key(n), allowlist(admitted));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.peers = peers.iter().map(|p| p.addr.clone()).collect();
    config.timing.gossip_heartbeat_ms = 100;
    config.timing.redial_min_ms = 100;
    config.timing.redial_max_ms = 500;
    config
}

struct Node {
    handle: NetworkHandle,
    events: mpsc::Receiver<NetEvent>,
    addr: Multiaddr,
    peer: PeerId,
    /// Events that [`Node::expect`] skipped.
    skipped: Vec<NetEvent>,
}

async fn start(config: NetConfig) -> Node {
    let (handle, events) = Network::start(config).await.unwrap();
    let addrs = handle.listen_addrs().await.unwrap();
    assert_eq!(addrs.len(), 1, "one listener on 127.0.0.1: {addrs:?}");
    let peer = handle.local_peer_id();
    Node { handle, events, addr: addrs[0].clone(), peer, skipped: Vec::new() }
}

impl Node {
    /// The first event that `pick` takes (`Ok`), keeping the others in `skipped`; panics after [`WAIT`].
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(NetEvent) -> Result<T, NetEvent>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => match pick(event) {
                    Ok(found) => return found,
                    Err(other) => self.skipped.push(other),
                },
                Ok(None) => panic!("{what}: the network stopped"),
                Err(_) => panic!("{what}: not seen within {WAIT:?}"),
            }
        }
    }

    /// Every event that arrives within `period`.
    async fn events_for(&mut self, period: Duration) -> Vec<NetEvent> {
        let deadline = tokio::time::Instant::now() + period;
        let mut seen = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            seen.push(event);
        }
        seen
    }

    async fn subscribed(&mut self, peers: &[PeerId]) {
        for peer in peers {
            self.expect("subscription", |e| match e {
                NetEvent::PeerSubscribed { peer: p, topic: Topic::Records } if p == *peer => Ok(()),
                other => Err(other),
            })
            .await;
        }
    }

    async fn connected(&mut self, peer: PeerId) {
        self.expect("connection", |e| match e {
            NetEvent::PeerConnected { peer: p } if p == peer => Ok(()),
            other => Err(other),
        })
        .await;
    }

    async fn disconnected(&mut self, peer: PeerId) {
        self.expect("disconnection", |e| match e {
            NetEvent::PeerDisconnected { peer: p } if p == peer => Ok(()),
            other => Err(other),
        })
        .await;
    }

    /// The next gossip message whose data is `data`; returns the peer that relayed it and its id.
    async fn gossip(&mut self, data: &[u8]) -> (PeerId, annal_node::net::GossipId) {
        self.expect("gossip", |e| match e {
            NetEvent::Gossip { topic: Topic::Records, from, id, data: d } if d == data => Ok((from, id)),
            other => Err(other),
        })
        .await
    }
}

fn gossip_data(events: &[NetEvent]) -> Vec<&[u8]> {
    events
        .iter()
        .filter_map(|e| match e {
            NetEvent::Gossip { data, .. } => Some(data.as_slice()),
            _ => None,
        })
        .collect()
}

fn mentions(event: &NetEvent, peer: PeerId) -> bool {
    match event {
        NetEvent::Gossip { from, .. } => *from == peer,
        NetEvent::Request { from, .. } => *from == peer,
        NetEvent::PeerConnected { peer: p } | NetEvent::PeerDisconnected { peer: p } => *p == peer,
        NetEvent::PeerSubscribed { peer: p, .. } => *p == peer,
    }
}

/// Goal: in a line A–B–C of admitted nodes, A's gossip reaches C only after B reports Accept, and a message B rejects never reaches C.
#[tokio::test]
async fn gossip_is_relayed_only_after_accept() {
    let all = [1, 2, 3];
    let mut b = start(config(2, &all, &[])).await;
    let mut a = start(config(1, &all, &[&b])).await;
    let mut c = start(config(3, &all, &[&b])).await;
    b.subscribed(&[a.peer, c.peer]).await;
    a.subscribed(&[b.peer]).await;
    c.subscribed(&[b.peer]).await;
    // A few heartbeats for B to graft A and C into its mesh.
    tokio::time::sleep(Duration::from_millis(600)).await;

    a.handle.publish(Topic::Records, b"first".to_vec()).await.unwrap();
    let (from, id) = b.gossip(b"first").await;
    assert_eq!(from, a.peer);
    let held = c.events_for(Duration::from_millis(800)).await;
    assert!(gossip_data(&held).is_empty(), "C got gossip before B validated it: {held:?}");
    b.handle.report(id, Verdict::Accept).await.unwrap();
    let (from, _) = c.gossip(b"first").await;
    assert_eq!(from, b.peer, "C hears A's message through B");

    a.handle.publish(Topic::Records, b"second".to_vec()).await.unwrap();
    let (_, id) = b.gossip(b"second").await;
    b.handle.report(id, Verdict::Reject).await.unwrap();
    a.handle.publish(Topic::Records, b"third".to_vec()).await.unwrap();
    let (_, id) = b.gossip(b"third").await;
    b.handle.report(id, Verdict::Accept).await.unwrap();
    let next = c.expect("next gossip", |e| match e {
        NetEvent::Gossip { data, .. } => Ok(data),
        other => Err(other),
    });
    assert_eq!(next.await, b"third", "the rejected message was relayed");
    let later = c.events_for(Duration::from_millis(800)).await;
    assert!(gossip_data(&later).is_empty(), "C got more gossip: {later:?}");
    // Publishing the same data again is a duplicate (message id = SHA-256 of the data).
    let dup = a.handle.publish(Topic::Records, b"first".to_vec()).await;
    assert!(matches!(dup, Err(NetError::Publish { .. })), "{dup:?}");
}

/// Goal: a sync request and its response round-trip at exactly their limits; one byte over a limit fails, whether the sender or the receiver enforces it.
#[tokio::test]
async fn sync_request_response_is_bounded() {
    let mut b_config = config(2, &[1, 2], &[]);
    b_config.limits.request_bytes_max = 100;
    b_config.limits.response_bytes_max = 200;
    let mut b = start(b_config).await;
    let mut a_config = config(1, &[1, 2], &[&b]);
    a_config.limits.request_bytes_max = 1000;
    a_config.limits.response_bytes_max = 150;
    a_config.limits.request_timeout_ms = 5_000;
    let mut a = start(a_config).await;
    a.connected(b.peer).await;
    b.connected(a.peer).await;

    // The request is at B's limit, the response at A's.
    let (_, response) = exchange(&a, &mut b, vec![1; 100], vec![2; 150]).await;
    assert_eq!(response.unwrap(), vec![2; 150]);

    // One byte over B's request limit: A sends it, B's reader refuses it before the application sees it.
    let started = Instant::now();
    let err = a.handle.request(b.peer, vec![1; 101]).await.unwrap_err();
    assert!(matches!(err, NetError::RequestFailed { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "failed by the limit, not the timeout");
    let seen = b.events_for(Duration::from_millis(300)).await;
    assert!(!seen.iter().any(|e| matches!(e, NetEvent::Request { .. })), "{seen:?}");

    // One byte over A's own request limit: refused before sending.
    let err = a.handle.request(b.peer, vec![1; 1001]).await.unwrap_err();
    assert!(matches!(err, NetError::RequestTooLarge { got: 1001, max: 1000 }), "{err:?}");

    // One byte over A's response limit (within B's): B sends it, A's reader refuses it.
    let started = Instant::now();
    let (respond, response) = exchange(&a, &mut b, vec![1], vec![2; 151]).await;
    respond.unwrap();
    assert!(matches!(response, Err(NetError::RequestFailed { .. })), "{response:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "failed by the limit, not the timeout");

    // One byte over B's own response limit: refused before sending, and A's request fails.
    let (respond, response) = exchange(&a, &mut b, vec![1], vec![2; 201]).await;
    assert!(matches!(respond, Err(NetError::ResponseTooLarge { got: 201, max: 200 })), "{respond:?}");
    assert!(matches!(response, Err(NetError::RequestFailed { .. })), "{response:?}");
}

/// A sends `request` to B, B answers `response`; returns B's respond result and A's request result.
async fn exchange(
    a: &Node,
    b: &mut Node,
    request: Vec<u8>,
    response: Vec<u8>,
) -> (Result<(), NetError>, Result<Vec<u8>, NetError>) {
    let (handle, peer, sent) = (a.handle.clone(), b.peer, request.clone());
    let pending = tokio::spawn(async move { handle.request(peer, sent).await });
    let (from, data, channel) = b
        .expect("request", |e| match e {
            NetEvent::Request { from, data, channel } => Ok((from, data, channel)),
            other => Err(other),
        })
        .await;
    assert_eq!((from, data), (a.peer, request));
    let responded = b.handle.respond(channel, response).await;
    (responded, pending.await.unwrap())
}

/// Goal: a node whose key is outside the allowlist cannot join: its connections are refused, it receives no gossip, admitted nodes never list it; admitting it later lets it in.
#[tokio::test]
async fn node_outside_the_allowlist_cannot_join() {
    let mut a = start(config(1, &[1, 2], &[])).await;
    let mut b = start(config(2, &[1, 2], &[&a])).await;
    // The outsider would admit them, and keeps dialling both.
    let mut outsider = start(config(9, &[1, 2, 9], &[&a, &b])).await;
    a.subscribed(&[b.peer]).await;
    b.subscribed(&[a.peer]).await;

    for round in 0..5u8 {
        let data = vec![round; 8];
        a.handle.publish(Topic::Records, data.clone()).await.unwrap();
        let (_, id) = b.gossip(&data).await;
        b.handle.report(id, Verdict::Accept).await.unwrap();
        let more = a.events_for(Duration::from_millis(300)).await;
        a.skipped.extend(more);
        for node in [&a, &b] {
            let peers = node.handle.peers().await.unwrap();
            assert!(!peers.contains(&outsider.peer), "round {round}: {} lists the outsider: {peers:?}", node.peer);
        }
    }
    let more = b.events_for(Duration::from_millis(10)).await;
    b.skipped.extend(more);
    for node in [&a, &b] {
        let about: Vec<_> = node.skipped.iter().filter(|e| mentions(e, outsider.peer)).collect();
        assert!(about.is_empty(), "{} saw the outsider: {about:?}", node.peer);
    }
    let got = outsider.events_for(Duration::from_millis(10)).await;
    assert!(gossip_data(&got).is_empty(), "the outsider received gossip: {got:?}");
    assert!(got.iter().all(|e| !matches!(e, NetEvent::Request { .. })), "{got:?}");

    // Control: once admitted, the same node (still dialling) gets in.
    a.handle.set_allowlist(allowlist(&[1, 2, 9])).await.unwrap();
    a.connected(outsider.peer).await;
}

/// Goal: replacing the allowlist closes the connection to a peer it no longer admits, and that peer cannot reconnect.
#[tokio::test]
async fn replacing_the_allowlist_disconnects_removed_peers() {
    let all = [1, 2, 3];
    let mut a = start(config(1, &all, &[])).await;
    let mut b = start(config(2, &all, &[&a])).await;
    let mut c = start(config(3, &all, &[&a])).await;
    a.connected(b.peer).await;
    a.connected(c.peer).await;
    b.connected(a.peer).await;
    c.connected(a.peer).await;

    a.handle.set_allowlist(allowlist(&[1, 2])).await.unwrap();
    a.disconnected(c.peer).await;
    c.disconnected(a.peer).await;

    // C keeps redialling (every ≤ 500 ms); A keeps refusing it and keeps B.
    let seen = a.events_for(Duration::from_millis(1500)).await;
    let about: Vec<_> = seen.iter().filter(|e| mentions(e, c.peer)).collect();
    assert!(about.is_empty(), "C came back: {about:?}");
    assert_eq!(a.handle.peers().await.unwrap(), vec![b.peer]);
}

/// Goal: gossip data is bounded: one byte over the sender's limit is refused at publish, and one byte over the receiver's limit never reaches its application.
#[tokio::test]
async fn gossip_is_bounded() {
    let mut b_config = config(2, &[1, 2], &[]);
    b_config.limits.gossip_bytes_max = 1000;
    let mut b = start(b_config).await;
    let mut a_config = config(1, &[1, 2], &[&b]);
    a_config.limits.gossip_bytes_max = 2000;
    let mut a = start(a_config).await;
    a.subscribed(&[b.peer]).await;
    b.subscribed(&[a.peer]).await;

    let err = a.handle.publish(Topic::Records, vec![0; 2001]).await.unwrap_err();
    assert!(matches!(err, NetError::GossipTooLarge { got: 2001, max: 2000 }), "{err:?}");

    a.handle.publish(Topic::Records, vec![1; 1001]).await.unwrap();
    a.handle.publish(Topic::Records, vec![2; 1000]).await.unwrap();
    let (_, _) = b.gossip(&[2; 1000]).await;
    let sizes: Vec<usize> = gossip_data(&b.skipped).iter().map(|d| d.len()).collect();
    assert!(sizes.is_empty(), "B's application saw gossip over its limit of 1000 bytes: sizes {sizes:?}");
}

/// Goal: a configured peer that goes away is dialled again, with back-off, until it is back.
#[tokio::test]
async fn dropped_peer_is_redialled() {
    let a = start(config(1, &[1, 2], &[])).await;
    let mut b = start(config(2, &[1, 2], &[&a])).await;
    b.connected(a.peer).await;

    let Node { handle, mut events, addr, peer, .. } = a;
    handle.shutdown().await.unwrap();
    while events.recv().await.is_some() {} // the task has stopped and closed its listener
    b.disconnected(peer).await;
    // Away for several redial periods.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut again = config(1, &[1, 2], &[]);
    again.listen = vec![addr];
    let _a = start(again).await;
    b.connected(peer).await;
}
