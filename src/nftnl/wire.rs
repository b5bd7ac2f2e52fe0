//! nfnetlink on the wire: attributes, messages, one atomic batch with every ack collected, and
//! dumps. Byte layouts follow the kernel's `include/uapi/linux/netfilter/nf_tables.h` and
//! `nfnetlink.h`; numbers inside nf_tables attributes are big-endian.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;

use crate::exec::netlink::{align, HEADER_LEN, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
pub(crate) use crate::exec::netlink::{NLM_F_CREATE, NLM_F_EXCL};

pub(crate) const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
const NFGENMSG_LEN: usize = 4;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFPROTO_INET: u8 = 1;
const AF_UNSPEC: u8 = 0;

/// How long to wait for the kernel's answers before calling the batch lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A netlink attribute: raw bytes, or attributes nested inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attr {
    Bytes(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

impl Attr {
    pub(crate) fn be32(kind: u16, value: u32) -> Attr {
        Attr::Bytes(kind, value.to_be_bytes().to_vec())
    }

    /// A NUL-terminated string, as the kernel's `nla_strcmp`/`nla_strscpy` expect.
    pub(crate) fn string(kind: u16, value: &str) -> Attr {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        Attr::Bytes(kind, bytes)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        let kind = match self {
            Attr::Bytes(kind, data) => {
                out.extend_from_slice(data);
                *kind
            }
            Attr::Nested(kind, children) => {
                for child in children {
                    child.encode(out);
                }
                *kind | NLA_F_NESTED
            }
        };
        let len = (out.len() - start) as u16;
        out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&kind.to_ne_bytes());
        out.resize(align(out.len()), 0);
    }
}

/// Splits attribute bytes into (type without flag bits, payload).
pub(crate) fn parse_attrs(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > bytes.len() {
            break;
        }
        out.push((kind, &bytes[4..len]));
        bytes = bytes.get(align(len)..).unwrap_or_default();
    }
    out
}

pub(crate) fn find_attr(attrs: &[(u16, &[u8])], kind: u16) -> Option<Vec<u8>> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, data)| data.to_vec())
}

/// A NUL-terminated string attribute's text.
pub(crate) fn attr_string(data: &[u8]) -> String {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

pub(crate) fn attr_be32(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(..4)?.try_into().ok()?))
}

/// One nf_tables request: message type (`NFT_MSG_*`), extra flags and attributes.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub msg: u16,
    pub flags: u16,
    pub attrs: Vec<Attr>,
}

/// An answered message of a dump: its nf_tables message type and attribute bytes.
#[derive(Debug)]
pub(crate) struct Reply {
    pub attrs: Vec<u8>,
}

/// How the kernel answered one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Index into the requests of the batch.
    pub index: usize,
    pub errno: Errno,
}

