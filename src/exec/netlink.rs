//! Just enough rtnetlink to add an address, a policy rule and a route, and to list rules.
//!
//! Hand-rolled on nix's netlink sockets instead of a netlink crate: the messages are a few
//! fixed-layout headers plus attributes, and the async stacks (rtnetlink/tokio) would cost more
//! binary than this whole tool. The runtime image needs no `ip` binary.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_DELROUTE: u16 = 25;
pub(crate) const RTM_NEWRULE: u16 = 32;
pub(crate) const RTM_DELRULE: u16 = 33;
pub(crate) const RTM_GETRULE: u16 = 34;
/// nfnetlink: subsystem nf_tables (10) in the high byte, NFT_MSG_GETTABLE (1) / NEWTABLE (0).
pub(crate) const NFT_MSG_GETTABLE: u16 = 10 << 8 | 1;
pub(crate) const NFT_MSG_NEWTABLE: u16 = 10 << 8;

// The netlink header (`include/uapi/linux/netlink.h`), shared with the nf_tables batch in
// `crate::nftnl::wire`.
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const HEADER_LEN: usize = 16;
/// Dumps interrupted by a concurrent change are retried this often, as upstream does.
const DUMP_ATTEMPTS: usize = 5;

/// Netlink messages and attributes are padded to 4 bytes.
pub(crate) fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A request body: a fixed family header followed by attributes.
#[derive(Debug, Default)]
pub(crate) struct Message {
    bytes: Vec<u8>,
}

impl Message {
    pub(crate) fn new(header: &[u8]) -> Message {
        let mut bytes = header.to_vec();
        bytes.resize(align(bytes.len()), 0);
        Message { bytes }
    }

    pub(crate) fn attr(mut self, kind: u16, data: &[u8]) -> Message {
        let len = 4 + data.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes.resize(align(self.bytes.len()), 0);
        self
    }

    pub(crate) fn attr_u32(self, kind: u16, value: u32) -> Message {
        self.attr(kind, &value.to_ne_bytes())
    }

    #[cfg(test)]
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// One received message: its type and body (family header and attributes).
#[derive(Debug)]
pub(crate) struct Reply {
    pub kind: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// Attributes after a family header of `header_len` bytes, as (type, data).
    pub(crate) fn attrs(&self, header_len: usize) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        let mut at = align(header_len);
        while at + 4 <= self.body.len() {
            let len = usize::from(u16::from_ne_bytes([self.body[at], self.body[at + 1]]));
            let kind = u16::from_ne_bytes([self.body[at + 2], self.body[at + 3]]) & 0x3fff;
            if len < 4 || at + len > self.body.len() {
                break;
            }
            out.push((kind, &self.body[at + 4..at + len]));
            at += align(len);
        }
        out
    }
}

