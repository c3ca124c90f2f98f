//! Control-protocol messages from players and dealers, through to the table, as a control
//! connection and the table actor take them: `ControlSession::on_message` (size limit, JSON parse,
//! `hello`, roles, rate limits, `ping`, `video.view`), then the sans-IO `Table` for every
//! command it lets through (`handle_command`, timers, `poll_output`).
//!
//! Checked as it goes: every reply is JSON; every log record survives the log's JSON encoding;
//! and at the end the log replays to the table's snapshot.
//!
//! Four connections watch the demo table: players `p1` and `p2` and dealer `d1` on data channels
//! (who they are is known from the WHEP/WHIP token), and a WebSocket that must say `hello` with
//! a token first (the text `$TOKEN` in a message becomes a valid player token for `p3`).
//!
//! Input: records of `[header][length: u16][message]` (see `common::records`). A header's bits
//! 0-1 pick the connection; bits 2-7 advance time by that many 100 ms.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tablecast::auth::{TokenRole, Tokens};
use tablecast::control::session::{ControlSession, Speaker, Step};
use tablecast::control::{ConnId, Limits};
use tablecast::ids::{TableId, UserId};
use tablecast::protocol::{self, ServerTime, TableConfig};
use tablecast::table::{Output, Record, Table};

const SECRET: &[u8] = b"fuzz-control-secret-fuzz-control-secret";

fn tokens() -> &'static (Tokens, String) {
    static TOKENS: OnceLock<(Tokens, String)> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let tokens = Tokens::from_secret(SECRET);
        let p3 = UserId::parse("p3").expect("a user id");
        let token = tokens
            .issue(
                TokenRole::Player,
                "demo",
                &p3,
                Duration::from_secs(24 * 3600),
            )
            .expect("a token");
        (tokens, token)
    })
}

fn speaker(user: &str, role: TokenRole) -> Option<Speaker> {
    Some(Speaker {
        user: UserId::parse(user).expect("a user id"),
        role,
    })
}

fuzz_target!(|data: &[u8]| {
    let (tokens, p3_token) = tokens();
    let limits = Limits::default();
    let table_id = TableId::parse("demo").expect("a table id");
    let config = TableConfig::demo_baccarat();
    let mut table = Table::new(config.clone()).expect("the demo table is valid");
    let start = Instant::now();
    let mut now = start;
    let mut server_ms = 1_800_000_000_000u64;
    let mut sessions: Vec<ControlSession> = [
        speaker("p1", TokenRole::Player),
        speaker("p2", TokenRole::Player),
        speaker("d1", TokenRole::Dealer),
        None,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, who)| ControlSession::new(ConnId(i as u64), table_id.clone(), who, &limits, now))
    .collect();
    let mut records: Vec<Record> = Vec::new();

    for (header, message) in common::records(data).take(128) {
        let advance = u64::from(header >> 2) * 100;
        now += Duration::from_millis(advance);
        server_ms += advance;
        let with_token;
        let message = match std::str::from_utf8(message) {
            Ok(text) if text.contains("$TOKEN") => {
                with_token = text.replace("$TOKEN", p3_token);
                with_token.as_bytes()
            }
            _ => message,
        };
        let session = &mut sessions[usize::from(header & 3)];
        match session.on_message(message, tokens, now, server_ms) {
            Step::Reply(text) => {
                serde_json::from_str::<serde_json::Value>(&text).expect("a reply is JSON");
            }
            Step::Attach { speaker, .. } => {
                let _ = protocol::encode(&table.snapshot());
                for reply in table.replies_for(&speaker.user) {
                    let _ = protocol::encode(&reply);
                }
            }
            Step::Command { speaker, msg } => {
                table.handle_command(ServerTime(server_ms), &speaker.user, msg);
            }
            Step::View { view, .. } => {
                assert!(view.width <= protocol::MAX_VIEW_PX && view.height <= protocol::MAX_VIEW_PX);
            }
            Step::Close { .. } => {}
        }
        table.handle_timeout(ServerTime(server_ms));
        drain(&mut table, &mut records);
    }

    let replayed = Table::replay(config, records).expect("the table's own log replays");
    assert_eq!(
        replayed.snapshot(),
        table.snapshot(),
        "the log replays to the table"
    );
});

/// Takes the table's output as the actor does: records to the log, events and replies sent.
fn drain(table: &mut Table, records: &mut Vec<Record>) {
    loop {
        let out = table.poll_output();
        if let Some(record) = out.record() {
            let line = serde_json::to_string(&record).expect("a record encodes");
            let back: Record = serde_json::from_str(&line).expect("a record decodes");
            assert_eq!(back, record, "the log's JSON keeps the record");
            records.push(record);
        }
        match out {
            Output::Timeout(_) => return,
            Output::Public(ev) => drop(protocol::encode(&ev)),
            Output::Private { reply, .. } => drop(protocol::encode(&reply)),
            Output::Record(_) => {}
        }
    }
}
