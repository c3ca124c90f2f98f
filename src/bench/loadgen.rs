//! The load generator: a few threads, each driving many [`Viewer`]s from one epoll loop.
//!
//! Each turn of a thread's loop: take commands (new viewers, snapshots, bet runs); wait for
//! sockets (at most 2 ms, so commands and timers are never late by more); read each ready socket
//! once with `recvmmsg`; count media from clear headers and feed the rest to the viewers' peer
//! connections (a packet's arrival is the kernel's receive stamp); fire due timers from a
//! deadline heap.
//!
//! The orchestrator talks to the threads only by [`Cmd`]; a snapshot comes back on a oneshot.

use super::poll::{Epoll, RecvBufs, wall_ns};
use super::stats::Counts;
use super::viewer::{BetPlan, CONNECT_TIMEOUT, Ended, Samples, Viewer, ViewerSetup};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a load thread takes.
pub enum Cmd {
    Add(Box<ViewerSetup>),
    /// Decrypt one media packet in this many (per viewer) for latency samples.
    SampleEvery(u32),
    /// Public events stamped at or after this server time (ms) are fan-out samples.
    FanoutFrom(u64),
    Bets(BetPlan),
    StopBets,
    Snapshot(oneshot::Sender<ThreadSnapshot>),
    Stop,
}

/// One thread's counters (cumulative) and samples (since the last snapshot).
#[derive(Debug, Default)]
pub struct ThreadSnapshot {
    pub viewers: usize,
    pub connected: usize,
    pub with_keyframe: usize,
    pub never_connected: usize,
    pub dropped: usize,
    pub video: Counts,
    pub audio: Counts,
    /// By packet kind, as in [`Samples::forward_us`].
    pub forward_us: [Vec<u64>; 3],
    pub join_us: Vec<u64>,
    pub fanout_us: Vec<u64>,
    pub bet_us: Vec<u64>,
    pub bets_accepted: u64,
    pub bets_rejected: u64,
    pub bets_unanswered: u64,
    pub first_rejection: Option<String>,
    pub events: u64,
    pub welcomed: usize,
}

impl ThreadSnapshot {
    pub fn merge(&mut self, o: ThreadSnapshot) {
        self.viewers += o.viewers;
        self.connected += o.connected;
        self.with_keyframe += o.with_keyframe;
        self.never_connected += o.never_connected;
        self.dropped += o.dropped;
        self.video.add(o.video);
        self.audio.add(o.audio);
        for (mine, theirs) in self.forward_us.iter_mut().zip(o.forward_us) {
            mine.extend(theirs);
        }
        self.join_us.extend(o.join_us);
        self.fanout_us.extend(o.fanout_us);
        self.bet_us.extend(o.bet_us);
        self.bets_accepted += o.bets_accepted;
        self.bets_rejected += o.bets_rejected;
        self.bets_unanswered += o.bets_unanswered;
        if self.first_rejection.is_none() {
            self.first_rejection = o.first_rejection;
        }
        self.events += o.events;
        self.welcomed += o.welcomed;
    }

    pub fn media(&self) -> Counts {
        let mut c = self.video;
        c.add(self.audio);
        c
    }
}

/// The running load threads. Shared by the joining tasks (`add` takes `&self`).
pub struct LoadGen {
    senders: Vec<mpsc::Sender<Cmd>>,
    handles: Mutex<Vec<std::thread::JoinHandle<()>>>,
    next: AtomicUsize,
}

