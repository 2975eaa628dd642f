//! The Durable Object's splice rules: what to do with each socket event, as a list of
//! [`Action`]s the wasm adapter carries out. The relay routes on frame headers only; payloads
//! are end-to-end ciphertext it cannot read.
//!
//! Sockets are told apart by their hibernation tags (which survive eviction): the daemon's is
//! `device`; each phone connection is `phone`, `p:<phone id>`, `c:<channel>`.

use crate::frame::{Frame, FrameKind, MAX_PAYLOAD};

/// Tag of the daemon's socket.
pub const DEVICE_TAG: &str = "device";
/// Tag every phone socket carries.
pub const PHONE_TAG: &str = "phone";
/// Most live connections one phone may hold (one per open terminal view, plus a spare).
pub const MAX_CHANNELS_PER_PHONE: usize = 8;
/// Most phone connections one device may have at once.
pub const MAX_CHANNELS: usize = 64;
/// The one text message a phone may send: answered by the runtime without waking the object.
pub const PING: &str = "ping";
/// The runtime's answer to [`PING`].
pub const PONG: &str = "pong";

/// WebSocket close codes the relay uses.
pub mod close {
    /// A newer daemon connection replaced this one.
    pub const REPLACED: u16 = 4001;
    /// The phone was revoked.
    pub const REVOKED: u16 = 4003;
    /// The daemon closed this channel.
    pub const CLOSED_BY_DEVICE: u16 = 4004;
    /// A frame the protocol does not allow.
    pub const PROTOCOL: u16 = 4400;
    /// A frame over the size limit.
    pub const TOO_LARGE: u16 = 1009;
}

/// Which socket an event came from, from its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socket {
    /// The daemon.
    Device,
    /// A phone connection.
    Phone {
        /// The phone.
        phone_id: String,
        /// Its channel number on the device link.
        channel: u32,
    },
}

/// The tag naming a phone.
pub fn phone_tag(phone_id: &str) -> String {
    format!("p:{phone_id}")
}

/// The tag naming a channel.
pub fn channel_tag(channel: u32) -> String {
    format!("c:{channel}")
}

/// Tags for a new phone socket.
pub fn phone_tags(phone_id: &str, channel: u32) -> Vec<String> {
    vec![
        PHONE_TAG.to_string(),
        phone_tag(phone_id),
        channel_tag(channel),
    ]
}

/// Which socket these tags describe.
pub fn socket_of(tags: &[String]) -> Option<Socket> {
    if tags.iter().any(|t| t == DEVICE_TAG) {
        return Some(Socket::Device);
    }
    let phone_id = tags.iter().find_map(|t| t.strip_prefix("p:"))?;
    let channel = tags
        .iter()
        .find_map(|t| t.strip_prefix("c:"))?
        .parse()
        .ok()?;
    Some(Socket::Phone {
        phone_id: phone_id.to_string(),
        channel,
    })
}

/// What the adapter must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a binary message to the daemon.
    ToDevice(Vec<u8>),
    /// Send a binary message to one phone connection.
    ToChannel(u32, Vec<u8>),
    /// Send a text notice to one phone connection.
    NoticeToChannel(u32, String),
    /// Send a text notice to every phone connection.
    NoticeToPhones(String),
    /// Close one phone connection.
    CloseChannel(u32, u16, String),
    /// Close every connection of a phone.
    ClosePhone(String, u16, String),
    /// Close the daemon's socket(s) (a newer one replaces them).
    CloseDevice(u16, String),
}

/// The JSON text notices phones get from the relay itself (not from the daemon).
pub fn notice(state: &str, message: &str) -> String {
    serde_json::json!({ "type": "relay", "state": state, "message": message }).to_string()
}

fn device_notice(kind: &str, field: &str, value: &str) -> Vec<u8> {
    let body = serde_json::json!({ "type": kind, field: value }).to_string();
    Frame::new(FrameKind::Notice, 0, body.into_bytes())
        .encode()
        .unwrap_or_default()
}

