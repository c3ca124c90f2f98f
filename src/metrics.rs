//! Prometheus metrics. Workers hold `Arc<TableMetrics>` and bump atomics; nothing on the media
//! path takes a lock. `render()` writes the text exposition format for `GET /metrics`.

use crate::ids::TableId;
use crate::limits::Limit;
use crate::media::estimate::{Link, LinkStats};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, Weak};

/// Node-wide counters.
#[derive(Default)]
pub struct NodeMetrics {
    /// Datagrams on a media port that matched no session (scans, stale peers, garbage).
    pub datagrams_unroutable: AtomicU64,
    /// Sessions closed because they never connected or went silent.
    pub sessions_reaped: AtomicU64,
    /// Requests refused by `[limits]`, one counter per [`Limit::ALL`] entry, in that order.
    pub limit_refusals: [AtomicU64; Limit::ALL.len()],
}

impl NodeMetrics {
    /// Counts one refusal by `limit`.
    pub fn limit_refused(&self, limit: Limit) {
        if let Some(i) = Limit::ALL.iter().position(|l| *l == limit) {
            self.limit_refusals[i].fetch_add(1, Relaxed);
        }
    }

    /// Refusals by `limit` so far.
    pub fn limit_refusals(&self, limit: Limit) -> u64 {
        Limit::ALL
            .iter()
            .position(|l| *l == limit)
            .map_or(0, |i| self.limit_refusals[i].load(Relaxed))
    }
}

/// Per-table counters and gauges.
#[derive(Debug, Default)]
pub struct TableMetrics {
    pub publishers: AtomicI64,
    pub subscribers: AtomicI64,
    /// Connected pulls of the table's cameras from its origin node (this node is an edge).
    pub relays_in: AtomicI64,
    /// Relay sessions other nodes pull the table's cameras through (this node is the origin).
    pub relays_out: AtomicI64,
    /// Packets an edge's pull received but could not hand to its worker (its queue was full).
    pub relay_drops: AtomicU64,
    pub rtp_packets_in: AtomicU64,
    pub rtp_bytes_in: AtomicU64,
    pub rtp_packets_out: AtomicU64,
    pub rtp_bytes_out: AtomicU64,
    /// NACKs received from subscribers.
    pub nacks_received: AtomicU64,
    /// NACKs sent to publishers.
    pub nacks_sent: AtomicU64,
    /// Packets resent to subscribers from the track's packet buffer.
    pub retransmissions: AtomicU64,
    /// Of those, the ones sent on an RTX stream (RFC 4588).
    pub rtx_packets: AtomicU64,
    /// Of those, repairs sent again unasked: the player's transport-cc feedback reported the
    /// first one lost.
    pub rtx_unasked: AtomicU64,
    /// PLI/FIR received from subscribers.
    pub plis_received: AtomicU64,
    /// PLI sent to publishers (after throttling).
    pub plis_sent: AtomicU64,
    /// Players' links found congested (each time an estimate was lowered to what it delivered).
    pub link_backoffs: AtomicU64,
    /// Video packets a player's pacer dropped: its queue was over what its link carries in 800 ms.
    pub pacer_drops: AtomicU64,
    /// Packets sent to probe a player's link before it goes up a layer (RTX duplicates).
    pub probe_packets: AtomicU64,
    /// Changes of a player's simulcast layer (the start of a stream not counted).
    pub layer_switches: AtomicU64,
    /// Control connections (data channels and WebSockets) attached to the table.
    pub control_members: AtomicU64,
    /// Public table events sent.
    pub control_events: AtomicU64,
    /// Bets and chat messages refused by the per-player rate limits.
    pub control_rate_limited: AtomicU64,
    /// Feeds dropped by the table's writer because their queue was full (they resubscribe).
    pub control_feed_drops: AtomicU64,
    /// Control messages refused because the table's writer queue was full.
    pub control_writer_full: AtomicU64,
    /// Batches appended to the table's log (each one fsync with the file store).
    pub log_appends: AtomicU64,
    /// Records appended to the table's log.
    pub log_records: AtomicU64,
    /// The links of the table's players, read when the metrics are rendered (never per packet).
    links: Mutex<Vec<Weak<LinkStats>>>,
}

