//! The in-memory "socket" each OpenSSL session reads and writes.
//!
//! DTLS needs datagram semantics from its BIO: every read returns exactly one
//! whole datagram, every write is exactly one datagram. The shared UDP socket
//! lives elsewhere; the server pushes a peer's datagram in, drives OpenSSL,
//! and takes whatever OpenSSL wrote out to send it to that peer.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Datagrams queued at most in each direction. OpenSSL is driven after
/// every datagram in, so more than a couple only accumulate if something is
/// wrong; the bound keeps a misbehaving session from holding memory.
const MAX_QUEUED: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Pipe {
    inbound: VecDeque<Vec<u8>>,
    outbound: Vec<Vec<u8>>,
}

impl Pipe {
    /// Queues a datagram for OpenSSL to read; false if the queue is full.
    pub fn push(&mut self, datagram: &[u8]) -> bool {
        if self.inbound.len() >= MAX_QUEUED {
            return false;
        }
        self.inbound.push_back(datagram.to_vec());
        true
    }

    /// Moves the datagrams OpenSSL wrote into `out`.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<Vec<u8>>) {
        out.append(&mut self.outbound);
    }

    /// Forgets anything queued either way.
    pub(crate) fn clear(&mut self) {
        self.inbound.clear();
        self.outbound.clear();
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.inbound.pop_front() else {
            // Tells OpenSSL "retry later", the non-blocking socket contract.
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // A datagram longer than the buffer is truncated, as a UDP socket
        // would; OpenSSL reads DTLS with a buffer larger than any record.
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outbound.len() >= MAX_QUEUED {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outbound.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_whole_datagrams() {
        let mut p = Pipe::default();
        let mut buf = [0u8; 8];
        assert_eq!(
            p.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(p.push(b"abc"));
        assert!(p.push(b"de"));
        assert_eq!(p.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(p.read(&mut buf).unwrap(), 2);
        p.write_all(b"x").unwrap();
        p.write_all(b"yz").unwrap();
        let mut out = Vec::new();
        p.drain_into(&mut out);
        assert_eq!(out, vec![b"x".to_vec(), b"yz".to_vec()]);
    }

    #[test]
    fn queues_are_bounded() {
        let mut p = Pipe::default();
        for _ in 0..MAX_QUEUED {
            assert!(p.push(b"x"));
        }
        assert!(!p.push(b"x"));
    }
}
