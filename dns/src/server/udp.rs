//! One UDP worker: a batch of queries in, their replies out, with buffers allocated once.
//!
//! ```text
//!  Linux:  recvmmsg (blocks for the first datagram only: MSG_WAITFORONE, up to UDP_BATCH)
//!            └► answer each query into its own reply buffer (drops leave no gap)
//!                 └► sendmmsg (every reply of the batch to its own peer)
//!  elsewhere, or if the kernel refuses recvmmsg/sendmmsg: recv_from ► answer ► send_to
//! ```

use std::{net::UdpSocket, time::Instant};

use arc_swap::ArcSwap;
use tracing::debug;

use crate::{
    handler::{Outcome, Transport, answer},
    metrics::Metrics,
    zone::Zone,
};

/// Datagrams one batch receives at most.
pub const UDP_BATCH: usize = 64;
/// Receive buffer per datagram; longer queries are cut (as a single `recv_from` would cut them).
const MAX_QUERY: usize = 4096;
/// Initial capacity of each reply buffer; a bigger reply grows it once and for all.
const REPLY_CAPACITY: usize = 4096;

/// One UDP worker's buffers and batch state, reused for every batch: serving allocates nothing
/// per query.
///
/// [`serve`](crate::serve) runs one per worker thread; tests can drive one directly.
pub struct UdpWorker {
    buffers: Buffers,
    /// `recvmmsg`/`sendmmsg` state; `None` once the kernel refused them.
    #[cfg(target_os = "linux")]
    mmsg: Option<mmsg::Mmsg>,
}

impl std::fmt::Debug for UdpWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpWorker")
            .field("batched", &self.batched())
            .finish_non_exhaustive()
    }
}

impl Default for UdpWorker {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpWorker {
    /// A worker with its buffers allocated.
    pub fn new() -> Self {
        Self {
            buffers: Buffers::new(),
            #[cfg(target_os = "linux")]
            mmsg: Some(mmsg::Mmsg::new()),
        }
    }

    /// A worker that never batches: one `recv_from` and one `send_to` per query, the path taken
    /// where `recvmmsg`/`sendmmsg` are missing (kept reachable for tests and comparisons).
    pub fn one_per_call() -> Self {
        Self {
            buffers: Buffers::new(),
            #[cfg(target_os = "linux")]
            mmsg: None,
        }
    }

    /// Whether this worker receives and sends in batches (`recvmmsg`/`sendmmsg`).
    pub fn batched(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.mmsg.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Waits for queries on `socket` (no longer than its read timeout), answers every one already
    /// queued (up to [`UDP_BATCH`]) from the current zone, sends the replies, and returns how many
    /// datagrams it received. Errors are logged at debug level and count as 0 datagrams: a worker
    /// keeps serving whatever a peer does.
    pub fn serve_batch(
        &mut self,
        socket: &UdpSocket,
        zone: &ArcSwap<Zone>,
        metrics: &Metrics,
        slot: usize,
    ) -> usize {
        let b = &mut self.buffers;
        #[cfg(target_os = "linux")]
        if let Some(m) = &mut self.mmsg {
            let received = match m.receive(socket, &mut b.queries, &mut b.lens) {
                Ok(n) => n,
                Err(mmsg::Refused) => {
                    debug!("recvmmsg refused by the kernel: one datagram per system call from now on");
                    self.mmsg = None;
                    return 0;
                }
            };
            let replies = b.answer(received, &zone.load(), metrics, slot);
            if m.send(socket, &b.replies[..replies], &b.reply_of[..replies])
                .is_err()
            {
                debug!("sendmmsg refused by the kernel: one datagram per system call from now on");
                self.mmsg = None;
            }
            return received;
        }
        // The portable path: one `recv_from`, one `send_to`.
        let (len, peer) = match socket.recv_from(&mut b.queries[..MAX_QUERY]) {
            Ok(r) => r,
            Err(error) => {
                // Timeouts wake the worker to look at its shutdown token; ICMP errors from
                // earlier sends (connection refused) surface here too: keep serving.
                if !is_wakeup(&error) {
                    debug!(%error, "UDP receive");
                }
                return 0;
            }
        };
        b.lens[0] = len;
        if b.answer(1, &zone.load(), metrics, slot) == 1
            && let Err(error) = socket.send_to(&b.replies[0], peer)
        {
            debug!(%error, %peer, "UDP send");
        }
        1
    }
}

/// Queries in, replies out, for one batch.
struct Buffers {
    /// `UDP_BATCH` receive buffers of `MAX_QUERY` bytes, back to back.
    queries: Box<[u8]>,
    /// Length of each received query.
    lens: [usize; UDP_BATCH],
    /// One reply buffer per datagram of a batch; replies are packed to the front.
    replies: Box<[Vec<u8>]>,
    /// For reply `r`, the index of the datagram it answers.
    reply_of: [usize; UDP_BATCH],
}

impl Buffers {
    fn new() -> Self {
        Self {
            queries: vec![0; UDP_BATCH * MAX_QUERY].into_boxed_slice(),
            lens: [0; UDP_BATCH],
            replies: (0..UDP_BATCH)
                .map(|_| Vec::with_capacity(REPLY_CAPACITY))
                .collect(),
            reply_of: [0; UDP_BATCH],
        }
    }

