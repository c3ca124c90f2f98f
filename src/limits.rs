//! Admission: caps and rates on what one user or one client address may open, so that one
//! client cannot crowd out the others (`[limits]` in the config).
//!
//! - A WHIP/WHEP session holds a [`Permit`] counted against its user and its address; the
//!   media worker keeps the permit with the session and drops it when the session ends, however
//!   it ends (DELETE, timeout, kick, replacement).
//! - Session setups per address are a token bucket; WebSocket opens take from the same one, so
//!   that reconnecting over and over cannot reset a connection's own message limits.
//! - A WebSocket holds a permit against its address while open, and a second one while it has
//!   not said `hello`.
//!
//! A refusal is answered after [`REFUSAL_DELAY`], so that a client hammering a cap slows down.
//!
//! Addresses are keyed per IPv4 address and per IPv6 /64 (one subscriber's usual allocation);
//! IPv4-mapped IPv6 addresses count as IPv4. Every refusal is counted per limit in
//! `tablecast_limit_refusals_total{limit}`.
//!
//! The state is one small map behind a `Mutex`, touched once when a session or socket opens
//! and once when it ends: never per packet or per control message.

use crate::config::LimitsConfig;
use crate::ids::UserId;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(burst: u32, per_sec: f64, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
    }

    /// Takes one token; false when there is none.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is back (zero when one is there now).
    pub fn wait(&self, now: Instant) -> Duration {
        let mut b = self.clone();
        b.refill(now);
        if b.tokens >= 1.0 || b.per_sec <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(((1.0 - b.tokens) / b.per_sec).min(3600.0))
    }

    /// Whether the bucket would be full by `now`: it remembers nothing worth keeping.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_sec >= self.burst
    }
}

/// Which limit refused a request (the `limit` label of `tablecast_limit_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    SessionsPerUser,
    SessionsPerAddress,
    Setups,
    WebSocketsPerAddress,
    PendingWebSockets,
}

impl Limit {
    pub const ALL: [Limit; 5] = [
        Limit::SessionsPerUser,
        Limit::SessionsPerAddress,
        Limit::Setups,
        Limit::WebSocketsPerAddress,
        Limit::PendingWebSockets,
    ];

    /// The config key (under `[limits]`) that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Limit::SessionsPerUser => "sessions_per_user",
            Limit::SessionsPerAddress => "sessions_per_address",
            Limit::Setups => "setups_per_sec",
            Limit::WebSocketsPerAddress => "websockets_per_address",
            Limit::PendingWebSockets => "pending_websockets_per_address",
        }
    }
}

/// A request over a limit: answered `429` with `Retry-After`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{what}; try again in {retry_after_secs} s (the node's [limits] {key})", key = .limit.key())]
pub struct Refused {
    pub limit: Limit,
    pub what: String,
    pub retry_after_secs: u64,
}

/// How long the answer to a refused request is held back. A client over a cap that retries at
/// once would otherwise make the node spend its CPU answering `429`s as fast as it can ask, at
/// the cost of everyone else; held back, each of its connections asks at most twice a second.
/// Waiting costs the node a sleeping task, nothing more.
pub const REFUSAL_DELAY: Duration = Duration::from_millis(500);

/// Waits [`REFUSAL_DELAY`], then gives back the refusal to answer with.
pub async fn held_back(refused: Refused) -> Refused {
    tokio::time::sleep(REFUSAL_DELAY).await;
    refused
}

/// An address as limits count it: IPv4 as is, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Self(IpAddr::V6(std::net::Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

#[derive(Default)]
struct State {
    sessions_by_user: HashMap<UserId, u32>,
    sessions_by_addr: HashMap<AddrKey, u32>,
    setups: HashMap<AddrKey, Bucket>,
    sockets_by_addr: HashMap<AddrKey, u32>,
    pending_by_addr: HashMap<AddrKey, u32>,
}

/// The node's admission control; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Admission(Arc<Inner>);