impl TableMetrics {
    /// Reports `link`, a player's, in the table's link metrics for as long as it lives. Called at
    /// session setup.
    pub fn watch_link(&self, link: &Arc<LinkStats>) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|l| l.strong_count() > 0);
        links.push(Arc::downgrade(link));
    }

    /// The links of the table's players now.
    pub fn player_links(&self) -> Vec<Link> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|l| l.strong_count() > 0);
        links
            .iter()
            .filter_map(|l| l.upgrade().map(|l| l.snapshot()))
            .collect()
    }
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    pub node: NodeMetrics,
    tables: Mutex<BTreeMap<TableId, Arc<TableMetrics>>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The counters of one table, created on first use. Called at session setup, never per packet.
    pub fn table(&self, table: &TableId) -> Arc<TableMetrics> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.entry(table.clone()).or_default().clone()
    }

    /// Control connections and media bytes sent, summed over every table: a node's load.
    pub fn totals(&self) -> (u64, u64) {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.values().fold((0, 0), |(members, bytes), t| {
            (
                members + t.control_members.load(Relaxed),
                bytes + t.rtp_bytes_out.load(Relaxed),
            )
        })
    }

    /// Prometheus text exposition format (version 0.0.4), for `GET /metrics`.
    pub fn render(&self) -> String {
        let tables: Vec<(TableId, Arc<TableMetrics>)> = {
            let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            tables
                .iter()
                .map(|(id, m)| (id.clone(), m.clone()))
                .collect()
        };
        let mut out = String::with_capacity(1024 + tables.len() * 1024);
        for family in TABLE_FAMILIES {
            header(&mut out, family.name, family.kind, family.help);
            for (id, m) in &tables {
                for (direction, read) in family.series {
                    let value = read(m);
                    let table = escape(id.as_str());
                    match direction {
                        Some(d) => sample(
                            &mut out,
                            family.name,
                            &format!("table=\"{table}\",direction=\"{d}\""),
                            value,
                        ),
                        None => sample(&mut out, family.name, &format!("table=\"{table}\""), value),
                    }
                }
            }
        }
        player_links(&mut out, &tables);
        let node = [
            (
                "tablecast_media_datagrams_unroutable_total",
                "Datagrams on a media port that matched no session.",
                self.node.datagrams_unroutable.load(Relaxed),
            ),
            (
                "tablecast_sessions_reaped_total",
                "Sessions closed because they never connected or went silent.",
                self.node.sessions_reaped.load(Relaxed),
            ),
        ];
        for (name, help, value) in node {
            header(&mut out, name, "counter", help);
            sample(&mut out, name, "", value as i128);
        }
        let name = "tablecast_limit_refusals_total";
        header(
            &mut out,
            name,
            "counter",
            "Requests refused by a [limits] cap or rate (429 or a closed WebSocket), by the limit's config key.",
        );
        for limit in Limit::ALL {
            let labels = format!("limit=\"{}\"", limit.key());
            sample(
                &mut out,
                name,
                &labels,
                self.node.limit_refusals(limit) as i128,
            );
        }
        out
    }
}

type Read = fn(&TableMetrics) -> i128;

/// One metric family over every table; `series` is one sample per table (or one per direction).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    series: &'static [(Option<&'static str>, Read)],
}

