use super::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn missing() -> PathBuf {
    PathBuf::from("/nonexistent/tablecast-test/config.toml")
}

/// Where `shipped` and `default` differ, one line per key path: a value that differs, or a key
/// present on one side only.
fn differences(
    path: &str,
    shipped: Option<&toml::Value>,
    default: Option<&toml::Value>,
) -> Vec<String> {
    use toml::Value;
    let child = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (shipped, default) {
        (None, None) => Vec::new(),
        (Some(s), None) => vec![format!(
            "{path}: in config.toml ({s}) but not in Config::default()"
        )],
        (None, Some(d)) => vec![format!(
            "{path}: in Config::default() ({d}) but not in config.toml"
        )],
        (Some(Value::Table(s)), Some(Value::Table(d))) => {
            let keys: BTreeSet<&String> = s.keys().chain(d.keys()).collect();
            keys.into_iter()
                .flat_map(|k| differences(&child(k), s.get(k), d.get(k)))
                .collect()
        }
        (Some(Value::Array(s)), Some(Value::Array(d))) => (0..s.len().max(d.len()))
            .flat_map(|i| differences(&format!("{path}[{i}]"), s.get(i), d.get(i)))
            .collect(),
        (Some(s), Some(d)) if s == d => Vec::new(),
        (Some(s), Some(d)) => vec![format!(
            "{path}: config.toml has {s}, Config::default() has {d}"
        )],
    }
}

/// The shipped config.toml as written (not as read into `Config`, which would fill in whatever it
/// leaves out) and the embedded defaults, serialized: every key must be on both sides, with the
/// same value. The shipped `[[tables]]` entry is compared with the built-in demo table, which is
/// what a node serves when no table is listed.
fn shipped_against_defaults(shipped_text: &str) -> Vec<String> {
    let mut shipped: toml::Table = shipped_text.parse().unwrap();
    let mut defaults = toml::Table::try_from(Config::default()).unwrap();
    let shipped_tables = shipped.remove("tables");
    let default_tables = defaults.remove("tables");
    assert!(
        default_tables
            .as_ref()
            .is_none_or(|t| t.as_array().is_some_and(|a| a.is_empty())),
        "Config::default() lists no tables: {default_tables:?}"
    );
    let mut out = differences(
        "",
        Some(&toml::Value::Table(shipped)),
        Some(&toml::Value::Table(defaults)),
    );
    let demo = toml::Value::try_from(crate::protocol::TableConfig::demo_baccarat()).unwrap();
    out.extend(differences(
        "tables",
        shipped_tables.as_ref(),
        Some(&toml::Value::Array(vec![demo])),
    ));
    out
}

#[test]
fn the_shipped_config_and_the_embedded_defaults_agree_on_every_key() {
    let differ = shipped_against_defaults(SHIPPED_CONFIG);
    assert!(
        differ.is_empty(),
        "config.toml and Config::default() (or the built-in demo table) disagree; \
         change one to match the other:\n  {}",
        differ.join("\n  ")
    );
    // And the shipped file is a valid config that reads back as the defaults.
    let read = toml::Table::try_from(from_toml(SHIPPED_CONFIG).unwrap()).unwrap();
    let mut defaults = toml::Table::try_from(Config::default()).unwrap();
    let mut read = read;
    read.remove("tables");
    defaults.remove("tables");
    assert_eq!(read, defaults);
}

#[test]
fn a_changed_or_missing_key_is_reported_with_its_path() {
    let changed = SHIPPED_CONFIG.replacen("demo = true", "demo = false", 1);
    let differ = shipped_against_defaults(&changed);
    assert_eq!(differ.len(), 1, "{differ:?}");
    assert!(
        differ[0].starts_with("auth.demo: config.toml has false"),
        "{differ:?}"
    );

    let missing = SHIPPED_CONFIG.replacen("udp_port = 10000\n", "", 1);
    let differ = shipped_against_defaults(&missing);
    assert_eq!(
        differ,
        ["media.udp_port: in Config::default() (10000) but not in config.toml"]
    );

    let extra = SHIPPED_CONFIG.replacen("[node]\n", "[node]\nextra = 1\n", 1);
    assert_eq!(
        shipped_against_defaults(&extra),
        ["node.extra: in config.toml (1) but not in Config::default()"]
    );

    let spot = SHIPPED_CONFIG.replacen("max_bet = 20000", "max_bet = 30000", 1);
    let differ = shipped_against_defaults(&spot);
    assert_eq!(differ.len(), 1, "{differ:?}");
    assert!(
        differ[0].starts_with("tables[0].spots[2].max_bet:"),
        "{differ:?}"
    );
}