struct Inner {
    config: LimitsConfig,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

/// Held while a session or WebSocket is open; dropping it gives the slot back.
#[must_use = "a permit gives its slot back when dropped"]
pub struct Permit {
    admission: Admission,
    kind: PermitKind,
}

enum PermitKind {
    Session { user: UserId, addr: AddrKey },
    Socket { addr: AddrKey },
    Pending { addr: AddrKey },
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

/// Above this many remembered setup buckets, full ones are forgotten.
const PRUNE_AT: usize = 4096;

impl Admission {
    pub fn new(config: LimitsConfig, metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(Inner {
            config,
            state: Mutex::new(State::default()),
            metrics,
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and the counts stay usable if it ever did.
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refuse(&self, limit: Limit, what: String, retry_after: Duration) -> Refused {
        self.0.metrics.node.limit_refused(limit);
        Refused {
            limit,
            what,
            retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
        }
    }

    /// Admits a WHIP/WHEP session setup by `user` from `ip`: one token of the address's setup
    /// rate, and a slot under both concurrency caps.
    pub fn session(&self, user: &UserId, ip: IpAddr, now: Instant) -> Result<Permit, Refused> {
        let addr = AddrKey::of(ip);
        let c = &self.0.config;
        let mut st = self.state();
        let by_user = st.sessions_by_user.get(user).copied().unwrap_or(0);
        if by_user >= c.sessions_per_user {
            drop(st);
            return Err(self.refuse(
                Limit::SessionsPerUser,
                format!(
                    "{user} already holds {by_user} sessions; close one (DELETE its Location) first"
                ),
                Duration::from_secs(5),
            ));
        }
        let by_addr = st.sessions_by_addr.get(&addr).copied().unwrap_or(0);
        if by_addr >= c.sessions_per_address {
            drop(st);
            return Err(self.refuse(
                Limit::SessionsPerAddress,
                format!("your address already holds {by_addr} sessions"),
                Duration::from_secs(5),
            ));
        }
        if let Err(wait) = take_setup(&mut st, c, addr, now) {
            drop(st);
            return Err(self.refuse(
                Limit::Setups,
                "too many session setups from your address".into(),
                wait,
            ));
        }
        *st.sessions_by_user.entry(user.clone()).or_insert(0) += 1;
        *st.sessions_by_addr.entry(addr).or_insert(0) += 1;
        Ok(Permit {
            admission: self.clone(),
            kind: PermitKind::Session {
                user: user.clone(),
                addr,
            },
        })
    }

    /// Admits a WebSocket from `ip`: a slot under the open-socket cap, and one under the cap of
    /// sockets that have not said `hello` (dropped once it has).
    pub fn websocket(&self, ip: IpAddr, now: Instant) -> Result<(Permit, Permit), Refused> {
        let addr = AddrKey::of(ip);
        let c = &self.0.config;
        let mut st = self.state();
        let open = st.sockets_by_addr.get(&addr).copied().unwrap_or(0);
        if open >= c.websockets_per_address {
            drop(st);
            return Err(self.refuse(
                Limit::WebSocketsPerAddress,
                format!("your address already holds {open} WebSockets"),
                Duration::from_secs(5),
            ));
        }
        let pending = st.pending_by_addr.get(&addr).copied().unwrap_or(0);
        if pending >= c.pending_websockets_per_address {
            drop(st);
            return Err(self.refuse(
                Limit::PendingWebSockets,
                format!("your address has {pending} WebSockets that have not sent hello"),
                Duration::from_secs(5),
            ));
        }
        // Opening sockets over and over would reset each one's message limits: opens count
        // against the address's setup rate too.
        if let Err(wait) = take_setup(&mut st, c, addr, now) {
            drop(st);
            return Err(self.refuse(
                Limit::Setups,
                "too many connections from your address".into(),
                wait,
            ));
        }
        *st.sockets_by_addr.entry(addr).or_insert(0) += 1;
        *st.pending_by_addr.entry(addr).or_insert(0) += 1;
        let permit = |kind| Permit {
            admission: self.clone(),
            kind,
        };
        Ok((
            permit(PermitKind::Socket { addr }),
            permit(PermitKind::Pending { addr }),
        ))
    }

    /// Sessions held now by `user` (tests and the ops view).
    pub fn sessions_of(&self, user: &UserId) -> u32 {
        self.state()
            .sessions_by_user
            .get(user)
            .copied()
            .unwrap_or(0)
    }
}

/// Takes one setup from `addr`'s bucket, or says how long until one is back.
fn take_setup(
    st: &mut State,
    c: &LimitsConfig,
    addr: AddrKey,
    now: Instant,
) -> Result<(), Duration> {
    if st.setups.len() >= PRUNE_AT {
        st.setups.retain(|_, b| !b.is_full(now));
    }
    let bucket = st
        .setups
        .entry(addr)
        .or_insert_with(|| Bucket::new(c.setups_burst, c.setups_per_sec, now));
    if bucket.take(now) {
        Ok(())
    } else {
        Err(bucket.wait(now))
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.admission.state();
        match &self.kind {
            PermitKind::Session { user, addr } => {
                release(&mut st.sessions_by_user, user);
                release(&mut st.sessions_by_addr, addr);
            }
            PermitKind::Socket { addr } => release(&mut st.sockets_by_addr, addr),
            PermitKind::Pending { addr } => release(&mut st.pending_by_addr, addr),
        }
    }
}

#[cfg(test)]
mod tests;