/// A notice telling the daemon it sent something the relay refused.
pub fn device_error(message: &str) -> Action {
    Action::ToDevice(device_notice("error", "message", message))
}

/// A notice telling the daemon a phone was revoked at the relay.
pub fn phone_revoked(phone_id: &str) -> Action {
    Action::ToDevice(device_notice("phone-revoked", "phone_id", phone_id))
}

/// A daemon connected (after authentication).
pub fn on_device_connect(already_connected: bool) -> Vec<Action> {
    let mut out = Vec::new();
    if already_connected {
        out.push(Action::CloseDevice(
            close::REPLACED,
            "replaced by a newer connection of this device".into(),
        ));
    }
    out.push(Action::NoticeToPhones(notice(
        "device-online",
        "the laptop is online",
    )));
    out
}

/// Tell the daemon about every phone connection that is already open (after it (re)connects).
pub fn announce_channels(open: &[(String, u32)]) -> Vec<Action> {
    open.iter()
        .filter_map(|(phone_id, ch)| {
            Frame::new(FrameKind::Open, *ch, phone_id.as_bytes().to_vec())
                .encode()
                .ok()
                .map(Action::ToDevice)
        })
        .collect()
}

/// Whether a phone may open another connection.
pub fn may_open_channel(phone_channels: usize, all_channels: usize) -> Result<(), String> {
    if phone_channels >= MAX_CHANNELS_PER_PHONE {
        return Err(format!(
            "this phone already has {MAX_CHANNELS_PER_PHONE} connections open; close one first"
        ));
    }
    if all_channels >= MAX_CHANNELS {
        return Err(format!(
            "the laptop already has {MAX_CHANNELS} phone connections open"
        ));
    }
    Ok(())
}

/// A phone connected on `channel` (after authentication). Its first message from the relay
/// always says whether the laptop is there: it starts its handshake on `device-online`.
pub fn on_phone_connect(phone_id: &str, channel: u32, device_online: bool) -> Vec<Action> {
    if device_online {
        let mut out = announce_channels(&[(phone_id.to_string(), channel)]);
        out.push(Action::NoticeToChannel(
            channel,
            notice("device-online", "the laptop is online"),
        ));
        out
    } else {
        vec![Action::NoticeToChannel(
            channel,
            notice(
                "device-offline",
                "the laptop is offline: it reconnects by itself when its daemon runs",
            ),
        )]
    }
}

/// The fast path for the common case: a well-formed `Data` frame from the daemon, as its
/// channel and payload (a view into `bytes`, so the adapter forwards without copying). Anything
/// else goes through [`on_device_binary`].
pub fn data_route(bytes: &[u8]) -> Option<(u32, &[u8])> {
    if bytes.len() > crate::frame::MAX_FRAME {
        return None;
    }
    let (header, payload) = bytes.split_first_chunk::<{ crate::frame::HEADER_LEN }>()?;
    (header[0] == FrameKind::Data as u8).then(|| {
        (
            u32::from_be_bytes([header[1], header[2], header[3], header[4]]),
            payload,
        )
    })
}

/// A binary message from the daemon.
pub fn on_device_binary(bytes: &[u8], channel_open: impl Fn(u32) -> bool) -> Vec<Action> {
    let frame = match Frame::decode(bytes) {
        Ok(f) => f,
        Err(e) => return vec![device_error(&format!("frame refused: {e}"))],
    };
    match frame.kind {
        FrameKind::Data if channel_open(frame.channel) => {
            vec![Action::ToChannel(frame.channel, frame.payload)]
        }
        FrameKind::Data => Frame::new(FrameKind::Close, frame.channel, b"no such channel".to_vec())
            .encode()
            .map(|b| vec![Action::ToDevice(b)])
            .unwrap_or_default(),
        FrameKind::Close => {
            let reason = String::from_utf8_lossy(&frame.payload)
                .chars()
                .take(100)
                .collect();
            vec![Action::CloseChannel(
                frame.channel,
                close::CLOSED_BY_DEVICE,
                reason,
            )]
        }
        FrameKind::Ping => Frame::new(FrameKind::Pong, 0, frame.payload)
            .encode()
            .map(|b| vec![Action::ToDevice(b)])
            .unwrap_or_default(),
        FrameKind::Pong => vec![],
        FrameKind::Open | FrameKind::Notice => vec![device_error(&format!(
            "frame kind {:?} is sent by the relay, not to it",
            frame.kind
        ))],
    }
}

