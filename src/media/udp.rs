//! The media socket: large kernel buffers, batched receive (recvmmsg through quinn-udp) and
//! batched send (sendmmsg), so a worker makes a few syscalls per loop turn, not one per packet.

use bytes::BytesMut;
use quinn_udp::{RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};

/// Datagrams read per `recvmmsg`.
pub const RECV_BATCH: usize = 32;
/// Largest datagram we accept (a full-size Ethernet frame, with room).
pub const MAX_DATAGRAM: usize = 2048;

/// Binds a non-blocking UDP socket with the requested buffer sizes.
///
/// Returns the socket and, for each buffer the kernel capped below the request, a warning that
/// says how to raise the cap.
pub fn bind(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
) -> io::Result<(UdpSocket, Vec<String>)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    let mut warnings = Vec::new();
    // Failures to size buffers are not fatal: the node works, with more loss under bursts.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    let _ = socket.set_send_buffer_size(send_buffer);
    // Linux reports twice the size it grants (bookkeeping overhead).
    let got_recv = socket.recv_buffer_size().unwrap_or(0) / 2;
    let got_send = socket.send_buffer_size().unwrap_or(0) / 2;
    if got_recv < recv_buffer {
        warnings.push(format!(
            "media socket {addr}: receive buffer is {got_recv} bytes, {recv_buffer} requested; \
             joins in bursts may lose DTLS handshakes. Raise the cap: sysctl -w net.core.rmem_max={recv_buffer}"
        ));
    }
    if got_send < send_buffer {
        warnings.push(format!(
            "media socket {addr}: send buffer is {got_send} bytes, {send_buffer} requested; \
             fan-out bursts may be dropped. Raise the cap: sysctl -w net.core.wmem_max={send_buffer}"
        ));
    }
    socket.bind(&addr.into())?;
    Ok((socket.into(), warnings))
}

/// Receive buffers for one batch, reused every turn (no per-packet allocation).
pub struct RecvBatch {
    state: UdpSocketState,
    bufs: Vec<[u8; MAX_DATAGRAM]>,
    metas: Vec<RecvMeta>,
}

impl RecvBatch {
    pub fn new(socket: &UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(socket.into())?;
        // GRO would coalesce datagrams into one buffer; keep one datagram per buffer.
        Ok(Self {
            state,
            bufs: vec![[0u8; MAX_DATAGRAM]; RECV_BATCH],
            metas: vec![RecvMeta::default(); RECV_BATCH],
        })
    }

    /// Reads up to one batch. `Ok(n)`: n datagrams; `WouldBlock` when none are waiting.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let mut slices: [IoSliceMut<'_>; RECV_BATCH] = {
            let mut iter = self.bufs.iter_mut();
            std::array::from_fn(|_| {
                IoSliceMut::new(iter.next().map(|b| &mut b[..]).unwrap_or(&mut []))
            })
        };
        self.state.recv(socket.into(), &mut slices, &mut self.metas)
    }

    /// The i-th datagram of the last batch: (source, local ip it arrived on, bytes).
    /// A GRO-coalesced buffer is split by its stride.
    pub fn datagrams(
        &self,
        n: usize,
    ) -> impl Iterator<Item = (SocketAddr, Option<std::net::IpAddr>, &[u8])> {
        self.metas
            .iter()
            .zip(self.bufs.iter())
            .take(n)
            .flat_map(|(meta, buf)| {
                let data = &buf[..meta.len.min(MAX_DATAGRAM)];
                let stride = meta.stride.max(1);
                data.chunks(stride)
                    .map(move |chunk| (meta.addr, meta.dst_ip, chunk))
            })
    }
}

/// Outgoing datagrams of one loop turn, flushed with `sendmmsg`.
///
/// Consecutive datagrams to one destination go out as one UDP GSO message (`UDP_SEGMENT`) where
/// the kernel offers it: a subscriber's share of a receive batch (a keyframe's packets, a video
/// frame and the audio beside it) then costs the kernel one route lookup and one trip down the
/// IP stack instead of one per packet. The kernel cuts the message back into the same datagrams,
/// so a receiver sees exactly what it would have without it.
pub struct SendQueue {
    queue: Vec<(SocketAddr, BytesMut)>,
    /// One `sendmmsg` message per run of `queue`, rebuilt on each flush (capacity kept).
    runs: Vec<Run>,
    /// Most datagrams one GSO message may carry; 1 turns GSO off.
    max_segments: usize,
}

/// Datagrams `queue[start..start + count]`, one GSO message when `count > 1`: one destination,
/// every datagram `segment` bytes long but the last, which may be shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: usize,
    count: usize,
    segment: usize,
}

/// Largest UDP payload of one GSO message (the IPv4 total-length limit, less headers, with room).
const MAX_GSO_BYTES: usize = 65_000;

impl SendQueue {
    /// A queue that puts at most `max_segments` datagrams into one GSO message (1: no GSO).
    pub fn new(max_segments: usize) -> Self {
        Self {
            queue: Vec::new(),
            runs: Vec::new(),
            max_segments: max_segments.clamp(1, 64),
        }
    }

