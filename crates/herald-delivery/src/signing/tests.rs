//! The signature is checked against an HMAC written here from SHA-256 alone (RFC 2104), not
//! against the `hmac` crate Herald signs with.

use super::*;

/// RFC 2104: H((K ⊕ opad) || H((K ⊕ ipad) || m)), block size 64, keys longer than a block
/// hashed first.
fn reference_hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn reference_signature(secret: &str, id: &str, ts: u64, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("prefix"))
        .expect("base64");
    let mut m = format!("{id}.{ts}.").into_bytes();
    m.extend_from_slice(body);
    BASE64.encode(reference_hmac(&key, &m))
}

fn secret(s: &str) -> SigningSecret {
    SigningSecret {
        secret: s.into(),
        created_at_ms: 0,
        expires_at_ms: None,
    }
}

#[test]
fn the_reference_hmac_matches_rfc_4231_test_cases() {
    // Test case 2 (short key) and 6 (key longer than a block).
    assert_eq!(
        hex(&reference_hmac(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex(&reference_hmac(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn a_signature_is_the_hmac_of_id_timestamp_and_body_under_the_decoded_secret() {
    let s = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"resourceType":"Bundle","type":"history"}"#;
    let key = secret_key(s).expect("key");
    let ours = sign(&key, "msg_abc", 1_700_000_000, body).expect("sign");
    assert_eq!(ours, reference_signature(s, "msg_abc", 1_700_000_000, body));
    // Every input counts.
    assert_ne!(
        ours,
        sign(&key, "msg_abd", 1_700_000_000, body).expect("sign")
    );
    assert_ne!(
        ours,
        sign(&key, "msg_abc", 1_700_000_001, body).expect("sign")
    );
    assert_ne!(
        ours,
        sign(&key, "msg_abc", 1_700_000_000, b"{}").expect("sign")
    );
}

#[test]
fn the_standard_webhooks_example_signs_as_published() {
    // The example of the Standard Webhooks specification (and its reference libraries' tests).
    let s = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let signing = Signing::new("msg_p5jXN8AQM9LWM0D4loKWxJek".into(), &[&secret(s)]).expect("s");
    assert_eq!(
        signing.header(1_614_265_330, br#"{"test": 2432232314}"#),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn long_random_secrets_sign_like_the_reference() {
    for _ in 0..8 {
        let s = new_secret(0).expect("secret").secret;
        let body = format!("{{\"n\":{}}}", s.len()).into_bytes();
        let signing = Signing::new("msg_1".into(), &[&secret(&s)]).expect("signing");
        assert_eq!(
            signing.header(42, &body),
            format!("v1,{}", reference_signature(&s, "msg_1", 42, &body))
        );
    }
}

#[test]
fn during_an_overlap_the_header_carries_both_signatures_newest_first() {
    let (new, old) = (
        new_secret(0).expect("new").secret,
        new_secret(0).expect("old").secret,
    );
    let signing = Signing::new("msg_x".into(), &[&secret(&new), &secret(&old)]).expect("signing");
    let body = b"{\"a\":1}";
    assert_eq!(
        signing.header(7, body),
        format!(
            "v1,{} v1,{}",
            reference_signature(&new, "msg_x", 7, body),
            reference_signature(&old, "msg_x", 7, body)
        )
    );
}

#[test]
fn secrets_are_whsec_and_32_random_bytes_in_base64() {
    let a = new_secret(5).expect("a");
    let b = new_secret(5).expect("b");
    assert!(a.secret.starts_with("whsec_"));
    assert_eq!(secret_key(&a.secret).map(|k| k.len()), Some(32));
    assert_ne!(a.secret, b.secret);
    assert_eq!(a.created_at_ms, 5);
    let k = new_keys(5).expect("keys");
    assert_eq!(k.id_seed.len(), 32);
}

#[test]
fn malformed_secrets_are_refused_rather_than_signing_with_an_empty_key() {
    for bad in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_",
        "whsec_!!notbase64",
    ] {
        assert!(secret_key(bad).is_none(), "{bad}");
        assert!(matches!(
            Signing::new("m".into(), &[&secret(bad)]),
            Err(SigningError::Malformed)
        ));
    }
    assert!(sign(&[], "m", 1, b"").is_none());
}

#[test]
fn message_ids_stay_the_same_across_retries_and_differ_between_notifications() {
    let keys = new_keys(0).expect("keys");
    let failing = DeliveryState {
        consecutive_failures: 2,
        last_sent_at_ms: Some(1000),
        ..DeliveryState::default()
    };
    let first_try = DeliveryState {
        last_sent_at_ms: Some(1000),
        ..DeliveryState::default()
    };
    let id = |k: &SigningKeys, job, s: &DeliveryState| message_id(k, "r4", "s1", job, s);
    // A retry: the failure streak changes, the id does not.
    for job in [Job::Handshake, Job::Heartbeat, Job::Events(3, 5)] {
        assert_eq!(id(&keys, job, &first_try), id(&keys, job, &failing));
        assert!(id(&keys, job, &first_try).starts_with("msg_"));
    }
    // Different notifications.
    assert_ne!(
        id(&keys, Job::Events(3, 5), &first_try),
        id(&keys, Job::Events(3, 6), &first_try)
    );
    assert_ne!(
        id(&keys, Job::Handshake, &first_try),
        id(&keys, Job::Heartbeat, &first_try)
    );
    let later = DeliveryState {
        last_sent_at_ms: Some(61_000),
        ..DeliveryState::default()
    };
    assert_ne!(
        id(&keys, Job::Heartbeat, &first_try),
        id(&keys, Job::Heartbeat, &later)
    );
    // Another subscription, or the same id created anew (another seed).
    assert_ne!(
        message_id(&keys, "r4", "s2", Job::Events(1, 1), &first_try),
        id(&keys, Job::Events(1, 1), &first_try)
    );
    let reborn = new_keys(0).expect("keys");
    assert_ne!(
        id(&reborn, Job::Events(1, 1), &first_try),
        id(&keys, Job::Events(1, 1), &first_try)
    );
}

#[test]
fn signing_material_never_shows_its_keys_in_debug_output() {
    let s = new_secret(0).expect("secret").secret;
    let signing = Signing::new("msg_1".into(), &[&secret(&s)]).expect("signing");
    let shown = format!("{signing:?}");
    assert!(shown.contains("msg_1"));
    let key = secret_key(&s).expect("key");
    assert!(!shown.contains(&s[6..]) && !shown.contains(&format!("{:?}", key[0..4].to_vec())));
}
