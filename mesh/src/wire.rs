//! Every message loopsy peers exchange, in one place. Serde types carried as CBOR by
//! request-response; the codec caps sizes before it allocates.

use serde::{Deserialize, Serialize};

use crate::trust::Capability;

/// The pairing protocol (the only one open to untrusted peers, and only while a window is open).
pub const PAIR_PROTOCOL: &str = "/loopsy/pair/1";
/// Tool calls between trusted peers.
pub const RPC_PROTOCOL: &str = "/loopsy/rpc/1";
/// Largest pairing message.
pub const MAX_PAIR_MSG: u64 = 4 * 1024;
/// Largest RPC request.
pub const MAX_RPC_REQUEST: u64 = 1024 * 1024;
/// Largest RPC response (job output pages stay well under it).
pub const MAX_RPC_RESPONSE: u64 = 16 * 1024 * 1024;

/// Initiator → code holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairRequest {
    /// SPAKE2 message and the initiator's name.
    Start {
        /// SPAKE2 message.
        #[serde(with = "serde_bytes_vec")]
        spake: Vec<u8>,
        /// Initiator's friendly name.
        name: String,
    },
    /// The initiator's check of the responder's proof failed (a wrong code): no key material
    /// is sent, so a fake responder cannot test guesses offline.
    Abort,
    /// Proof that the initiator derived the same key.
    Finish {
        /// HMAC over the transcript.
        #[serde(with = "serde_bytes_vec")]
        confirm: Vec<u8>,
    },
}

/// Code holder → initiator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairResponse {
    /// Reply to `Start`.
    Started {
        /// SPAKE2 message.
        #[serde(with = "serde_bytes_vec")]
        spake: Vec<u8>,
        /// HMAC over the transcript.
        #[serde(with = "serde_bytes_vec")]
        confirm: Vec<u8>,
        /// Responder's friendly name.
        name: String,
    },
    /// Reply to a valid `Finish`: paired, with what the initiator may do on the responder.
    Paired {
        /// Granted capabilities.
        caps: Vec<Capability>,
    },
    /// Refused.
    Refused {
        /// Stable code (`PairError::code`).
        code: String,
        /// Explanation.
        message: String,
    },
}

/// A tool call forwarded to a peer: the same handler runs there under the peer's own policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Tool name (`loopsy_execute`, …).
    pub tool: String,
    /// Its arguments, as JSON text (without `peer`).
    pub args: String,
}

/// Membership between trusted members: introductions and signed removals.
pub const MEMBERS_PROTOCOL: &str = "/loopsy/members/1";
/// Largest membership message.
pub const MAX_MEMBERS_MSG: u64 = 512 * 1024;
/// Most peers in one introduction, or removals in one message.
pub const MAX_INTRODUCTIONS: usize = 256;

/// One peer a trusted member vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    /// Its PeerId.
    pub peer_id: String,
    /// Its name at the introducer.
    pub name: String,
    /// Where to reach it.
    pub addrs: Vec<String>,
    /// What the introducer grants it now. Empty: the introducer no longer vouches for it.
    pub caps: Vec<Capability>,
}

/// "`peer` is out of the mesh", signed by the member that removed it, so any member can pass
/// it on and every member can check who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The removed PeerId.
    pub peer: String,
    /// The member that removed it (its PeerId; the key that signed).
    pub by: String,
    /// Unix time of the removal, on the remover's clock.
    pub at: u64,
    /// Ed25519 signature by `by` over [`Removal::signed_bytes`].
    #[serde(with = "serde_bytes_vec")]
    pub sig: Vec<u8>,
}

/// Most parts one complete introduction list may take (every peer a trust file holds).
pub const MAX_PARTS: u16 = 8;

/// One part of a complete introduction list sent in several messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    /// Random per list: a new round from the same member starts over.
    pub round: u64,
    /// This part's index, from 0.
    pub index: u16,
    /// How many parts the list has (1..=[`MAX_PARTS`]).
    pub count: u16,
}

/// A membership message from a trusted member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembersRequest {
    /// Peers the sender vouches for (or, with no capabilities, no longer vouches for).
    Introduce {
        /// The peers.
        intros: Vec<Introduction>,
        /// This is every peer the sender vouches for: any other it vouched for before, it
        /// no longer does (sent when two members meet, so one that was offline catches up).
        complete: bool,
        /// A complete list too long for one message: which part this is. The list counts as
        /// complete once every part of the round has arrived, in any order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parts: Option<Parts>,
    },
    /// Signed removals the sender knows.
    Remove(Vec<Removal>),
}

/// The answer to a [`MembersRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembersResponse {
    /// Read: how many entries changed something here, how many were refused.
    Done {
        /// Entries applied.
        applied: u32,
        /// Entries refused (limits, authority, bad signature).
        refused: u32,
    },
    /// The sender is not trusted here (yet: right after pairing, the other side may not
    /// have stored its side; the sender tries again a few times).
    Denied,
    /// The sender is trusted here but may not introduce (no `introduce`): not retried.
    NotAllowed,
    /// The sender sent too many membership messages lately.
    Limited,
}

/// The answer to an [`RpcRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RpcResponse {
    /// The MCP `CallToolResult`, as JSON text.
    Result(String),
    /// The caller is not trusted here.
    Denied,
    /// The peer cannot serve calls now (shutting down).
    Unavailable,
}

/// Byte vectors as CBOR byte strings, not arrays of integers.
pub(crate) mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            // Self-describing formats without a bytes type (JSON) write a list of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut v = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = a.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug>(v: T) {
        let mut buf = Vec::new();
        ciborium::into_writer(&v, &mut buf).unwrap_or_else(|e| panic!("{e}"));
        let back: T = ciborium::from_reader(&buf[..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, v);
    }

    #[test]
    fn messages_roundtrip() {
        roundtrip(PairRequest::Start {
            spake: vec![1; 33],
            name: "kai".into(),
        });
        roundtrip(PairRequest::Finish {
            confirm: vec![2; 32],
        });
        roundtrip(PairResponse::Started {
            spake: vec![3; 33],
            confirm: vec![4; 32],
            name: "mac".into(),
        });
        roundtrip(PairResponse::Paired {
            caps: Capability::ALL.to_vec(),
        });
        roundtrip(PairResponse::Refused {
            code: "wrong_code".into(),
            message: "no".into(),
        });
        roundtrip(RpcRequest {
            tool: "loopsy_execute".into(),
            args: "{\"command\":\"true\"}".into(),
        });
        roundtrip(RpcResponse::Result("{}".into()));
        roundtrip(RpcResponse::Denied);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\xff\xff",
            b"\xa1\x00",
            &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(ciborium::from_reader::<RpcRequest, _>(bytes).is_err());
            assert!(ciborium::from_reader::<PairRequest, _>(bytes).is_err());
        }
    }
}