/// A text message from the daemon: not part of the protocol.
pub fn on_device_text() -> Vec<Action> {
    vec![device_error(
        "text messages are not part of loopsy.v1: send binary frames",
    )]
}

/// A binary message from a phone: one ciphertext for the daemon.
pub fn on_phone_binary(channel: u32, bytes: Vec<u8>, device_online: bool) -> Vec<Action> {
    if bytes.len() > MAX_PAYLOAD {
        return vec![Action::CloseChannel(
            channel,
            close::TOO_LARGE,
            format!("message over {MAX_PAYLOAD} bytes"),
        )];
    }
    if !device_online {
        return vec![Action::NoticeToChannel(
            channel,
            notice("device-offline", "the laptop is offline; nothing was sent"),
        )];
    }
    Frame::new(FrameKind::Data, channel, bytes)
        .encode()
        .map(|b| vec![Action::ToDevice(b)])
        .unwrap_or_default()
}

/// A text message from a phone other than the auto-answered ping.
pub fn on_phone_text(channel: u32) -> Vec<Action> {
    vec![Action::CloseChannel(
        channel,
        close::PROTOCOL,
        "only binary messages and \"ping\" are allowed".into(),
    )]
}

/// A phone connection closed.
pub fn on_phone_close(channel: u32, device_online: bool) -> Vec<Action> {
    if !device_online {
        return vec![];
    }
    Frame::new(FrameKind::Close, channel, b"phone closed".to_vec())
        .encode()
        .map(|b| vec![Action::ToDevice(b)])
        .unwrap_or_default()
}

/// The daemon's socket closed and no other replaced it.
pub fn on_device_close() -> Vec<Action> {
    vec![Action::NoticeToPhones(notice(
        "device-offline",
        "the laptop went offline",
    ))]
}

