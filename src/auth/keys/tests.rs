use super::*;

const SECRET_A: &str = "secret-one-secret-one-secret-one";
const SECRET_B: &str = "secret-two-secret-two-secret-two";

fn user() -> UserId {
    UserId::parse("u1").unwrap()
}

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "tablecast-keys-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

fn config(secret: &str) -> AuthConfig {
    AuthConfig {
        secret: secret.into(),
        ..AuthConfig::default()
    }
}

fn claims(exp: u64) -> Claims {
    Claims {
        sub: "u1".into(),
        role: TokenRole::Player,
        table: "demo".into(),
        iat: 1,
        exp,
        iss: None,
        aud: None,
    }
}

/// Signs `claims` with an HS256 `secret`, naming `kid` when given.
fn hs256(secret: &str, kid: Option<&str>, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn bad_tokens_are_told_apart() {
    let tokens = Tokens::from_secret(SECRET_A.as_bytes());
    let other = Tokens::from_secret(SECRET_B.as_bytes());
    let t = other
        .issue(TokenRole::Player, "demo", &user(), Duration::from_secs(60))
        .unwrap();
    assert!(matches!(tokens.verify(&t), Err(AuthError::Malformed(_))));
    assert!(matches!(
        tokens.verify("garbage"),
        Err(AuthError::Malformed(_))
    ));

    let expired = hs256(SECRET_A, None, &claims(2));
    assert_eq!(tokens.verify(&expired).unwrap_err(), AuthError::Expired);
    let id = tokens.verify_any_age(&expired).unwrap();
    assert!(
        id.expired,
        "an old token is marked expired when let through"
    );
    assert!(AuthError::Expired.is_unauthenticated());
}

#[test]
fn a_short_secret_stops_the_node() {
    let err = Tokens::from_config(&config("too-short"), &dir())
        .err()
        .unwrap();
    assert!(
        matches!(err, TokenSetupError::ShortSecret { len: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("at least 32"), "{err}");

    let mut c = config(SECRET_A);
    c.keys.push(KeyConfig {
        id: "next".into(),
        secret: "short".into(),
        public_key: None,
    });
    assert!(matches!(
        Tokens::from_config(&c, &dir()),
        Err(TokenSetupError::ShortSecret { .. })
    ));
}

#[test]
fn tokens_name_their_key_and_rotation_keeps_both_working() {
    let mut c = config(SECRET_A);
    c.key_id = "2026-11".into();
    c.keys.push(KeyConfig {
        id: "2026-12".into(),
        secret: SECRET_B.into(),
        public_key: None,
    });
    let ring = Tokens::from_config(&c, &dir()).unwrap();
    assert_eq!(ring.key_ids(), ["2026-11", "2026-12"]);

    // The node signs with the primary and says so in `kid`.
    let own = ring
        .issue(TokenRole::Player, "demo", &user(), Duration::from_secs(60))
        .unwrap();
    let header = jsonwebtoken::decode_header(&own).unwrap();
    assert_eq!(header.kid.as_deref(), Some("2026-11"));
    assert!(ring.verify(&own).is_ok());

    // A backend already on the new key.
    let far = now_secs() + 600;
    assert!(
        ring.verify(&hs256(SECRET_B, Some("2026-12"), &claims(far)))
            .is_ok()
    );
    // A kid must match its key: the new key's id with the old secret is refused.
    assert!(matches!(
        ring.verify(&hs256(SECRET_A, Some("2026-12"), &claims(far))),
        Err(AuthError::Malformed(_))
    ));
    // Without kid only the primary key is tried.
    assert!(ring.verify(&hs256(SECRET_A, None, &claims(far))).is_ok());
    assert!(ring.verify(&hs256(SECRET_B, None, &claims(far))).is_err());
    // A key the node does not have.
    assert_eq!(
        ring.verify(&hs256(SECRET_B, Some("2027-01"), &claims(far)))
            .unwrap_err(),
        AuthError::UnknownKey("2027-01".into())
    );

    // Signing with the new key once the operator says so.
    c.signing_key = "2026-12".into();
    let ring = Tokens::from_config(&c, &dir()).unwrap();
    let t = ring
        .issue(TokenRole::Player, "demo", &user(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&t).unwrap().kid.as_deref(),
        Some("2026-12")
    );

    c.signing_key = "nope".into();
    assert!(matches!(
        Tokens::from_config(&c, &dir()),
        Err(TokenSetupError::UnknownSigningKey(_))
    ));
    c.signing_key.clear();
    c.keys[0].id = "2026-11".into();
    assert!(matches!(
        Tokens::from_config(&c, &dir()),
        Err(TokenSetupError::DuplicateKeyId(_))
    ));
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let mut c = config(SECRET_A);
    c.issuer = "casino-backend".into();
    c.audience = "tablecast".into();
    let ring = Tokens::from_config(&c, &dir()).unwrap();
    let own = ring
        .issue(TokenRole::Player, "demo", &user(), Duration::from_secs(60))
        .unwrap();
    assert!(
        ring.verify(&own).is_ok(),
        "the node's own tokens carry iss and aud"
    );

    let far = now_secs() + 600;
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut cl = claims(far);
        cl.iss = iss.map(str::to_owned);
        cl.aud = aud.map(|a| serde_json::Value::String(a.into()));
        hs256(SECRET_A, None, &cl)
    };
    assert!(
        ring.verify(&with(Some("casino-backend"), Some("tablecast")))
            .is_ok()
    );
    for (iss, aud) in [
        (None, Some("tablecast")),
        (Some("someone-else"), Some("tablecast")),
        (Some("casino-backend"), None),
        (Some("casino-backend"), Some("another-service")),
    ] {
        assert!(
            matches!(ring.verify(&with(iss, aud)), Err(AuthError::Malformed(_))),
            "iss {iss:?} aud {aud:?} must be refused"
        );
    }
    // Without a configured audience, a token that carries one is still good.
    let plain = Tokens::from_secret(SECRET_A.as_bytes());
    assert!(plain.verify(&with(Some("x"), Some("y"))).is_ok());
}

#[test]
fn an_es256_public_key_verifies_what_the_backend_signs() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    let public = d.join("backend.pub.pem");
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    let mut c = config(SECRET_A);
    c.keys.push(KeyConfig {
        id: "backend-es".into(),
        secret: String::new(),
        public_key: Some(public.clone()),
    });
    let ring = Tokens::from_config(&c, &d).unwrap();

    let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("backend-es".into());
    let t = jsonwebtoken::encode(&header, &claims(now_secs() + 600), &signing).unwrap();
    let id = ring.verify(&t).unwrap();
    assert_eq!(id.user.as_str(), "u1");

    // An HS256 token that claims the ES256 key's id (algorithm confusion) is refused.
    let confused = hs256(SECRET_A, Some("backend-es"), &claims(now_secs() + 600));
    assert!(matches!(
        ring.verify(&confused),
        Err(AuthError::Malformed(_))
    ));

    // The node cannot be told to sign with a key it only verifies with.
    c.signing_key = "backend-es".into();
    assert!(matches!(
        Tokens::from_config(&c, &d),
        Err(TokenSetupError::UnknownSigningKey(_))
    ));
    c.signing_key.clear();
    c.keys[0].secret = SECRET_B.into();
    assert!(matches!(
        Tokens::from_config(&c, &d),
        Err(TokenSetupError::BadKey { .. })
    ));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn the_fingerprint_tells_key_rings_apart_without_showing_them() {
    let a = Tokens::from_config(&config(SECRET_A), &dir()).unwrap();
    let a2 = Tokens::from_config(&config(SECRET_A), &dir()).unwrap();
    let b = Tokens::from_config(&config(SECRET_B), &dir()).unwrap();
    assert_eq!(a.fingerprint(), a2.fingerprint());
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert!(!a.fingerprint().contains(&hex::encode(SECRET_A)));
    let mut c = config(SECRET_A);
    c.audience = "x".into();
    assert_ne!(
        Tokens::from_config(&c, &dir()).unwrap().fingerprint(),
        a.fingerprint()
    );
}

#[test]
fn the_generated_secret_is_private_and_reused() {
    let dir = dir();
    let a = persisted_secret(&dir).unwrap();
    let b = persisted_secret(&dir).unwrap();
    assert_eq!(a, b);
    assert!(a.len() >= MIN_SECRET_BYTES);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("auth.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let _ = std::fs::remove_dir_all(dir);
}
