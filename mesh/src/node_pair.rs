//! The node's side of pairing: the code holder's window and the initiator's two steps,
//! driving the sans-IO exchange in [`crate::pair`] over `/loopsy/pair/1`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::{Multiaddr, PeerId};
use tracing::{info, warn};

use crate::node::{NodeError, PairTicket, PeerView, Reply};
use crate::node_task::{NodeTask, now_unix};
use crate::pair::{self, Initiator, PairError, StartReply, Window};
use crate::trust::{Capability, TrustedPeer};
use crate::wire::{PairRequest, PairResponse};

/// After the last attempt is used, how long to wait for its finish before closing.
const EXHAUSTED_GRACE: Duration = Duration::from_secs(15);

enum Step {
    Started(Initiator),
    Finishing(String),
}

struct Outgoing {
    peer: PeerId,
    step: Step,
    reply: Reply<PeerView>,
}

/// Pairing state owned by the node task.
#[derive(Default)]
pub(crate) struct PairState {
    window: Option<Window>,
    names: HashMap<PeerId, String>,
    waiters: Vec<Reply<PeerView>>,
    exhausted_at: Option<Instant>,
    outgoing: HashMap<OutboundRequestId, Outgoing>,
}

impl PairState {
    pub(crate) fn is_open(&self) -> bool {
        self.window.is_some()
    }
}

impl NodeTask {
    pub(crate) fn pair_open(&mut self, ttl: Duration) -> PairTicket {
        let code = pair::new_code();
        self.pairing.window = Some(Window::new(code.clone(), ttl));
        self.pairing.names.clear();
        self.pairing.exhausted_at = None;
        info!(ttl_s = ttl.as_secs(), "pairing window open");
        PairTicket {
            code,
            expires_in_s: ttl.as_secs(),
            peer_id: self.me().to_string(),
            addrs: self.listen_addr_strings(),
        }
    }

    pub(crate) fn pair_wait(&mut self, r: Reply<PeerView>) {
        if self.pairing.window.is_none() {
            let _ = r.send(Err(PairError::NotOpen.into()));
            return;
        }
        self.pairing.waiters.push(r);
    }