/// A phone was revoked (by the device or by itself).
pub fn on_phone_revoked(phone_id: &str, device_online: bool) -> Vec<Action> {
    let mut out = vec![Action::ClosePhone(
        phone_id.to_string(),
        close::REVOKED,
        "this phone was revoked".into(),
    )];
    if device_online {
        out.push(phone_revoked(phone_id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(ch: u32, p: &[u8]) -> Vec<u8> {
        Frame::new(FrameKind::Data, ch, p.to_vec())
            .encode()
            .unwrap_or_default()
    }

    #[test]
    fn tags_roundtrip() {
        assert_eq!(socket_of(&[DEVICE_TAG.into()]), Some(Socket::Device));
        assert_eq!(
            socket_of(&phone_tags("abc", 7)),
            Some(Socket::Phone {
                phone_id: "abc".into(),
                channel: 7
            })
        );
        assert_eq!(socket_of(&["p:abc".into()]), None);
        assert_eq!(socket_of(&["p:abc".into(), "c:x".into()]), None);
    }

    #[test]
    fn data_fast_path() {
        assert_eq!(data_route(&data(9, b"ct")), Some((9, &b"ct"[..])));
        assert_eq!(data_route(&data(9, b"")), Some((9, &b""[..])));
        let close = Frame::new(FrameKind::Close, 9, vec![])
            .encode()
            .unwrap_or_default();
        assert_eq!(data_route(&close), None);
        assert_eq!(data_route(&[2, 0, 0]), None);
        assert_eq!(data_route(&vec![2; MAX_PAYLOAD + 100]), None);
    }

    #[test]
    fn device_frames() {
        let open = |c| c == 3;
        assert_eq!(
            on_device_binary(&data(3, b"ct"), open),
            vec![Action::ToChannel(3, b"ct".to_vec())]
        );
        // Unknown channel: the daemon is told it is closed.
        let a = on_device_binary(&data(4, b"ct"), open);
        assert!(
            matches!(&a[..], [Action::ToDevice(b)] if Frame::decode(b).map(|f| (f.kind, f.channel)) == Ok((FrameKind::Close, 4)))
        );
        // Garbage and unknown kinds: a clear notice, nothing forwarded.
        for bad in [vec![9u8, 0, 0, 0, 0], vec![1u8], vec![2; MAX_PAYLOAD + 100]] {
            let a = on_device_binary(&bad, open);
            assert!(
                matches!(&a[..], [Action::ToDevice(b)] if Frame::decode(b).map(|f| f.kind) == Ok(FrameKind::Notice)),
                "{a:?}"
            );
        }
        let open_frame = Frame::new(FrameKind::Open, 1, vec![])
            .encode()
            .unwrap_or_default();
        assert!(matches!(
            &on_device_binary(&open_frame, open)[..],
            [Action::ToDevice(_)]
        ));
        let close = Frame::new(FrameKind::Close, 3, b"bye".to_vec())
            .encode()
            .unwrap_or_default();
        assert_eq!(
            on_device_binary(&close, open),
            vec![Action::CloseChannel(
                3,
                close::CLOSED_BY_DEVICE,
                "bye".into()
            )]
        );
        let ping = Frame::new(FrameKind::Ping, 0, b"1".to_vec())
            .encode()
            .unwrap_or_default();
        assert!(
            matches!(&on_device_binary(&ping, open)[..], [Action::ToDevice(b)] if Frame::decode(b).map(|f| f.kind) == Ok(FrameKind::Pong))
        );
        assert!(matches!(&on_device_text()[..], [Action::ToDevice(_)]));
    }

    #[test]
    fn phone_frames() {
        assert_eq!(
            on_phone_binary(5, b"ct".to_vec(), true),
            vec![Action::ToDevice(data(5, b"ct"))]
        );
        assert!(
            matches!(&on_phone_binary(5, b"ct".to_vec(), false)[..], [Action::NoticeToChannel(5, n)] if n.contains("device-offline"))
        );
        assert!(matches!(
            &on_phone_binary(5, vec![0; MAX_PAYLOAD + 1], true)[..],
            [Action::CloseChannel(5, close::TOO_LARGE, _)]
        ));
        assert!(matches!(
            &on_phone_text(5)[..],
            [Action::CloseChannel(5, close::PROTOCOL, _)]
        ));
        assert!(matches!(
            &on_phone_close(5, true)[..],
            [Action::ToDevice(_)]
        ));
        assert!(on_phone_close(5, false).is_empty());
    }

    #[test]
    fn connects_and_limits() {
        assert_eq!(on_device_connect(false).len(), 1);
        assert!(matches!(
            on_device_connect(true)[0],
            Action::CloseDevice(close::REPLACED, _)
        ));
        assert!(
            matches!(&on_phone_connect("p", 2, true)[..], [Action::ToDevice(b), Action::NoticeToChannel(2, n)] if Frame::decode(b).map(|f| (f.kind, f.payload)) == Ok((FrameKind::Open, b"p".to_vec())) && n.contains("device-online"))
        );
        assert!(matches!(
            &on_phone_connect("p", 2, false)[..],
            [Action::NoticeToChannel(2, _)]
        ));
        assert!(may_open_channel(0, 0).is_ok());
        assert!(may_open_channel(MAX_CHANNELS_PER_PHONE, 0).is_err());
        assert!(may_open_channel(0, MAX_CHANNELS).is_err());
        assert_eq!(on_phone_revoked("p", true).len(), 2);
        assert_eq!(on_phone_revoked("p", false).len(), 1);
        assert_eq!(
            announce_channels(&[("a".into(), 1), ("b".into(), 2)]).len(),
            2
        );
    }
}