pub(crate) fn read_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// A NETLINK_ROUTE socket in the current network namespace.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub(crate) fn open() -> Result<Socket, Errno> {
        Socket::open_protocol(SockProtocol::NetlinkRoute)
    }

    /// A NETLINK_NETFILTER socket (nf_tables) in the current network namespace.
    pub(crate) fn open_netfilter() -> Result<Socket, Errno> {
        Socket::open_protocol(SockProtocol::NetlinkNetFilter)
    }

    fn open_protocol(protocol: SockProtocol) -> Result<Socket, Errno> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Socket { fd, seq: 0 })
    }

    fn send(&mut self, kind: u16, flags: u16, message: &Message) -> Result<u32, Errno> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = Vec::with_capacity(HEADER_LEN + message.bytes.len());
        packet.extend_from_slice(&((HEADER_LEN + message.bytes.len()) as u32).to_ne_bytes());
        packet.extend_from_slice(&kind.to_ne_bytes());
        packet.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        packet.extend_from_slice(&self.seq.to_ne_bytes());
        packet.extend_from_slice(&0u32.to_ne_bytes());
        packet.extend_from_slice(&message.bytes);
        send(self.fd.as_raw_fd(), &packet, MsgFlags::empty())?;
        Ok(self.seq)
    }

    /// Creates an object (`NLM_F_CREATE | NLM_F_EXCL`) and waits for the kernel's answer;
    /// `EEXIST` comes back as an error for the caller to judge.
    pub(crate) fn create(&mut self, kind: u16, message: &Message) -> Result<(), Errno> {
        self.acknowledged(kind, NLM_F_CREATE | NLM_F_EXCL, message)
    }

    /// Sends a request that changes nothing if it fails (a delete) and waits for the answer.
    pub(crate) fn request(&mut self, kind: u16, message: &Message) -> Result<(), Errno> {
        self.acknowledged(kind, 0, message)
    }

    fn acknowledged(&mut self, kind: u16, flags: u16, message: &Message) -> Result<(), Errno> {
        let seq = self.send(kind, NLM_F_ACK | flags, message)?;
        loop {
            for reply in self.receive(seq)? {
                if reply.kind == NLMSG_ERROR {
                    return match read_u32(&reply.body).map(|code| code as i32) {
                        Some(0) => Ok(()),
                        Some(code) => Err(Errno::from_raw(-code)),
                        None => Err(Errno::EPROTO),
                    };
                }
            }
        }
    }

    /// Lists objects (`NLM_F_DUMP`), retrying a dump that a concurrent change interrupted.
    pub(crate) fn dump(&mut self, kind: u16, message: &Message) -> Result<Vec<Reply>, Errno> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.send(kind, NLM_F_DUMP, message)?;
            let mut replies = Vec::new();
            let mut interrupted = false;
            'receive: loop {
                for (reply, flags) in self.receive_with_flags(seq)? {
                    interrupted |= flags & NLM_F_DUMP_INTR != 0;
                    match reply.kind {
                        NLMSG_DONE => break 'receive,
                        NLMSG_ERROR => match read_u32(&reply.body).map(|code| code as i32) {
                            Some(0) => {}
                            Some(code) => return Err(Errno::from_raw(-code)),
                            None => return Err(Errno::EPROTO),
                        },
                        _ => replies.push(reply),
                    }
                }
            }
            if !interrupted {
                return Ok(replies);
            }
        }
        Err(Errno::EINTR)
    }

    fn receive(&mut self, seq: u32) -> Result<Vec<Reply>, Errno> {
        Ok(self.receive_with_flags(seq)?.into_iter().map(|(reply, _)| reply).collect())
    }

    /// One datagram's messages that answer `seq`.
    fn receive_with_flags(&mut self, seq: u32) -> Result<Vec<(Reply, u16)>, Errno> {
        let mut buffer = vec![0u8; 64 * 1024];
        let len = recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
        let mut out = Vec::new();
        let mut at = 0;
        while at + HEADER_LEN <= len {
            let field = |offset: usize| [buffer[at + offset], buffer[at + offset + 1]];
            let msg_len = read_u32(&buffer[at..]).unwrap_or(0) as usize;
            if msg_len < HEADER_LEN || at + msg_len > len {
                return Err(Errno::EPROTO);
            }
            let kind = u16::from_ne_bytes(field(4));
            let flags = u16::from_ne_bytes(field(6));
            let msg_seq = read_u32(&buffer[at + 8..]).unwrap_or(0);
            if msg_seq == seq {
                out.push((Reply { kind, body: buffer[at + HEADER_LEN..at + msg_len].to_vec() }, flags));
            }
            at += align(msg_len);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding() {
        let message = Message::new(&[1, 2, 3]).attr(7, &[9, 9, 9, 9, 9]).attr_u32(15, 133);
        // 3-byte header padded to 4; a 5-byte attribute padded to 12 bytes in all.
        assert_eq!(message.bytes.len(), 4 + 12 + 8);
        let reply = Reply { kind: RTM_NEWRULE, body: message.bytes };
        let attrs = reply.attrs(3);
        assert_eq!(attrs, vec![(7, &[9u8, 9, 9, 9, 9][..]), (15, &133u32.to_ne_bytes()[..])]);
    }
}