/// Failures of the netlink conversation itself (not a refused message).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Open(#[source] Errno),
    #[error("netlink send failed: {0}")]
    Send(#[source] Errno),
    #[error("netlink receive failed: {0}")]
    Receive(#[source] Errno),
    #[error("the kernel refused the batch as a whole: {0}")]
    Batch(#[source] Errno),
    #[error("the kernel refused the dump request: {0}")]
    Dump(#[source] Errno),
    #[error("malformed netlink answer from the kernel")]
    Malformed,
}

/// A NETLINK_NETFILTER socket in the current network namespace.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
}

fn message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[Attr]) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // struct nfgenmsg: family, version (NFNETLINK_V0), resource id (big-endian).
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    for attr in attrs {
        attr.encode(out);
    }
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// One received netlink message.
struct Received {
    kind: u16,
    flags: u16,
    seq: u32,
    body: Vec<u8>,
}

impl Socket {
    pub(crate) fn open() -> Result<Socket, WireError> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)
            .map_err(WireError::Open)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(WireError::Open)?;
        let timeout = TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(WireError::Open)?;
        Ok(Socket { fd, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `requests` as one batch (`BATCH_BEGIN` … `BATCH_END`), each with `NLM_F_ACK`, and
    /// collects the kernel's answer to every one. The kernel commits all or nothing; the
    /// refusals name the messages it would not take.
    pub(crate) fn batch(&mut self, family: u8, requests: &[Request]) -> Result<Vec<Refusal>, WireError> {
        let mut packet = Vec::new();
        let begin = self.next_seq();
        message(&mut packet, NFNL_MSG_BATCH_BEGIN, 0, begin, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, &[]);
        let first = begin.wrapping_add(1);
        for request in requests {
            let seq = self.next_seq();
            message(
                &mut packet,
                NFNL_SUBSYS_NFTABLES << 8 | request.msg,
                request.flags | NLM_F_ACK,
                seq,
                family,
                0,
                &request.attrs,
            );
        }
        let end = self.next_seq();
        message(&mut packet, NFNL_MSG_BATCH_END, 0, end, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, &[]);
        self.fit_buffers(packet.len(), requests.len());
        send(self.fd.as_raw_fd(), &packet, MsgFlags::empty()).map_err(WireError::Send)?;

        let mut answered = vec![false; requests.len()];
        let mut refusals = Vec::new();
        while answered.iter().any(|done| !done) {
            for received in self.receive()? {
                if received.kind != NLMSG_ERROR {
                    continue;
                }
                let code = received.body.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                let code = code.ok_or(WireError::Malformed)?;
                if received.seq == begin || received.seq == end {
                    // The batch itself was refused (e.g. no CAP_NET_ADMIN): nothing else follows.
                    return Err(WireError::Batch(Errno::from_raw(-code)));
                }
                let index = received.seq.wrapping_sub(first) as usize;
                let Some(slot) = answered.get_mut(index) else { continue };
                *slot = true;
                if code != 0 {
                    refusals.push(Refusal { index, errno: Errno::from_raw(-code) });
                }
            }
        }
        Ok(refusals)
    }

    /// The whole batch must fit the send buffer (the kernel takes it as one datagram), and every
    /// ack must fit the receive buffer until read, or the kernel drops them (ENOBUFS). As root the
    /// `*FORCE` options lift the system limits; otherwise the plain ones get what they may.
    fn fit_buffers(&self, batch_len: usize, messages: usize) {
        const ACK_TRUESIZE: usize = 1024;
        let send_size = batch_len + 64 * 1024;
        let receive_size = messages * ACK_TRUESIZE + 64 * 1024;
        if setsockopt(&self.fd, sockopt::SndBufForce, &send_size).is_err() {
            let _ = setsockopt(&self.fd, sockopt::SndBuf, &send_size);
        }
        if setsockopt(&self.fd, sockopt::RcvBufForce, &receive_size).is_err() {
            let _ = setsockopt(&self.fd, sockopt::RcvBuf, &receive_size);
        }
    }

    /// Lists objects (`NLM_F_DUMP`) of message type `msg` (`NFT_MSG_GET*`).
    pub(crate) fn dump(&mut self, family: u8, msg: u16, attrs: &[Attr]) -> Result<Vec<Reply>, WireError> {
        let seq = self.next_seq();
        let mut packet = Vec::new();
        message(&mut packet, NFNL_SUBSYS_NFTABLES << 8 | msg, NLM_F_DUMP, seq, family, 0, attrs);
        send(self.fd.as_raw_fd(), &packet, MsgFlags::empty()).map_err(WireError::Send)?;
        let mut replies = Vec::new();
        loop {
            for received in self.receive()? {
                if received.seq != seq {
                    continue;
                }
                match received.kind {
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => {
                        let code = received.body.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        match code {
                            Some(0) => {}
                            Some(code) => return Err(WireError::Dump(Errno::from_raw(-code))),
                            None => return Err(WireError::Malformed),
                        }
                    }
                    _ => {
                        let attrs = received.body.get(NFGENMSG_LEN..).unwrap_or_default().to_vec();
                        replies.push(Reply { attrs });
                        if received.flags & NLM_F_MULTI == 0 {
                            return Ok(replies);
                        }
                    }
                }
            }
        }
    }

    /// The messages of one datagram.
    fn receive(&mut self) -> Result<Vec<Received>, WireError> {
        let mut buffer = vec![0u8; 256 * 1024];
        let len = recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::empty()).map_err(WireError::Receive)?;
        let mut out = Vec::new();
        let mut at = 0;
        while at + HEADER_LEN <= len {
            let word = |offset: usize| {
                u32::from_ne_bytes([
                    buffer[at + offset],
                    buffer[at + offset + 1],
                    buffer[at + offset + 2],
                    buffer[at + offset + 3],
                ])
            };
            let msg_len = word(0) as usize;
            if msg_len < HEADER_LEN || at + msg_len > len {
                return Err(WireError::Malformed);
            }
            let kind = u16::from_ne_bytes([buffer[at + 4], buffer[at + 5]]);
            let flags = u16::from_ne_bytes([buffer[at + 6], buffer[at + 7]]);
            let seq = word(8);
            out.push(Received { kind, flags, seq, body: buffer[at + HEADER_LEN..at + msg_len].to_vec() });
            at += align(msg_len);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_round_trip_with_padding_and_the_nested_flag() {
        let attr = Attr::Nested(4, vec![Attr::string(1, "lo"), Attr::be32(2, 7)]);
        let mut bytes = Vec::new();
        attr.encode(&mut bytes);
        // 4 (outer) + 8 ("lo\0" padded) + 8 (u32).
        assert_eq!(bytes.len(), 20);
        assert_eq!(u16::from_ne_bytes([bytes[2], bytes[3]]), 4 | NLA_F_NESTED);
        let outer = parse_attrs(&bytes);
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].0, 4);
        let inner = parse_attrs(outer[0].1);
        assert_eq!(attr_string(inner[0].1), "lo");
        assert_eq!(attr_be32(inner[1].1), Some(7));
    }

    #[test]
    fn batch_messages_carry_the_nftables_subsystem_and_family() {
        let mut bytes = Vec::new();
        message(&mut bytes, NFNL_SUBSYS_NFTABLES << 8, NLM_F_ACK, 9, NFPROTO_INET, 0, &[Attr::string(1, "t")]);
        assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 0x0a00);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), NLM_F_ACK | NLM_F_REQUEST);
        assert_eq!(&bytes[16..20], &[NFPROTO_INET, 0, 0, 0]);
    }
}