    /// Close the window, telling every waiter `outcome`.
    fn pair_finish_window(&mut self, outcome: Result<PeerView, PairError>) {
        self.pairing.window = None;
        self.pairing.names.clear();
        self.pairing.exhausted_at = None;
        for w in self.pairing.waiters.drain(..) {
            let _ = w.send(outcome.clone().map_err(NodeError::from));
        }
        // Untrusted peers that connected for this window go now.
        let stray: Vec<PeerId> = self
            .nat
            .links
            .keys()
            .filter(|p| !self.trusted(p) && !self.pair_peers.contains(p))
            .copied()
            .collect();
        for p in stray {
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    pub(crate) fn pair_close(&mut self) {
        if self.pairing.window.is_some() {
            info!("pairing window closed");
            self.pair_finish_window(Err(PairError::NotOpen));
        }
    }

    /// When [`Self::pair_tick`] has work: every tick while a pairing window is open.
    pub(crate) fn pair_due(&self) -> Option<Instant> {
        self.pairing.window.as_ref().map(|_| Instant::now())
    }

    pub(crate) fn pair_tick(&mut self) {
        let Some(w) = &self.pairing.window else {
            return;
        };
        match w.check_open() {
            Err(PairError::Expired) => self.pair_finish_window(Err(PairError::Expired)),
            Err(PairError::TooManyAttempts)
                if self
                    .pairing
                    .exhausted_at
                    .is_some_and(|t| t.elapsed() > EXHAUSTED_GRACE) =>
            {
                self.pair_finish_window(Err(PairError::TooManyAttempts))
            }
            _ => {}
        }
    }

    /// Trust `peer` under a unique version of `wanted`, with every capability.
    fn pair_store(&mut self, peer: PeerId, wanted: &str) -> Result<PeerView, NodeError> {
        // A machine paired here takes its name from one that was only introduced (an
        // introduction must not shadow a machine the user pairs with by name).
        let pid = peer.to_string();
        if let Some(holder) = self
            .trust
            .peers
            .iter()
            .find(|(id, p)| p.name == wanted && !p.paired_here() && **id != pid)
            .map(|(id, _)| id.clone())
        {
            let other =
                self.trust
                    .unique_name(&format!("{wanted}-introduced"), &self.cfg.name, &holder);
            if let Some(h) = self.trust.peers.get_mut(&holder) {
                info!(peer = %holder, from = %h.name, to = %other, "an introduced peer gives its name up to a paired one");
                h.name = other;
            }
        }
        let name = self
            .trust
            .unique_name(wanted, &self.cfg.name, &peer.to_string());
        let mut addrs = Vec::new();
        if let Some(c) = self.best_link(&peer)
            && !c.relayed
        {
            addrs.push(
                c.addr
                    .clone()
                    .with_p2p(peer)
                    .unwrap_or_else(|a| a)
                    .to_string(),
            );
        }
        self.trust.peers.insert(
            peer.to_string(),
            TrustedPeer {
                name,
                caps: Capability::ALL.to_vec(),
                paired_at: now_unix(),
                addrs,
                introduced_by: None,
                vouchers: Default::default(),
                ceiling_set_here: false,
            },
        );
        self.trust.removed.remove(&peer.to_string());
        self.trust.removals.retain(|r| r.peer != pid);
        self.save_trust()?;
        self.pair_peers.remove(&peer);
        self.inbox_maybe_ready(peer);
        // N machines need N-1 pairings: saving told our members about the newcomer; tell it
        // about our pairings.
        self.introduce_all_to(peer);
        self.view(&peer)
            .ok_or_else(|| NodeError::UnknownPeer(peer.to_string()))
    }

    fn refuse(e: &PairError) -> PairResponse {
        PairResponse::Refused {
            code: e.code().into(),
            message: e.to_string(),
        }
    }

    /// The code holder's answer to an initiator's message.
    fn pair_request(&mut self, peer: PeerId, req: PairRequest) -> PairResponse {
        let me = self.me();
        let my_name = self.cfg.name.clone();
        let Some(w) = self.pairing.window.as_mut() else {
            return Self::refuse(&PairError::NotOpen);
        };
        match req {
            PairRequest::Start { spake, name } => {
                if let Err(e) = crate::config::validate_name(&name) {
                    return Self::refuse(&PairError::Malformed(e));
                }
                let r = w.on_start(&me, &peer, &spake, &my_name, &name);
                if w.attempts_left() == 0 && self.pairing.exhausted_at.is_none() {
                    self.pairing.exhausted_at = Some(Instant::now());
                }
                match r {
                    Ok(StartReply { spake, confirm }) => {
                        self.pairing.names.insert(peer, name);
                        PairResponse::Started {
                            spake,
                            confirm,
                            name: my_name,
                        }
                    }
                    Err(e) => {
                        warn!(%peer, error = %e, "pairing start refused");
                        Self::refuse(&e)
                    }
                }
            }
            PairRequest::Abort => {
                w.on_abort(&peer);
                warn!(%peer, "pairing attempt failed: wrong code");
                if w.attempts_left() == 0 {
                    self.pair_finish_window(Err(PairError::TooManyAttempts));
                }
                Self::refuse(&PairError::WrongCode)
            }
            PairRequest::Finish { confirm } => match w.on_finish(&peer, &confirm) {
                Ok(()) => {
                    let wanted = self
                        .pairing
                        .names
                        .remove(&peer)
                        .unwrap_or_else(|| "peer".into());
                    match self.pair_store(peer, &wanted) {
                        Ok(view) => {
                            info!(%peer, name = %view.name, "paired");
                            self.pair_finish_window(Ok(view));
                            PairResponse::Paired {
                                caps: Capability::ALL.to_vec(),
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot save the new peer");
                            Self::refuse(&PairError::Malformed(
                                "the other machine could not save the pairing".into(),
                            ))
                        }
                    }
                }
                Err(e) => {
                    warn!(%peer, error = %e, "pairing finish refused");
                    let resp = Self::refuse(&e);
                    if w.attempts_left() == 0 {
                        self.pair_finish_window(Err(PairError::TooManyAttempts));
                    }
                    resp
                }
            },
        }
    }

    pub(crate) fn pair_with(&mut self, addr: Multiaddr, code: String, r: Reply<PeerView>) {
        let code = match pair::normalize_code(&code) {
            Ok(c) => c,
            Err(e) => {
                let _ = r.send(Err(e.into()));
                return;
            }
        };
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            let _ = r.send(Err(NodeError::BadAddress(format!(
                "{addr} does not end in /p2p/<peer id>; use an address `loopsy pair` printed"
            ))));
            return;
        };
        if peer == self.me() {
            let _ = r.send(Err(NodeError::BadAddress(
                "that is this machine's own address".into(),
            )));
            return;
        }
        if let Some(v) = self.view(&peer) {
            let _ = r.send(Err(NodeError::AlreadyPaired(v.name)));
            return;
        }
        let mut dial_addr = addr.clone();
        dial_addr.pop();
        if dial_addr.is_empty() {
            // A bare PeerId: use what mDNS found on the LAN.
            let Some(found) = self.discovered(&peer) else {
                let _ = r.send(Err(NodeError::BadAddress(format!(
                    "{peer} has not been seen on the LAN (mDNS) yet; give its full address from `loopsy pair`"
                ))));
                return;
            };
            for a in found {
                self.swarm.add_peer_address(peer, a);
            }
        } else {
            self.swarm.add_peer_address(peer, dial_addr);
        }
        self.pair_peers.insert(peer);
        let (init, msg) = Initiator::start(&self.me(), &peer, &code);
        let req = PairRequest::Start {
            spake: msg,
            name: self.cfg.name.clone(),
        };
        let id = self.swarm.behaviour_mut().pair.send_request(&peer, req);
        self.pairing.outgoing.insert(
            id,
            Outgoing {
                peer,
                step: Step::Started(init),
                reply: r,
            },
        );
    }

    fn pair_fail(&mut self, o: Outgoing, e: NodeError) {
        self.pair_peers.remove(&o.peer);
        if !self.trusted(&o.peer) {
            let _ = self.swarm.disconnect_peer_id(o.peer);
        }
        let _ = o.reply.send(Err(e));
    }

    /// The initiator's handling of the code holder's answers.
    fn pair_response(&mut self, id: OutboundRequestId, resp: PairResponse) {
        let Some(o) = self.pairing.outgoing.remove(&id) else {
            return;
        };
        match (o.step, resp) {
            (_, PairResponse::Refused { code, message }) => {
                let e = PairError::from_code(&code, &message);
                self.pair_fail(
                    Outgoing {
                        peer: o.peer,
                        step: Step::Finishing(String::new()),
                        reply: o.reply,
                    },
                    e.into(),
                );
            }
            (
                Step::Started(init),
                PairResponse::Started {
                    spake,
                    confirm,
                    name,
                },
            ) => {
                let reply = StartReply { spake, confirm };
                match init.on_reply(&reply, &self.cfg.name, &name) {
                    Ok(proof) => {
                        let id = self
                            .swarm
                            .behaviour_mut()
                            .pair
                            .send_request(&o.peer, PairRequest::Finish { confirm: proof });
                        self.pairing.outgoing.insert(
                            id,
                            Outgoing {
                                peer: o.peer,
                                step: Step::Finishing(name),
                                reply: o.reply,
                            },
                        );
                    }
                    Err(e) => {
                        // Tell the code holder (so its attempt count is final now) without
                        // sending anything derived from our key; the connection stays up
                        // until the abort is delivered (the holder closes it, or it idles out).
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .pair
                            .send_request(&o.peer, PairRequest::Abort);
                        self.pair_peers.remove(&o.peer);
                        let _ = o.reply.send(Err(e.into()));
                    }
                }
            }
            (Step::Finishing(name), PairResponse::Paired { .. }) => {
                let res = crate::config::validate_name(&name)
                    .map_err(NodeError::BadName)
                    .and_then(|()| self.pair_store(o.peer, &name));
                if let Ok(v) = &res {
                    info!(peer = %o.peer, name = %v.name, "paired");
                }
                let _ = o.reply.send(res);
            }
            (step, _) => {
                self.pair_fail(
                    Outgoing {
                        peer: o.peer,
                        step,
                        reply: o.reply,
                    },
                    PairError::Malformed("unexpected pairing reply".into()).into(),
                );
            }
        }
    }

    pub(crate) fn pair_event(&mut self, e: request_response::Event<PairRequest, PairResponse>) {
        use request_response::{Event, Message};
        match e {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let resp = self.pair_request(peer, request);
                let _ = self.swarm.behaviour_mut().pair.send_response(channel, resp);
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.pair_response(request_id, response),
            Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some(o) = self.pairing.outgoing.remove(&request_id) {
                    let e = match error {
                        // An untrusted connection is closed at once unless a window is open
                        // (TCP reports a closed connection, QUIC a lost one).
                        request_response::OutboundFailure::ConnectionClosed
                        | request_response::OutboundFailure::Io(_) => PairError::NotOpen.into(),
                        other => NodeError::Unreachable {
                            peer: peer.to_string(),
                            reason: other.to_string(),
                        },
                    };
                    self.pair_fail(o, e);
                }
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }
}