    /// Answers the first `received` queries; replies go to the front of `self.replies` and
    /// `self.reply_of` says which query each answers. Returns the number of replies.
    fn answer(&mut self, received: usize, zone: &Zone, metrics: &Metrics, slot: usize) -> usize {
        let mut replies = 0;
        let mut start = Instant::now();
        for (i, &len) in self.lens[..received].iter().enumerate() {
            let query = &self.queries[i * MAX_QUERY..i * MAX_QUERY + len];
            let outcome = answer(zone, query, Transport::Udp, &mut self.replies[replies]);
            // One clock read per query: the end of one answer starts the next.
            let end = Instant::now();
            metrics.record(slot, outcome, end - start);
            start = end;
            if let Outcome::Reply { .. } = outcome {
                self.reply_of[replies] = i;
                replies += 1;
            }
        }
        replies
    }
}

/// Errors that only mean "nothing to read yet".
fn is_wakeup(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    matches!(error.kind(), WouldBlock | TimedOut | Interrupted)
}

#[cfg(target_os = "linux")]
mod mmsg {
    //! `recvmmsg`/`sendmmsg` through nix: its `MultiHeaders` are allocated once per worker.

    use std::{
        io::{IoSlice, IoSliceMut},
        net::UdpSocket,
        os::fd::AsRawFd,
    };

    use nix::{
        errno::Errno,
        sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendto},
    };
    use tracing::debug;

    use super::{MAX_QUERY, UDP_BATCH};

    /// The kernel does not offer the call (old kernel, seccomp filter, emulation layer).
    #[derive(Debug)]
    pub(super) struct Refused;

    fn refused(errno: Errno) -> bool {
        matches!(
            errno,
            Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EPERM | Errno::EINVAL
        )
    }

    /// Headers for both calls, and the peer of every datagram of the batch.
    ///
    /// Receive and send need their own `MultiHeaders`: `sendmmsg` points its headers' names at
    /// the caller's addresses, which `recvmmsg` must never write into. The receive headers are
    /// reused as they are: the kernel sets each header's name length to the address it wrote,
    /// and on one socket every peer address has the same length (an IPv6 socket reports IPv4
    /// peers as mapped IPv6 addresses), so no later address is cut short.
    #[derive(Debug)]
    pub(super) struct Mmsg {
        recv: MultiHeaders<SockaddrStorage>,
        send: MultiHeaders<SockaddrStorage>,
        /// Source address of each received datagram.
        peers: Box<[Option<SockaddrStorage>]>,
        /// Destination of each reply (the peer of the datagram it answers).
        dest: Box<[Option<SockaddrStorage>]>,
    }

    impl Mmsg {
        pub(super) fn new() -> Self {
            Self {
                recv: MultiHeaders::preallocate(UDP_BATCH, None),
                send: MultiHeaders::preallocate(UDP_BATCH, None),
                peers: vec![None; UDP_BATCH].into_boxed_slice(),
                dest: vec![None; UDP_BATCH].into_boxed_slice(),
            }
        }

        /// Receives up to `UDP_BATCH` datagrams into the `MAX_QUERY` chunks of `queries`:
        /// blocks (up to the socket's read timeout) for the first, then takes only what is
        /// already queued. Returns how many arrived; their lengths go to `lens`.
        pub(super) fn receive(
            &mut self,
            socket: &UdpSocket,
            queries: &mut [u8],
            lens: &mut [usize; UDP_BATCH],
        ) -> Result<usize, Refused> {
            let mut chunks = queries.chunks_exact_mut(MAX_QUERY);
            let mut iovs: [[IoSliceMut<'_>; 1]; UDP_BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let results = match recvmmsg(
                socket.as_raw_fd(),
                &mut self.recv,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => results,
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(0),
                Err(errno) if refused(errno) => return Err(Refused),
                Err(errno) => {
                    // ICMP errors from earlier sends (connection refused) surface here.
                    debug!(error = %errno, "UDP receive");
                    return Ok(0);
                }
            };
            let mut received = 0;
            for (i, msg) in results.enumerate() {
                lens[i] = msg.bytes;
                self.peers[i] = msg.address;
                received = i + 1;
            }
            Ok(received)
        }

        /// Sends `replies[r]` to the peer of datagram `reply_of[r]`, all in as few `sendmmsg`
        /// calls as the kernel allows. A reply the kernel rejects is logged and skipped.
        pub(super) fn send(
            &mut self,
            socket: &UdpSocket,
            replies: &[Vec<u8>],
            reply_of: &[usize],
        ) -> Result<(), Refused> {
            let count = replies.len();
            for (dest, &i) in self.dest.iter_mut().zip(reply_of) {
                *dest = self.peers[i];
            }
            let iovs: [[IoSlice<'_>; 1]; UDP_BATCH] =
                std::array::from_fn(|r| [IoSlice::new(replies.get(r).map_or(&[], Vec::as_slice))]);
            let fd = socket.as_raw_fd();
            let mut sent = 0;
            while sent < count {
                match sendmmsg(
                    fd,
                    &mut self.send,
                    &iovs[sent..count],
                    &self.dest[sent..count],
                    [],
                    MsgFlags::empty(),
                ) {
                    Ok(results) => sent += results.count().max(1),
                    Err(Errno::EINTR) => {}
                    Err(Errno::ENOSYS) => {
                        // No sendmmsg: this batch's replies go one by one, later batches too.
                        for (reply, dest) in replies[sent..].iter().zip(&self.dest[sent..count]) {
                            if let Some(dest) = dest
                                && let Err(errno) = sendto(fd, reply, dest, MsgFlags::empty())
                            {
                                debug!(error = %errno, peer = %dest, "UDP send");
                            }
                        }
                        return Err(Refused);
                    }
                    Err(errno) => {
                        // This reply cannot go (e.g. a peer the firewall rejects): skip it.
                        debug!(error = %errno, peer = ?self.dest[sent], "UDP send");
                        sent += 1;
                    }
                }
            }
            Ok(())
        }
    }
}
