use super::*;
use crate::config::LimitsConfig;

fn admission(tweak: impl FnOnce(&mut LimitsConfig)) -> Admission {
    let mut c = LimitsConfig::default();
    tweak(&mut c);
    Admission::new(c, Metrics::new())
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn sessions_are_capped_per_user_and_given_back_when_dropped() {
    let a = admission(|c| c.sessions_per_user = 2);
    let now = Instant::now();
    let p1 = a.session(&user("u1"), ip("127.0.0.1"), now).unwrap();
    let _p2 = a.session(&user("u1"), ip("127.0.0.2"), now).unwrap();
    let refused = a.session(&user("u1"), ip("127.0.0.3"), now).unwrap_err();
    assert_eq!(refused.limit, Limit::SessionsPerUser);
    assert!(refused.retry_after_secs >= 1);
    assert!(
        refused.to_string().contains("sessions_per_user"),
        "{refused}"
    );
    // Another user is not affected.
    assert!(a.session(&user("u2"), ip("127.0.0.1"), now).is_ok());
    drop(p1);
    assert_eq!(a.sessions_of(&user("u1")), 1);
    assert!(a.session(&user("u1"), ip("127.0.0.1"), now).is_ok());
    assert_eq!(a.0.metrics.node.limit_refusals(Limit::SessionsPerUser), 1);
}

#[test]
fn sessions_are_capped_per_address_with_ipv6_by_its_64() {
    let a = admission(|c| c.sessions_per_address = 2);
    let now = Instant::now();
    let _a = a.session(&user("a"), ip("2001:db8:1:2::1"), now).unwrap();
    let _b = a
        .session(&user("b"), ip("2001:db8:1:2::ffff"), now)
        .unwrap();
    let refused = a
        .session(&user("c"), ip("2001:db8:1:2:3::9"), now)
        .unwrap_err();
    assert_eq!(refused.limit, Limit::SessionsPerAddress);
    assert!(a.session(&user("c"), ip("2001:db8:1:3::1"), now).is_ok());
    // An IPv4-mapped address is the IPv4 address.
    let _v4 = a.session(&user("d"), ip("192.0.2.1"), now).unwrap();
    let _m = a.session(&user("e"), ip("::ffff:192.0.2.1"), now).unwrap();
    assert_eq!(
        a.session(&user("f"), ip("192.0.2.1"), now)
            .unwrap_err()
            .limit,
        Limit::SessionsPerAddress
    );
}

#[test]
fn setups_are_rated_per_address_and_refill() {
    let a = admission(|c| {
        c.setups_burst = 3;
        c.setups_per_sec = 2.0;
        c.sessions_per_user = 100;
    });
    let t0 = Instant::now();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(a.session(&user("u"), ip("127.0.0.1"), t0).unwrap());
    }
    let refused = a.session(&user("u"), ip("127.0.0.1"), t0).unwrap_err();
    assert_eq!(refused.limit, Limit::Setups);
    assert_eq!(refused.retry_after_secs, 1);
    // Another address has its own bucket.
    assert!(a.session(&user("u"), ip("127.0.0.2"), t0).is_ok());
    // Half a second later one setup is back.
    let t1 = t0 + Duration::from_millis(500);
    assert!(a.session(&user("u"), ip("127.0.0.1"), t1).is_ok());
    assert!(a.session(&user("u"), ip("127.0.0.1"), t1).is_err());
}

#[test]
fn websockets_are_capped_per_address_and_while_silent() {
    let a = admission(|c| {
        c.websockets_per_address = 3;
        c.pending_websockets_per_address = 2;
    });
    let (s1, p1) = a.websocket(ip("127.0.0.1"), Instant::now()).unwrap();
    let (_s2, _p2) = a.websocket(ip("127.0.0.1"), Instant::now()).unwrap();
    assert_eq!(
        a.websocket(ip("127.0.0.1"), Instant::now())
            .unwrap_err()
            .limit,
        Limit::PendingWebSockets
    );
    // The first one says hello: its pending slot is free, its socket slot is not.
    drop(p1);
    let (_s3, p3) = a.websocket(ip("127.0.0.1"), Instant::now()).unwrap();
    drop(p3);
    assert_eq!(
        a.websocket(ip("127.0.0.1"), Instant::now())
            .unwrap_err()
            .limit,
        Limit::WebSocketsPerAddress
    );
    drop(s1);
    assert!(a.websocket(ip("127.0.0.1"), Instant::now()).is_ok());
}

#[test]
fn a_bucket_says_how_long_to_wait() {
    let t0 = Instant::now();
    let mut b = Bucket::new(1, 0.25, t0);
    assert!(b.take(t0));
    assert!(!b.take(t0));
    assert_eq!(b.wait(t0), Duration::from_secs(4));
    assert!(!b.is_full(t0 + Duration::from_secs(3)));
    assert!(b.is_full(t0 + Duration::from_secs(4)));
}

#[test]
fn websocket_opens_take_from_the_setup_rate() {
    let a = admission(|c| {
        c.setups_burst = 2;
        c.setups_per_sec = 0.5;
    });
    let now = Instant::now();
    drop(a.websocket(ip("127.0.0.1"), now).unwrap());
    drop(a.session(&user("u"), ip("127.0.0.1"), now).unwrap());
    assert_eq!(
        a.websocket(ip("127.0.0.1"), now).unwrap_err().limit,
        Limit::Setups
    );
}
