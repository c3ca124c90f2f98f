//! One control-plane player over a WebSocket (`/ws/{table}`), for `bench --cluster`.
//!
//! It says `hello`, waits for its `welcome` (whose `seq` is where its public events start),
//! then until told to stop:
//! - stamps every public event's arrival against the event's `server_ms` (the same host's wall
//!   clock, so loopback only), and keeps every `seq` it saw, to count events lost and
//!   duplicated afterwards;
//! - when a round opens, places one bet after a random pause of up to `bet_spread`, and times
//!   it from sending `bet.place` to receiving `bet.accepted`.
//!
//! Its figures come back as a [`Tally`] when its task ends.

use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Who a player is and where it connects.
pub struct PlayerSpec {
    /// `ws://127.0.0.1:PORT/ws/TABLE`.
    pub url: String,
    pub token: String,
    /// The index of its node in the cluster.
    pub node: usize,
    /// A bet goes out at a random point this long after `round.opened` arrives.
    pub bet_spread: Duration,
}

/// What the players share with the run while it goes: how many said hello and were welcomed,
/// and the highest seq each has seen (to wait until every player has the last event).
pub struct Progress {
    pub welcomed: AtomicUsize,
    /// Players whose connection ended before their welcome.
    pub failed: AtomicUsize,
    pub highest_seq: Vec<AtomicU64>,
}

impl Progress {
    pub fn new(players: usize) -> Arc<Progress> {
        Arc::new(Progress {
            welcomed: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            highest_seq: (0..players).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The lowest seq every player has reached.
    pub fn lowest_seq(&self) -> u64 {
        self.highest_seq
            .iter()
            .map(|s| s.load(Relaxed))
            .min()
            .unwrap_or(0)
    }
}

/// One player's figures.
#[derive(Debug, Default)]
pub struct Tally {
    pub node: usize,
    /// The `seq` of its `welcome`: every public event after it must arrive, once.
    pub welcome_seq: Option<u64>,
    /// Seqs of the public events it received, in arrival order.
    pub seqs: Vec<u64>,
    /// Arrival minus the event's `server_ms`, µs.
    pub fanout_us: Vec<u64>,
    /// `bet.place` sent to `bet.accepted` received, µs.
    pub bet_us: Vec<u64>,
    pub bets_sent: u64,
    pub bets_rejected: u64,
    pub first_rejection: Option<String>,
    /// Why the connection failed or ended before the run did.
    pub failed: Option<String>,
}

/// Connects, says hello and plays until `stop` turns true (or the connection ends).
pub async fn play(
    i: usize,
    spec: PlayerSpec,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
) -> Tally {
    let tally = session(i, spec, &progress, stop).await;
    if tally.welcome_seq.is_none() {
        progress.failed.fetch_add(1, Relaxed);
    }
    tally
}

async fn session(
    i: usize,
    spec: PlayerSpec,
    progress: &Progress,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally {
        node: spec.node,
        ..Tally::default()
    };
    let socket = match tokio_tungstenite::connect_async(spec.url.as_str()).await {
        Ok((socket, _)) => socket,
        Err(e) => {
            tally.failed = Some(format!("WebSocket to {}: {e}", spec.url));
            return tally;
        }
    };
    let (mut sink, mut stream) = socket.split();
    let hello = serde_json::json!({"type": "hello", "token": spec.token}).to_string();
    if let Err(e) = sink.send(Message::text(hello)).await {
        tally.failed = Some(format!("hello: {e}"));
        return tally;
    }
    // The bet of the round in progress: when it goes out, then when it went out.
    let mut bet_due: Option<(u64, Instant)> = None;
    let mut bet_sent: Option<(u64, Instant)> = None;
    loop {
        let due = bet_due.map(|(_, at)| at);
        tokio::select! {
            _ = stop.changed() => break,
            _ = sleep_until(due), if due.is_some() => {
                let Some((round, _)) = bet_due.take() else { continue };
                let text = format!(
                    r#"{{"type":"bet.place","id":"r{round}","round":{round},"spot":"player","amount":1}}"#
                );
                bet_sent = Some((round, Instant::now()));
                tally.bets_sent += 1;
                if let Err(e) = sink.send(Message::text(text)).await {
                    tally.failed = Some(format!("bet.place: {e}"));
                    break;
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let arrival = Instant::now();
                    let arrival_us = wall_us();
                    let Ok(msg) = serde_json::from_str::<Incoming>(text.as_str()) else {
                        continue;
                    };
                    match msg.typ.as_str() {
                        "welcome" => {
                            tally.welcome_seq = msg.seq;
                            progress.highest_seq[i].store(msg.seq.unwrap_or(0), Relaxed);
                            progress.welcomed.fetch_add(1, Relaxed);
                        }
                        "bet.accepted" | "bet.rejected" | "error" => {
                            let Some((round, sent)) = bet_sent else { continue };
                            if msg.id.as_deref() != Some(&format!("r{round}")) {
                                continue;
                            }
                            bet_sent = None;
                            if msg.typ == "bet.accepted" {
                                tally.bet_us.push(arrival.duration_since(sent).as_micros() as u64);
                            } else {
                                tally.bets_rejected += 1;
                                tally.first_rejection.get_or_insert(msg.code.unwrap_or(msg.typ));
                            }
                        }
                        _ => {
                            let (Some(seq), Some(server_ms)) = (msg.seq, msg.server_ms) else {
                                continue;
                            };
                            tally.seqs.push(seq);
                            tally.fanout_us.push(arrival_us.saturating_sub(server_ms.saturating_mul(1000)));
                            progress.highest_seq[i].fetch_max(seq, Relaxed);
                            if msg.typ == "round.opened"
                                && let Some(round) = msg.round
                            {
                                let pause = spec.bet_spread.mul_f64(rand::random::<f64>());
                                bet_due = Some((round, arrival + pause));
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    tally.failed = Some(format!(
                        "the node closed the WebSocket: {}",
                        frame.map(|f| f.reason.to_string()).unwrap_or_default()
                    ));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tally.failed = Some(format!("WebSocket: {e}"));
                    break;
                }
                None => {
                    tally.failed = Some("the WebSocket ended".into());
                    break;
                }
            },
        }
    }
    let _ = sink.close().await;
    tally
}

/// The fields of a server message the player reads.
#[derive(serde::Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    typ: String,
    seq: Option<u64>,
    server_ms: Option<u64>,
    round: Option<u64>,
    id: Option<String>,
    code: Option<String>,
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Now on the wall clock, µs since the Unix epoch (the clock `server_ms` is read from).
fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
