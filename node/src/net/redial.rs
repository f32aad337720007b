//! Keeps the configured peers dialled: one slot per address, exponential
//! back-off after a failed dial or a short-lived connection. Pure state; the
//! swarm task performs the dials.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// A connection that lasted this long resets the back-off when it drops.
const STABLE: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum State {
    Waiting { due: Instant },
    Dialing(ConnectionId),
    Up { peer: PeerId, since: Instant },
}

#[derive(Debug)]
struct Slot {
    addr: Multiaddr,
    /// From the address's `/p2p/` suffix, else learnt from the first successful dial.
    peer: Option<PeerId>,
    state: State,
    backoff: Duration,
}

#[derive(Debug)]
pub struct Redial {
    slots: Vec<Slot>,
    min: Duration,
    max: Duration,
}

impl Redial {
    pub fn new(addrs: Vec<Multiaddr>, min: Duration, max: Duration, now: Instant) -> Self {
        assert!(min <= max && !min.is_zero(), "redial back-off must satisfy 0 < min <= max");
        let slots = addrs
            .into_iter()
            .map(|addr| {
                let peer = match addr.iter().last() {
                    Some(Protocol::P2p(peer)) => Some(peer),
                    _ => None,
                };
                Slot { addr, peer, state: State::Waiting { due: now }, backoff: min }
            })
            .collect();
        Redial { slots, min, max }
    }

    /// The addresses to dial now, by slot index. A slot whose peer is already
    /// connected (it dialled us) is marked up instead.
    pub fn due(&mut self, now: Instant, is_connected: impl Fn(&PeerId) -> bool) -> Vec<(usize, Multiaddr)> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let State::Waiting { due } = slot.state else { continue };
            if due > now {
                continue;
            }
            match slot.peer {
                Some(peer) if is_connected(&peer) => slot.state = State::Up { peer, since: now },
                _ => out.push((i, slot.addr.clone())),
            }
        }
        out
    }

    pub fn dialing(&mut self, slot: usize, connection: ConnectionId) {
        self.slots[slot].state = State::Dialing(connection);
    }

    /// The dial of `slot` could not even start.
    pub fn dial_refused(&mut self, slot: usize, now: Instant) {
        self.back_off(slot, now);
    }

    pub fn established(&mut self, connection: ConnectionId, peer: PeerId, now: Instant) {
        for slot in &mut self.slots {
            if matches!(slot.state, State::Dialing(c) if c == connection) {
                slot.peer = Some(peer);
                slot.state = State::Up { peer, since: now };
            }
        }
    }

    pub fn dial_failed(&mut self, connection: ConnectionId, now: Instant) {
        let failed: Vec<usize> = (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i].state, State::Dialing(c) if c == connection))
            .collect();
        for i in failed {
            self.back_off(i, now);
        }
    }

    /// The last connection to `peer` closed.
    pub fn disconnected(&mut self, peer: PeerId, now: Instant) {
        for i in 0..self.slots.len() {
            let State::Up { peer: p, since } = self.slots[i].state else { continue };
            if p != peer {
                continue;
            }
            if now.saturating_duration_since(since) >= STABLE {
                self.slots[i].backoff = self.min;
            }
            self.back_off(i, now);
        }
    }

    /// The earliest moment a slot becomes due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                State::Waiting { due } => Some(due),
                _ => None,
            })
            .min()
    }

    fn back_off(&mut self, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        slot.state = State::Waiting { due: now + slot.backoff };
        slot.backoff = (slot.backoff * 2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        crate::net::keypair(&annal_ledger::keys::SecretKey::from_seed([n; 32])).public().to_peer_id()
    }

    fn addr() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/1".parse().unwrap()
    }

    /// Goal: failed dials back off exponentially up to the cap, and a stable connection that drops resets the back-off.
    #[test]
    fn backoff_doubles_caps_and_resets() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Redial::new(vec![addr()], ms(100), ms(400), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for n in 0..4 {
            let due = r.due(now, |_| false);
            assert_eq!(due.len(), 1, "dial {n} is due");
            r.dialing(0, ConnectionId::new_unchecked(n));
            assert!(r.due(now, |_| false).is_empty(), "no second dial while one is in flight");
            r.dial_failed(ConnectionId::new_unchecked(n), now);
            let next = r.next_due().unwrap();
            waits.push(next - now);
            assert!(r.due(next - ms(1), |_| false).is_empty(), "not due before its back-off");
            now = next;
        }
        assert_eq!(waits, vec![ms(100), ms(200), ms(400), ms(400)]);

        let peer = peer(1);
        assert_eq!(r.due(now, |_| false).len(), 1);
        r.dialing(0, ConnectionId::new_unchecked(9));
        r.established(ConnectionId::new_unchecked(9), peer, now);
        assert_eq!(r.next_due(), None);
        r.disconnected(peer, now + STABLE);
        assert_eq!(r.next_due(), Some(now + STABLE + ms(100)));
    }

    /// Goal: a slot whose peer already connected to us is not dialled again.
    #[test]
    fn connected_peer_is_not_redialled() {
        let t0 = Instant::now();
        let mut r = Redial::new(vec![addr()], Duration::from_millis(10), Duration::from_millis(10), t0);
        let peer = peer(2);
        r.due(t0, |_| false);
        r.dialing(0, ConnectionId::new_unchecked(1));
        r.established(ConnectionId::new_unchecked(1), peer, t0);
        r.disconnected(peer, t0);
        let later = t0 + Duration::from_millis(10);
        assert!(r.due(later, |p| *p == peer).is_empty());
        assert_eq!(r.next_due(), None, "the slot is up again");
    }
}