    /// A queue for `socket`: GSO when its kernel supports it.
    pub fn for_socket(socket: &UdpSocket) -> Self {
        let max = UdpSocketState::new(socket.into())
            .map(|s| s.max_gso_segments())
            .unwrap_or(1);
        Self::new(max)
    }

    pub fn push(&mut self, to: SocketAddr, data: BytesMut) {
        self.queue.push((to, data));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether sends are coalesced with GSO.
    pub fn gso(&self) -> bool {
        self.max_segments > 1
    }

    /// Sends everything queued. Datagrams the kernel will not take now (a full send buffer) are
    /// dropped and counted, as a congested link would: media must never wait behind a socket.
    pub fn flush(&mut self, socket: &UdpSocket) -> FlushResult {
        let mut result = FlushResult::default();
        self.plan_runs();
        let mut next = 0;
        while next < self.runs.len() {
            let end = (next + SEND_BATCH).min(self.runs.len());
            let runs = &self.runs[next..end];
            match sendmmsg(socket, &self.queue, runs) {
                Ok(0) => {
                    result.dropped += datagrams(runs);
                    next = end;
                }
                Ok(n) => {
                    result.sent += datagrams(&runs[..n]);
                    next += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    result.dropped += datagrams(&self.runs[next..]);
                    break;
                }
                Err(e) if runs[0].count > 1 && gso_refused(&e) => {
                    // The route's device cannot take GSO after all: send the rest one datagram
                    // per message from now on.
                    tracing::warn!(error = %e, "UDP GSO refused by the kernel; sending one datagram per message");
                    self.max_segments = 1;
                    let from = runs[0].start;
                    self.runs.truncate(next);
                    for start in from..self.queue.len() {
                        let segment = self.queue[start].1.len();
                        self.runs.push(Run {
                            start,
                            count: 1,
                            segment,
                        });
                    }
                }
                Err(e) => {
                    // One bad destination (unreachable, EINVAL) must not stall the rest.
                    result.failed += runs[0].count;
                    result.last_error = Some(e);
                    next += 1;
                }
            }
        }
        self.queue.clear();
        self.runs.clear();
        result
    }

    /// Splits the queue into runs: consecutive datagrams to one address, all of one size but the
    /// last, within the kernel's GSO limits.
    fn plan_runs(&mut self) {
        self.runs.clear();
        let mut i = 0;
        while i < self.queue.len() {
            let (addr, first) = (&self.queue[i].0, self.queue[i].1.len());
            let mut count = 1;
            let mut bytes = first;
            if self.max_segments > 1 && first > 0 {
                while count < self.max_segments && i + count < self.queue.len() {
                    let (next_addr, next) = &self.queue[i + count];
                    if next_addr != addr
                        || next.len() > first
                        || next.is_empty()
                        || bytes + next.len() > MAX_GSO_BYTES
                    {
                        break;
                    }
                    count += 1;
                    bytes += next.len();
                    if next.len() < first {
                        break; // a shorter datagram can only end a run
                    }
                }
            }
            self.runs.push(Run {
                start: i,
                count,
                segment: first,
            });
            i += count;
        }
    }
}

fn datagrams(runs: &[Run]) -> usize {
    runs.iter().map(|r| r.count).sum()
}

/// The errors a kernel or device gives for a GSO message it cannot send.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

#[derive(Default, Debug)]
pub struct FlushResult {
    pub sent: usize,
    pub dropped: usize,
    pub failed: usize,
    pub last_error: Option<io::Error>,
}

fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let sock: socket2::SockAddr = (*addr).into();
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = sock.len();
    // SAFETY: SockAddr holds a valid sockaddr of `len` bytes, and sockaddr_storage is large
    // enough for any address family.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sock.as_ptr() as *const u8,
            &mut storage as *mut _ as *mut u8,
            len as usize,
        );
    }
    (storage, len)
}

/// Messages per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// Datagrams per `sendmmsg` call (each message may carry a GSO run).
const SEND_IOVS: usize = 1024;

/// Room for one `cmsghdr` carrying a `u16`, 8-byte aligned.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct SegmentCmsg([u8; 32]);