impl LoadGen {
    pub fn start(threads: usize, epoch: Instant) -> std::io::Result<Self> {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel();
            let mut thread = LoadThread::new(rx, epoch)?;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("bench-load-{i}"))
                    .spawn(move || thread.run())?,
            );
            senders.push(tx);
        }
        Ok(Self {
            senders,
            handles: Mutex::new(handles),
            next: AtomicUsize::new(0),
        })
    }

    /// Hands a signalled viewer to the next thread (round robin).
    pub fn add(&self, setup: ViewerSetup) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let _ = self.senders[i].send(Cmd::Add(Box::new(setup)));
    }

    /// Sends a command to every thread.
    pub fn broadcast(&self, make: impl Fn() -> Cmd) {
        for tx in &self.senders {
            let _ = tx.send(make());
        }
    }

    /// Every thread's counters, merged; samples are taken (the next snapshot starts afresh).
    pub async fn snapshot(&self) -> ThreadSnapshot {
        let mut waits = Vec::new();
        for tx in &self.senders {
            let (reply, rx) = oneshot::channel();
            let _ = tx.send(Cmd::Snapshot(reply));
            waits.push(rx);
        }
        let mut all = ThreadSnapshot::default();
        for rx in waits {
            if let Ok(s) = rx.await {
                all.merge(s);
            }
        }
        all
    }

    /// Closes every viewer and ends the threads.
    pub fn stop(&self) {
        self.broadcast(|| Cmd::Stop);
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

struct LoadThread {
    rx: mpsc::Receiver<Cmd>,
    epoll: Epoll,
    bufs: RecvBufs,
    viewers: Vec<Option<Viewer>>,
    generations: Vec<u64>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    samples: Samples,
    sample_every: u32,
    /// Counters of viewers that ended, so totals never go backwards.
    retired: ThreadSnapshot,
    ready: Vec<u64>,
}

impl LoadThread {
    fn new(rx: mpsc::Receiver<Cmd>, epoch: Instant) -> std::io::Result<Self> {
        Ok(Self {
            rx,
            epoll: Epoll::new(1024)?,
            bufs: RecvBufs::new(),
            viewers: Vec::new(),
            generations: Vec::new(),
            timers: BinaryHeap::new(),
            samples: Samples::new(epoch),
            sample_every: 1,
            retired: ThreadSnapshot::default(),
            ready: Vec::with_capacity(1024),
        })
    }

    fn run(&mut self) {
        let mut last_reap = Instant::now();
        loop {
            loop {
                match self.rx.try_recv() {
                    Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                        self.close_all();
                        return;
                    }
                    Ok(cmd) => self.on_cmd(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            let wait_ms = match self.timers.peek() {
                Some(Reverse((t, _, _))) if *t <= now => 0,
                Some(Reverse((t, _, _))) => t.duration_since(now).as_millis().clamp(1, 2) as i32,
                None => 2,
            };
            self.ready.clear();
            match self.epoll.wait(wait_ms) {
                Ok(tokens) => self.ready.extend(tokens),
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; load thread stops");
                    return;
                }
            }
            let now = Instant::now();
            for i in 0..self.ready.len() {
                let slot = self.ready[i] as usize;
                self.read(slot, now);
            }
            self.run_timers(Instant::now());
            if now.duration_since(last_reap) > Duration::from_millis(500) {
                last_reap = now;
                self.reap(now);
            }
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Add(setup) => {
                let viewer = Viewer::new(*setup, self.sample_every);
                let slot = match self.viewers.iter().position(Option::is_none) {
                    Some(slot) => slot,
                    None => {
                        self.viewers.push(None);
                        self.generations.push(0);
                        self.viewers.len() - 1
                    }
                };
                if let Err(e) = self.epoll.add(viewer.socket.as_raw_fd(), slot as u64) {
                    tracing::warn!(error = %e, "cannot watch a viewer socket");
                    self.retired.never_connected += 1;
                    return;
                }
                self.generations[slot] += 1;
                self.viewers[slot] = Some(viewer);
                // Start ICE now: the first timeout sends the connectivity checks.
                self.fire(slot, now);
            }
            Cmd::SampleEvery(k) => {
                self.sample_every = k.max(1);
                for v in self.viewers.iter_mut().flatten() {
                    v.set_sample_every(k);
                }
            }
            Cmd::FanoutFrom(ms) => self.samples.fanout_from_ms = ms,
            Cmd::Bets(plan) => {
                for v in self.viewers.iter_mut().flatten() {
                    v.start_bets(now, plan);
                }
                self.reschedule_all(now);
            }
            Cmd::StopBets => {
                let mut unanswered = 0;
                for v in self.viewers.iter_mut().flatten() {
                    unanswered += v.stop_bets() as u64;
                }
                self.retired.bets_unanswered += unanswered;
            }
            Cmd::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Cmd::Stop => {}
        }
    }

    fn snapshot(&mut self) -> ThreadSnapshot {
        let mut s = ThreadSnapshot {
            viewers: 0,
            never_connected: self.retired.never_connected,
            dropped: self.retired.dropped,
            video: self.retired.video,
            audio: self.retired.audio,
            ..Default::default()
        };
        for v in self.viewers.iter().flatten() {
            s.viewers += 1;
            s.connected += usize::from(v.connected_at.is_some());
            s.with_keyframe += usize::from(v.first_keyframe_at.is_some());
            s.welcomed += usize::from(v.welcomed);
            s.video.add(v.video.counts());
            s.audio.add(v.audio.counts());
        }
        let x = &mut self.samples;
        s.forward_us = std::array::from_fn(|k| x.forward_us[k].take());
        s.join_us = std::mem::take(&mut x.join_us);
        s.fanout_us = x.fanout_us.take();
        s.bet_us = x.bet_us.take();
        s.bets_accepted = std::mem::take(&mut x.bets_accepted);
        s.bets_rejected = std::mem::take(&mut x.bets_rejected);
        s.bets_unanswered = std::mem::take(&mut self.retired.bets_unanswered);
        s.first_rejection = x.first_rejection.take();
        s.events = std::mem::take(&mut x.events);
        s
    }

    fn read(&mut self, slot: usize, now: Instant) {
        let Some(viewer) = self.viewers.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let n = match self.bufs.recv(viewer.socket.as_raw_fd()) {
            Ok(n) => n,
            Err(_) => return,
        };
        let mut fed = false;
        // One moment on both clocks, to put the kernel's (wall-clock) receive stamps on ours.
        let (clock, wall) = (Instant::now(), wall_ns());
        for i in 0..n {
            let (from, data) = self.bufs.datagram(i);
            let Some(from) = from else { continue };
            if viewer.input(now, from, data) {
                // Drive after each datagram, so a sampled packet's arrival is its own.
                let arrival = self.bufs.arrival(i, clock, wall);
                viewer.drive(now, arrival, &mut self.samples);
                fed = true;
            }
        }
        if fed {
            self.schedule(slot, now);
        }
    }

    /// Runs a viewer's timeout and whatever it produces.
    fn fire(&mut self, slot: usize, now: Instant) {
        let Some(viewer) = self.viewers.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        viewer.timeout(now);
        viewer.drive(now, now, &mut self.samples);
        self.schedule(slot, now);
    }

    fn schedule(&mut self, slot: usize, now: Instant) {
        let Some(viewer) = self.viewers.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let Some(t) = viewer.poll_timeout() {
            let t = t.max(now);
            if viewer.deadline.is_none_or(|d| t < d || d <= now) {
                viewer.deadline = Some(t);
                self.timers.push(Reverse((t, slot, self.generations[slot])));
            }
        }
    }

    fn reschedule_all(&mut self, now: Instant) {
        for slot in 0..self.viewers.len() {
            self.schedule(slot, now);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, slot, generation))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.generations.get(slot) != Some(&generation) {
                continue;
            }
            let Some(viewer) = self.viewers[slot].as_mut() else {
                continue;
            };
            if viewer.deadline != Some(t) {
                continue;
            }
            viewer.deadline = None;
            self.fire(slot, now);
        }
    }

    /// Ends viewers that failed, or never connected in time.
    fn reap(&mut self, now: Instant) {
        for slot in 0..self.viewers.len() {
            let Some(v) = self.viewers[slot].as_mut() else {
                continue;
            };
            if v.ended.is_none()
                && v.connected_at.is_none()
                && now.saturating_duration_since(v.started()) > CONNECT_TIMEOUT
            {
                v.ended = Some(Ended::NeverConnected);
            }
            let Some(ended) = v.ended else { continue };
            v.close();
            self.epoll.remove(v.socket.as_raw_fd());
            match ended {
                Ended::NeverConnected => self.retired.never_connected += 1,
                Ended::Dropped => self.retired.dropped += 1,
            }
            self.retired.video.add(v.video.counts());
            self.retired.audio.add(v.audio.counts());
            self.viewers[slot] = None;
            self.generations[slot] += 1;
        }
    }

    fn close_all(&mut self) {
        for v in self.viewers.iter_mut().flatten() {
            v.close();
        }
        self.viewers.clear();
    }
}