#[test]
fn control_limits_can_be_overridden_from_the_environment() {
    let loaded = load(
        &missing(),
        env(&[("TABLECAST_CONTROL_BETS_PER_SEC", "1000")]),
    )
    .unwrap();
    assert_eq!(loaded.config.control.bets_per_sec, 1000.0);
}

#[test]
fn a_missing_file_means_the_built_in_defaults_and_a_note() {
    let loaded = load(&missing(), env(&[])).unwrap();
    assert!(loaded.notes[0].contains("not found"));
    assert_eq!(loaded.config.http.listen.port(), 8443);
}

#[test]
fn every_kind_of_key_can_be_overridden_from_the_environment() {
    let loaded = load(
        &missing(),
        env(&[
            ("TABLECAST_HTTP_LISTEN", "127.0.0.1:9000"),
            ("TABLECAST_HTTP_TLS", "false"),
            ("TABLECAST_HTTP_PLAIN_LISTEN", "127.0.0.1:9001"),
            ("TABLECAST_MEDIA_UDP_PORT", "20000"),
            ("TABLECAST_MEDIA_WORKERS", "3"),
            ("TABLECAST_MEDIA_ANNOUNCE_IPS", "203.0.113.7, 2001:db8::7"),
            ("TABLECAST_DATA_DIR", "/tmp/x"),
            ("TABLECAST_AUTH_SECRET", "12345"),
            ("TABLECAST_AUTH_DEMO", "false"),
            ("TABLECAST_LOG_FILTER", "debug"),
            ("TABLECAST_CONFIG", "ignored.toml"),
        ]),
    )
    .unwrap();
    let c = loaded.config;
    assert_eq!(c.http.listen.port(), 9000);
    assert!(!c.http.tls);
    assert_eq!(c.http.plain_listen.map(|a| a.port()), Some(9001));
    assert_eq!(c.media.udp_port, 20000);
    assert_eq!(c.media.workers, 3);
    assert_eq!(c.media.announce_ips.len(), 2);
    assert_eq!(c.data.dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.auth.secret, "12345", "a numeric secret stays a string");
    assert!(!c.auth.demo);
    assert_eq!(c.log.filter, "debug");
    assert!(loaded.notes.iter().all(|n| !n.contains("TABLECAST_CONFIG")));
}

#[test]
fn environment_mistakes_name_the_variable_and_the_fix() {
    let e = load(&missing(), env(&[("TABLECAST_MEDIA_UDP_PORT", "lots")])).unwrap_err();
    assert!(e.to_string().contains("TABLECAST_MEDIA_UDP_PORT"), "{e}");
    assert!(e.to_string().contains("integer"), "{e}");

    let e = load(&missing(), env(&[("TABLECAST_HTTP_LISTN", "x")])).unwrap_err();
    assert!(e.to_string().contains("known keys"), "{e}");

    let loaded = load(&missing(), env(&[("TABLECAST_HTPP_LISTEN", "x")])).unwrap();
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("TABLECAST_HTPP_LISTEN"))
    );

    let e = load(&missing(), env(&[("TABLECAST_HTTP_LISTEN", "nowhere")])).unwrap_err();
    assert!(e.to_string().contains("TABLECAST_HTTP_LISTEN"), "{e}");
}

#[test]
fn an_empty_value_unsets_an_optional_key() {
    let dir = std::env::temp_dir().join(format!("tablecast-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, "[http]\nplain_listen = \"127.0.0.1:8080\"\n").unwrap();
    let c = load(&path, env(&[])).unwrap().config;
    assert!(c.http.plain_listen.is_some());
    let c = load(&path, env(&[("TABLECAST_HTTP_PLAIN_LISTEN", "")]))
        .unwrap()
        .config;
    assert!(c.http.plain_listen.is_none());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn validation_names_the_key() {
    let cases = [
        (
            "[media]\nnack_buffer_packets = 1000\n",
            "media.nack_buffer_packets",
        ),
        (
            "[media]\nannounce_ips = [\"0.0.0.0\"]\n",
            "media.announce_ips",
        ),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[[tables]]\nname = \"x\"\n", "tables[0].id"),
        ("[[tables]]\nid = \"a b\"\n", "tables[0].id"),
        (
            "[[tables]]\nid = \"a\"\n[[tables]]\nid = \"a\"\n",
            "tables[1].id",
        ),
        ("[http]\nmax_sdp_bytes = 10\n", "http.max_sdp_bytes"),
    ];
    for (text, key) in cases {
        let e = from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text:?}: {e}");
    }
    let e = from_toml("[http]\nlisten = 5\n").unwrap_err().to_string();
    assert!(e.contains("listen"), "{e}");
}

