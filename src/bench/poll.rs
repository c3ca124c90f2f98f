//! The load generator's I/O: one level-triggered epoll over many UDP sockets, and `recvmmsg`
//! into one set of buffers shared by every socket of a thread.
//!
//! Level-triggered, so a ready socket is read once per wake-up and never drained to `EAGAIN`:
//! with one packet waiting (the usual case under fan-out) that is one syscall per packet.
//!
//! Sockets made with [`timestamp_arrivals`] carry the kernel's receive time of each datagram
//! (`SO_TIMESTAMPNS`), so a latency sample ends when the packet reached the player's socket, not
//! when the load thread got round to reading it: a busy load thread does not add to the figure.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// An epoll instance.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(max_events: usize) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions; a non-negative result is a new fd
        // that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    /// Watches `fd` for input; wake-ups report `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; failure (fd already closed) is harmless.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ms` and returns the tokens of the ready sockets.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<impl Iterator<Item = u64> + '_> {
        // SAFETY: `events` has room for `events.len()` entries, which the kernel fills.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        let n = if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            n as usize
        };
        Ok(self.events[..n].iter().map(|e| e.u64))
    }
}

/// Datagrams read per `recvmmsg`.
pub const BATCH: usize = 16;
const MAX_DATAGRAM: usize = 2048;
/// Room for one `SCM_TIMESTAMPNS` control message (a `cmsghdr` and a `timespec`), in u64s so
/// it is aligned as a `cmsghdr` must be.
const CONTROL_WORDS: usize = 8;

/// Asks the kernel to stamp each datagram `fd` receives with its wall-clock arrival time.
pub fn timestamp_arrivals(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the duration of the call, and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receive buffers, reused for every socket of a thread.
pub struct RecvBufs {
    bufs: Box<[[u8; MAX_DATAGRAM]; BATCH]>,
    addrs: [libc::sockaddr_storage; BATCH],
    lens: [usize; BATCH],
    addr_lens: [libc::socklen_t; BATCH],
    controls: [[u64; CONTROL_WORDS]; BATCH],
    /// Kernel receive time of each datagram, ns since the Unix epoch (0: none).
    stamps: [u64; BATCH],
}

impl RecvBufs {
    pub fn new() -> Self {
        Self {
            bufs: Box::new([[0; MAX_DATAGRAM]; BATCH]),
            // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
            addrs: unsafe { std::mem::zeroed() },
            lens: [0; BATCH],
            addr_lens: [0; BATCH],
            controls: [[0; CONTROL_WORDS]; BATCH],
            stamps: [0; BATCH],
        }
    }

    /// Reads what `fd` has waiting, up to one batch, without blocking. `Ok(0)`: nothing.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void,
            iov_len: MAX_DATAGRAM,
        });
        let controls = &mut self.controls;
        let mut msgs: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| {
            // SAFETY: an all-zero msghdr is a valid empty header; the fields set below point
            // into `self.addrs`, `self.controls` and `iovs`, which outlive the recvmmsg call.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = &mut self.addrs[i] as *mut _ as *mut libc::c_void;
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut iovs[i] as *mut libc::iovec;
            hdr.msg_iovlen = 1;
            hdr.msg_control = controls[i].as_mut_ptr() as *mut libc::c_void;
            hdr.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>() as _;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        });
        loop {
            // SAFETY: `msgs` holds BATCH initialised headers whose buffers stay alive here.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                let n = n as usize;
                for (i, m) in msgs.iter().take(n).enumerate() {
                    self.lens[i] = (m.msg_len as usize).min(MAX_DATAGRAM);
                    self.addr_lens[i] = m.msg_hdr.msg_namelen;
                    self.stamps[i] = kernel_stamp(&m.msg_hdr);
                }
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// The i-th datagram of the last read: its source and bytes.
    pub fn datagram(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        (
            socket_addr(&self.addrs[i], self.addr_lens[i]),
            &self.bufs[i][..self.lens[i]],
        )
    }

    /// When the i-th datagram of the last read reached its socket, on the clock of `now`:
    /// `now` and `wall_ns` are one moment read from the monotonic and the wall clock. `now`
    /// itself when the socket does not timestamp (or the stamp is from `now`'s future).
    pub fn arrival(&self, i: usize, now: Instant, wall_ns: u64) -> Instant {
        match self.stamps[i] {
            0 => now,
            at => now
                .checked_sub(Duration::from_nanos(wall_ns.saturating_sub(at)))
                .unwrap_or(now),
        }
    }
}

/// The `SCM_TIMESTAMPNS` time in a received message's control data, ns since the Unix epoch.
fn kernel_stamp(hdr: &libc::msghdr) -> u64 {
    // SAFETY: `hdr` was filled by recvmmsg: its control pointer and length describe the
    // control buffer the kernel wrote, which the CMSG_* walk stays inside of.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    0
}

/// The wall clock now, ns since the Unix epoch (the clock of kernel receive stamps).
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The address the kernel wrote into `storage` (IPv4 or IPv6).
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this is a sockaddr_in, and it is long enough.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this is a sockaddr_in6, and it is long enough.
            let a = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl Default for RecvBufs {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn epoll_reports_the_ready_socket_and_recvmmsg_reads_its_batch() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        timestamp_arrivals(b.as_raw_fd()).unwrap();
        let mut ep = Epoll::new(8).unwrap();
        ep.add(b.as_raw_fd(), 42).unwrap();
        let mut bufs = RecvBufs::new();
        assert_eq!(bufs.recv(b.as_raw_fd()).unwrap(), 0, "nothing waiting");
        for i in 0..3u8 {
            a.send_to(&[i; 10], b.local_addr().unwrap()).unwrap();
        }
        let ready: Vec<u64> = ep.wait(1000).unwrap().collect();
        assert_eq!(ready, vec![42]);
        let n = bufs.recv(b.as_raw_fd()).unwrap();
        assert_eq!(n, 3);
        let (from, data) = bufs.datagram(2);
        assert_eq!(from, Some(a.local_addr().unwrap()));
        assert_eq!(data, &[2u8; 10]);
        // Sent before this read: the kernel's stamp puts its arrival before now, not long ago.
        std::thread::sleep(Duration::from_millis(20));
        let (now, wall) = (Instant::now(), wall_ns());
        let waited = now.duration_since(bufs.arrival(2, now, wall));
        assert!(
            waited >= Duration::from_millis(15) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(ep.wait(0).unwrap().count(), 0, "drained");
        ep.remove(b.as_raw_fd());
    }
}