const TABLE_FAMILIES: &[Family] = &[
    Family {
        name: "tablecast_control_connections",
        kind: "gauge",
        help: "Control connections (data channels and WebSockets) attached to the table.",
        series: &[(None, |m| m.control_members.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_control_events_total",
        kind: "counter",
        help: "Public table events sent to the table's members.",
        series: &[(None, |m| m.control_events.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_control_rate_limited_total",
        kind: "counter",
        help: "Bets and chat messages refused by the per-player rate limits.",
        series: &[(None, |m| m.control_rate_limited.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_control_feed_drops_total",
        kind: "counter",
        help: "Feeds (one per node serving the table's players) dropped by the table's writer because they fell behind; each resubscribes from its last seq.",
        series: &[(None, |m| m.control_feed_drops.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_control_writer_full_total",
        kind: "counter",
        help: "Control messages refused because the table's writer queue was full.",
        series: &[(None, |m| m.control_writer_full.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_log_appends_total",
        kind: "counter",
        help: "Batches appended to the table's durable log (one fsync each with the file store).",
        series: &[(None, |m| m.log_appends.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_log_records_total",
        kind: "counter",
        help: "Records appended to the table's durable log.",
        series: &[(None, |m| m.log_records.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_publishers",
        kind: "gauge",
        help: "WHIP sessions publishing to the table.",
        series: &[(None, |m| m.publishers.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_subscribers",
        kind: "gauge",
        help: "WHEP sessions watching the table.",
        series: &[(None, |m| m.subscribers.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_relays",
        kind: "gauge",
        help: "Relays of the table's cameras between nodes: pulls from the origin (in, on an edge) and sessions edges pull through (out, on the origin).",
        series: &[
            (Some("in"), |m| m.relays_in.load(Relaxed).into()),
            (Some("out"), |m| m.relays_out.load(Relaxed).into()),
        ],
    },
    Family {
        name: "tablecast_relay_packets_dropped_total",
        kind: "counter",
        help: "Packets an edge's pull from the origin received but dropped because the media worker's queue was full (the node is out of CPU).",
        series: &[(None, |m| m.relay_drops.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_rtp_packets_received_total",
        kind: "counter",
        help: "RTP packets received from publishers and, on an edge, from the origin.",
        series: &[(None, |m| m.rtp_packets_in.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_rtp_bytes_received_total",
        kind: "counter",
        help: "RTP bytes received from publishers.",
        series: &[(None, |m| m.rtp_bytes_in.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_rtp_packets_forwarded_total",
        kind: "counter",
        help: "RTP packets sent to subscribers: players and, on the origin, edge nodes' relays.",
        series: &[(None, |m| m.rtp_packets_out.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_rtp_bytes_forwarded_total",
        kind: "counter",
        help: "RTP bytes sent to subscribers.",
        series: &[(None, |m| m.rtp_bytes_out.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_rtp_retransmitted_packets_total",
        kind: "counter",
        help: "RTP packets resent to subscribers from the track's packet buffer.",
        series: &[(None, |m| m.retransmissions.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_rtx_packets_total",
        kind: "counter",
        help: "Of the retransmitted packets, those sent on the subscriber's RTX stream (RFC 4588).",
        series: &[(None, |m| m.rtx_packets.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_rtx_unasked_packets_total",
        kind: "counter",
        help: "Of the RTX packets, repairs sent again without a NACK because the player's transport-cc feedback reported the first one lost.",
        series: &[(None, |m| m.rtx_unasked.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_nack_total",
        kind: "counter",
        help: "NACKs received from subscribers and sent to publishers.",
        series: &[
            (Some("from_subscriber"), |m| {
                m.nacks_received.load(Relaxed).into()
            }),
            (Some("to_publisher"), |m| m.nacks_sent.load(Relaxed).into()),
        ],
    },
    Family {
        name: "tablecast_pli_total",
        kind: "counter",
        help: "Keyframe requests (PLI/FIR) received from subscribers and sent to publishers after throttling.",
        series: &[
            (Some("from_subscriber"), |m| {
                m.plis_received.load(Relaxed).into()
            }),
            (Some("to_publisher"), |m| m.plis_sent.load(Relaxed).into()),
        ],
    },
    Family {
        name: "tablecast_player_link_congestion_total",
        kind: "counter",
        help: "Times a player's link was found congested (loss, or a growing queue) and its estimate lowered to what it delivered; the session listing shows each player's estimate, loss and RTT.",
        series: &[(None, |m| m.link_backoffs.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_pacer_dropped_packets_total",
        kind: "counter",
        help: "Video packets a player's pacer dropped because more waited than its link carries in 800 ms (the player asks again for what it misses).",
        series: &[(None, |m| m.pacer_drops.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_player_link_probe_packets_total",
        kind: "counter",
        help: "RTX duplicates sent to find out whether a player's link carries the next layer up before switching it (the session listing shows each player's probes carried and not carried).",
        series: &[(None, |m| m.probe_packets.load(Relaxed).into())],
    },
    Family {
        name: "tablecast_simulcast_layer_switches_total",
        kind: "counter",
        help: "Changes of the simulcast layer a player of the table gets (a layer stopped or came back, the player's link estimate, rendered size or quality choice); the start of a stream is not counted.",
        series: &[(None, |m| m.layer_switches.load(Relaxed).into())],
    },
];

/// The quantiles the player link gauges give, over the table's players: the least, the median,
/// the 90th percentile and the most.
const LINK_QUANTILES: [(&str, f64); 4] = [("0", 0.0), ("0.5", 0.5), ("0.9", 0.9), ("1", 1.0)];

/// How the players' links of each table stand: counts by feedback, and the spread of their
/// estimates, round trips and loss over the table's players, as gauges with a `quantile` label.
/// A per-player series would be one per session, unbounded; an operator finds the player
/// itself in the table's session listing.
fn player_links(out: &mut String, tables: &[(TableId, Arc<TableMetrics>)]) {
    let links: Vec<(String, Vec<Link>)> = tables
        .iter()
        .map(|(id, m)| (escape(id.as_str()), m.player_links()))
        .collect();
    let name = "tablecast_player_links";
    header(
        out,
        name,
        "gauge",
        "Players by where their link estimate comes from (transport-cc, remb or none) and whether it is limited (an estimate is known).",
    );
    for (table, links) in &links {
        for feedback in ["transport-cc", "remb", "none"] {
            for limited in [true, false] {
                let n = links
                    .iter()
                    .filter(|l| l.feedback == feedback && l.estimate_bps.is_some() == limited)
                    .count();
                let labels =
                    format!("table=\"{table}\",feedback=\"{feedback}\",limited=\"{limited}\"");
                sample(out, name, &labels, n as i128);
            }
        }
    }
    type Value = fn(&Link) -> Option<f64>;
    let spreads: [(&str, &str, Value); 3] = [
        (
            "tablecast_player_link_estimate_bps",
            "Link estimates of the table's limited players, bits per second, by quantile over those players (0 is the lowest).",
            |l| l.estimate_bps.map(|b| b as f64),
        ),
        (
            "tablecast_player_link_rtt_seconds",
            "Round trip times of the table's players, by quantile over the players whose round trip is known.",
            |l| l.rtt_ms.map(|ms| ms / 1e3),
        ),
        (
            "tablecast_player_link_loss_ratio",
            "Share of packets lost on the way to the table's players (before repair), by quantile over the players with feedback.",
            |l| (l.feedback != "none").then_some(l.loss),
        ),
    ];
    for (name, help, value) in spreads {
        header(out, name, "gauge", help);
        for (table, links) in &links {
            let mut values: Vec<f64> = links.iter().filter_map(value).collect();
            if values.is_empty() {
                continue;
            }
            values.sort_by(f64::total_cmp);
            for (q, at) in LINK_QUANTILES {
                let i = ((values.len() - 1) as f64 * at).round() as usize;
                let _ = writeln!(
                    out,
                    "{name}{{table=\"{table}\",quantile=\"{q}\"}} {}",
                    values[i]
                );
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: i128) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// Label value escaping per the exposition format: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn render_writes_help_type_and_one_sample_per_table_and_direction() {
        let metrics = Metrics::new();
        let demo = metrics.table(&TableId::parse("demo").unwrap());
        demo.subscribers.fetch_add(20, Relaxed);
        demo.publishers.fetch_add(1, Relaxed);
        demo.rtp_packets_out.fetch_add(1000, Relaxed);
        demo.nacks_received.fetch_add(7, Relaxed);
        demo.plis_sent.fetch_add(2, Relaxed);
        demo.layer_switches.fetch_add(4, Relaxed);
        metrics.table(&TableId::parse("vip.1").unwrap());
        metrics.node.sessions_reaped.fetch_add(3, Relaxed);

        let text = metrics.render();
        assert!(text.contains("# TYPE tablecast_subscribers gauge\n"));
        assert!(text.contains("# HELP tablecast_subscribers "));
        assert!(text.contains("tablecast_subscribers{table=\"demo\"} 20\n"));
        assert!(text.contains("tablecast_subscribers{table=\"vip.1\"} 0\n"));
        assert!(text.contains("tablecast_publishers{table=\"demo\"} 1\n"));
        assert!(text.contains("tablecast_rtp_packets_forwarded_total{table=\"demo\"} 1000\n"));
        assert!(
            text.contains("tablecast_nack_total{table=\"demo\",direction=\"from_subscriber\"} 7\n")
        );
        assert!(
            text.contains("tablecast_nack_total{table=\"demo\",direction=\"to_publisher\"} 0\n")
        );
        assert!(
            text.contains("tablecast_pli_total{table=\"demo\",direction=\"to_publisher\"} 2\n")
        );
        assert!(text.contains("tablecast_simulcast_layer_switches_total{table=\"demo\"} 4\n"));
        assert!(text.contains(
            "# TYPE tablecast_sessions_reaped_total counter\ntablecast_sessions_reaped_total 3\n"
        ));
        assert!(text.contains("tablecast_media_datagrams_unroutable_total 0\n"));

        // Every sample line belongs to a family announced by a TYPE line above it.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_owned()), "TYPE for {name} twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "{line} has no TYPE line before it");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<i128>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn player_links_are_counted_and_spread_over_the_table_and_forgotten_when_gone() {
        let metrics = Metrics::new();
        let demo = metrics.table(&TableId::parse("demo").unwrap());
        let links: Vec<Arc<LinkStats>> = [300_000, 600_000, 0, 2_500_000]
            .into_iter()
            .map(|limit| {
                let link = Arc::new(LinkStats::default());
                link.set_for_test(limit, 1_000_000, 1);
                demo.watch_link(&link);
                link
            })
            .collect();
        let silent = Arc::new(LinkStats::default());
        demo.watch_link(&silent);
        let text = metrics.render();
        let has = |line: &str| assert!(text.contains(&format!("{line}\n")), "{line} in\n{text}");
        has("# TYPE tablecast_player_links gauge");
        has(r#"tablecast_player_links{table="demo",feedback="transport-cc",limited="true"} 3"#);
        has(r#"tablecast_player_links{table="demo",feedback="transport-cc",limited="false"} 1"#);
        has(r#"tablecast_player_links{table="demo",feedback="none",limited="false"} 1"#);
        // Over the three limited players: the lowest, the median and the highest estimate.
        has(r#"tablecast_player_link_estimate_bps{table="demo",quantile="0"} 300000"#);
        has(r#"tablecast_player_link_estimate_bps{table="demo",quantile="0.5"} 600000"#);
        has(r#"tablecast_player_link_estimate_bps{table="demo",quantile="1"} 2500000"#);
        // No round trip known yet: no samples, only the family's header.
        assert!(!text.contains("tablecast_player_link_rtt_seconds{"));
        drop(links);
        let text = metrics.render();
        assert!(
            text.contains(
                "tablecast_player_links{table=\"demo\",feedback=\"transport-cc\",limited=\"true\"} 0\n"
            ),
            "{text}"
        );
        assert!(!text.contains("tablecast_player_link_estimate_bps{"));
        assert_eq!(demo.player_links().len(), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