#[test]
fn no_tables_means_the_built_in_demo_table() {
    let c = from_toml("").unwrap();
    assert_eq!(c.table_ids(), vec![TableId::parse("demo").unwrap()]);
    let c = from_toml("[[tables]]\nid = \"bac-1\"\n[[tables]]\nid = \"bac-2\"\n").unwrap();
    assert_eq!(c.table_ids().len(), 2);
}

#[test]
fn the_metrics_listener_can_be_moved_or_turned_off() {
    let d = Config::default();
    assert_eq!(d.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    let c = load(
        &missing(),
        env(&[("TABLECAST_METRICS_LISTEN", "127.0.0.1:9999")]),
    )
    .unwrap()
    .config;
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9999".parse().unwrap()));
    let c = load(&missing(), env(&[("TABLECAST_METRICS_LISTEN", "")]))
        .unwrap()
        .config;
    assert_eq!(c.metrics.listen, None);
    assert_eq!(
        from_toml("[metrics]\nlisten = \"\"\n")
            .unwrap()
            .metrics
            .listen,
        None
    );
    let e = from_toml("[metrics]\nlisten = \"nowhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen") && e.contains("IP:PORT"), "{e}");
    let e = from_toml("[http]\nlisten = \"127.0.0.1:9464\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics.listen"), "{e}");
}

#[test]
fn the_pulls_bind_address_is_the_media_one_unless_set() {
    assert_eq!(Config::default().media.relay_bind_ip, None);
    let c = load(
        &missing(),
        env(&[("TABLECAST_MEDIA_RELAY_BIND_IP", "127.0.0.3")]),
    )
    .unwrap()
    .config;
    assert_eq!(c.media.relay_bind_ip, Some("127.0.0.3".parse().unwrap()));
    let c = from_toml("[media]\nrelay_bind_ip = \"\"\n").unwrap();
    assert_eq!(c.media.relay_bind_ip, None);
    let e = from_toml("[media]\nrelay_bind_ip = \"10.0.0.300\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("relay_bind_ip") && e.contains("not an IP address"),
        "{e}"
    );
}

#[test]
fn demo_limits_come_from_the_file_or_the_environment() {
    let d = Config::default();
    assert!(d.auth.demo);
    let nets: Vec<String> = d
        .auth
        .demo_dealer_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(d.auth.demo_tables, [TableId::parse("demo").unwrap()]);

    let c = load(
        &missing(),
        env(&[
            (
                "TABLECAST_AUTH_DEMO_DEALER_NETWORKS",
                "127.0.0.0/8, 192.168.1.0/24",
            ),
            ("TABLECAST_AUTH_DEMO_TABLES", "demo,vip"),
        ]),
    )
    .unwrap()
    .config;
    let nets: Vec<String> = c
        .auth
        .demo_dealer_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["127.0.0.0/8", "192.168.1.0/24"]);
    assert_eq!(c.auth.demo_tables.len(), 2);
    let c = load(
        &missing(),
        env(&[("TABLECAST_AUTH_DEMO_DEALER_NETWORKS", "")]),
    )
    .unwrap()
    .config;
    assert!(
        c.auth.demo_dealer_networks.is_empty(),
        "no demo dealers at all"
    );

    let e = from_toml("[auth]\ndemo_dealer_networks = [\"lan\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("demo_dealer_networks") && e.contains("127.0.0.0/8"),
        "{e}"
    );
    let e = from_toml("[auth]\ndemo_tables = [\"a b\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("demo_tables"), "{e}");
}

#[test]
fn turn_servers_and_their_secret_come_from_the_file_or_the_environment() {
    let d = Config::default();
    assert!(d.turn.urls.is_empty() && d.turn.secret.is_empty());
    assert_eq!(d.turn.ttl_secs, 3600);
    let c = load(
        &missing(),
        env(&[
            (
                "TABLECAST_TURN_URLS",
                "turn:turn.example.com:3478?transport=udp, turns:turn.example.com:443?transport=tcp",
            ),
            ("TABLECAST_TURN_SECRET", "0123456789"),
            ("TABLECAST_TURN_TTL_SECS", "600"),
        ]),
    )
    .unwrap()
    .config;
    assert_eq!(c.turn.urls.len(), 2);
    assert_eq!(
        c.turn.secret.expose(),
        "0123456789",
        "a numeric secret stays a string"
    );
    assert_eq!(c.turn.ttl_secs, 600);
    let e = load(
        &missing(),
        env(&[("TABLECAST_TURN_URLS", "stun:stun.example.com")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("turn.urls") && e.contains("turn:"), "{e}");
}
