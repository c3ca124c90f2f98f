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
#[derive(Default)]
pub struct SendQueue {
    queue: Vec<(SocketAddr, BytesMut)>,
}

impl SendQueue {
    pub fn push(&mut self, to: SocketAddr, data: BytesMut) {
        self.queue.push((to, data));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends everything queued. Datagrams the kernel will not take now (a full send buffer) are
    /// dropped and counted, as a congested link would: media must never wait behind a socket.
    pub fn flush(&mut self, socket: &UdpSocket) -> FlushResult {
        let mut result = FlushResult::default();
        let mut start = 0;
        while start < self.queue.len() {
            let end = (start + SEND_BATCH).min(self.queue.len());
            match sendmmsg(socket, &self.queue[start..end]) {
                Ok(0) => {
                    result.dropped += end - start;
                    start = end;
                }
                Ok(n) => {
                    result.sent += n;
                    start += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    result.dropped += self.queue.len() - start;
                    break;
                }
                Err(e) => {
                    // One bad destination (unreachable, EINVAL) must not stall the rest.
                    result.failed += 1;
                    result.last_error = Some(e);
                    start += 1;
                }
            }
        }
        self.queue.clear();
        result
    }
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

/// Datagrams per `sendmmsg` call.
const SEND_BATCH: usize = 64;

/// One `sendmmsg` of at most [`SEND_BATCH`] datagrams. The headers live on the stack: sending
/// allocates nothing.
fn sendmmsg(socket: &UdpSocket, batch: &[(SocketAddr, BytesMut)]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let batch = &batch[..batch.len().min(SEND_BATCH)];
    // SAFETY: all-zero bytes are valid values of these plain C structs (null pointers, empty
    // addresses); every entry used below is filled in first.
    let mut addrs: [(libc::sockaddr_storage, libc::socklen_t); SEND_BATCH] =
        unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for (i, (addr, data)) in batch.iter().enumerate() {
        addrs[i] = sockaddr_of(addr);
        iovs[i] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
    }
    for (i, msg) in msgs.iter_mut().enumerate().take(batch.len()) {
        let (addr, len) = &mut addrs[i];
        msg.msg_hdr.msg_name = addr as *mut _ as *mut libc::c_void;
        msg.msg_hdr.msg_namelen = *len;
        msg.msg_hdr.msg_iov = &mut iovs[i] as *mut libc::iovec;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_len = 0;
    }
    loop {
        // SAFETY: the first `batch.len()` headers are initialised and point into `addrs`, `iovs`
        // and the queued buffers, all alive for the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                batch.len() as libc::c_uint,
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
        let mut q = SendQueue::default();
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
}
