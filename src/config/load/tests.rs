use super::*;
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

#[test]
fn the_shipped_config_parses_and_matches_the_code_defaults() {
    let c = from_toml(SHIPPED_CONFIG).unwrap();
    let d = Config::default();
    assert_eq!(c.http.listen, d.http.listen);
    assert_eq!(c.http.tls, d.http.tls);
    assert_eq!(c.http.max_sdp_bytes, 64 * 1024);
    assert_eq!(c.media.udp_port, d.media.udp_port);
    assert_eq!(c.media.nack_buffer_packets, d.media.nack_buffer_packets);
    assert_eq!(c.media.socket_recv_buffer, d.media.socket_recv_buffer);
    assert!(c.auth.demo);
    assert_eq!(c.table_ids(), vec![TableId::parse("demo").unwrap()]);
    assert_eq!(
        toml::to_string(&c.control).unwrap(),
        toml::to_string(&d.control).unwrap(),
        "[control] in config.toml documents the code's defaults"
    );
    let shipped: crate::protocol::TableConfig =
        toml::Value::Table(c.tables[0].clone()).try_into().unwrap();
    assert_eq!(
        shipped,
        crate::protocol::TableConfig::demo_baccarat(),
        "the shipped demo table is the built-in one"
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