/// One `sendmmsg` of at most [`SEND_BATCH`] runs of `queue`. The headers live on the stack:
/// sending allocates nothing.
fn sendmmsg(
    socket: &UdpSocket,
    queue: &[(SocketAddr, BytesMut)],
    runs: &[Run],
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let runs = &runs[..runs.len().min(SEND_BATCH)];
    // Stop where the iovec room runs out (64 runs of up to 64 datagrams fit; this is a bound).
    let mut used = 0;
    let runs = &runs[..runs
        .iter()
        .position(|r| {
            used += r.count;
            used > SEND_IOVS
        })
        .unwrap_or(runs.len())];
    // SAFETY: all-zero bytes are valid values of these plain C structs (null pointers, empty
    // addresses); every entry used below is filled in first.
    let mut addrs: [(libc::sockaddr_storage, libc::socklen_t); SEND_BATCH] =
        unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; SEND_IOVS] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let mut cmsgs = [SegmentCmsg([0; 32]); SEND_BATCH];
    let mut iov_at = 0;
    for (i, run) in runs.iter().enumerate() {
        addrs[i] = sockaddr_of(&queue[run.start].0);
        let first_iov = iov_at;
        for (_, data) in &queue[run.start..run.start + run.count] {
            iovs[iov_at] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            iov_at += 1;
        }
        let msg = &mut msgs[i];
        let (addr, len) = &mut addrs[i];
        msg.msg_hdr.msg_name = addr as *mut _ as *mut libc::c_void;
        msg.msg_hdr.msg_namelen = *len;
        msg.msg_hdr.msg_iov = &mut iovs[first_iov] as *mut libc::iovec;
        msg.msg_hdr.msg_iovlen = run.count as _;
        msg.msg_len = 0;
        if run.count > 1 {
            // SAFETY: the buffer is 8-byte aligned and larger than CMSG_SPACE(2) (24 bytes);
            // CMSG_FIRSTHDR of a header whose control length covers it is that buffer.
            unsafe {
                let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
                msg.msg_hdr.msg_control = cmsgs[i].0.as_mut_ptr() as *mut libc::c_void;
                msg.msg_hdr.msg_controllen = space as _;
                let cmsg = libc::CMSG_FIRSTHDR(&msg.msg_hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, run.segment as u16);
            }
        }
    }
    loop {
        // SAFETY: the first `runs.len()` headers are initialised and point into `addrs`, `iovs`,
        // `cmsgs` and the queued buffers, all alive for the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                runs.len() as libc::c_uint,
                0,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_in_one_call_each() {
        let (a, warnings) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap();
        let _ = warnings;
        let (b, _) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap();
        let to = b.local_addr().unwrap();
        let mut q = SendQueue::new(1);
        for i in 0..10u8 {
            q.push(to, BytesMut::from(&[i; 100][..]));
        }
        let r = q.flush(&a);
        assert_eq!(r.sent, 10);
        let mut batch = RecvBatch::new(&b).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            match batch.recv(&b) {
                Ok(n) => got.extend(batch.datagrams(n).map(|(_, _, d)| d[0])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
            if got.len() == 10 {
                break;
            }
        }
        assert_eq!(got, (0..10).collect::<Vec<u8>>());
    }

    /// Receives until `want` datagrams arrived, each as its own buffer (no GRO on `b`).
    fn receive(b: &UdpSocket, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..200 {
            match b.recv_from(&mut buf) {
                Ok((n, from)) => got.push((from, buf[..n].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got.len() >= want {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn runs_to_one_player_are_coalesced_and_arrive_as_the_same_datagrams() {
        let (a, _) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap();
        let (b, _) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap();
        let (c, _) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20, 1 << 20).unwrap();
        let (to_b, to_c) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut q = SendQueue::for_socket(&a);
        // A keyframe's worth to b (equal sizes, then a short audio packet), one to c, more to b.
        let mut sent_b = Vec::new();
        for i in 0..24u8 {
            sent_b.push(vec![i; 1128]);
        }
        sent_b.push(vec![200; 120]);
        sent_b.push(vec![201; 1128]);
        for d in &sent_b[..25] {
            q.push(to_b, BytesMut::from(&d[..]));
        }
        q.push(to_c, BytesMut::from(&[7u8; 1128][..]));
        q.push(to_b, BytesMut::from(&sent_b[25][..]));
        q.plan_runs();
        if q.gso() {
            let runs: Vec<(usize, usize)> = q.runs.iter().map(|r| (r.start, r.count)).collect();
            assert_eq!(runs, vec![(0, 25), (25, 1), (26, 1)]);
        } else {
            assert_eq!(q.runs.len(), 27);
        }
        let r = q.flush(&a);
        assert_eq!(
            (r.sent, r.dropped, r.failed),
            (27, 0, 0),
            "{:?}",
            r.last_error
        );
        let got_b: Vec<Vec<u8>> = receive(&b, 26).into_iter().map(|(_, d)| d).collect();
        assert_eq!(got_b, sent_b, "b gets every datagram, whole and in order");
        let got_c = receive(&c, 1);
        assert_eq!(got_c.len(), 1);
        assert_eq!(got_c[0].1, vec![7u8; 1128]);
    }

    #[test]
    fn a_run_ends_at_a_longer_datagram_and_at_the_size_limit() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut q = SendQueue::new(64);
        for len in [500, 500, 900, 900, 100, 100] {
            q.push(to, BytesMut::from(&vec![0u8; len][..]));
        }
        for _ in 0..70 {
            q.push(to, BytesMut::from(&[0u8; 1200][..]));
        }
        q.plan_runs();
        let runs: Vec<(usize, usize, usize)> = q
            .runs
            .iter()
            .map(|r| (r.start, r.count, r.segment))
            .collect();
        // 1200-byte datagrams: 54 fit under the 65,000-byte limit.
        assert_eq!(
            runs,
            vec![
                (0, 2, 500),
                (2, 3, 900),
                (5, 1, 100),
                (6, 54, 1200),
                (60, 16, 1200)
            ]
        );
        q.queue.clear();
    }
}
