//! A Standard Webhooks verifier, as a receiver would write it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

/// How far `webhook-timestamp` may be from now, as the specification recommends.
const TOLERANCE_SECS: u64 = 5 * 60;

/// Whether `headers` carry a valid Standard Webhooks signature of `body` for `secret`
/// (`whsec_` + base64; a bare base64 key is accepted too, as receiver libraries do), with
/// a timestamp within five minutes of now.
pub fn verify_standard_webhook(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    verify_standard_webhook_at(secret, headers, body, now)
}

/// [`verify_standard_webhook`] against a given clock (Unix seconds).
pub fn verify_standard_webhook_at(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: u64,
) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(sent_at) = timestamp.parse::<u64>() else {
        return false;
    };
    if sent_at.abs_diff(now_secs) > TOLERANCE_SECS {
        return false;
    }
    let encoded_key = secret.strip_prefix("whsec_").unwrap_or(secret);
    let Ok(key) = STANDARD.decode(encoded_key) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    let mut signed = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    mac.update(&signed);

    // The header holds space-separated `version,signature` pairs (several during key
    // rotation); one valid v1 signature is enough.
    signatures.split(' ').any(|candidate| {
        let Some(("v1", encoded)) = candidate.split_once(',') else {
            return false;
        };
        match STANDARD.decode(encoded) {
            // verify_slice compares in constant time.
            Ok(sig) => mac.clone().verify_slice(&sig).is_ok(),
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_headers(signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
        );
        h.insert("webhook-timestamp", "1614265330".parse().unwrap());
        h.insert("webhook-signature", signature.parse().unwrap());
        h
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn accepts_the_specification_test_vector() {
        let h = vector_headers(SIGNATURE);
        assert!(verify_standard_webhook_at(SECRET, &h, BODY, 1_614_265_330));
        // Several signatures: any valid one will do.
        let h = vector_headers(&format!("v1,bm9wZQ== {SIGNATURE}"));
        assert!(verify_standard_webhook_at(SECRET, &h, BODY, 1_614_265_330));
    }

    #[test]
    fn rejects_tampering_wrong_keys_and_stale_timestamps() {
        let h = vector_headers(SIGNATURE);
        assert!(!verify_standard_webhook_at(
            SECRET,
            &h,
            br#"{"test": 2432232315}"#,
            1_614_265_330
        ));
        assert!(!verify_standard_webhook_at(
            "whsec_c2VjcmV0",
            &h,
            BODY,
            1_614_265_330
        ));
        assert!(!verify_standard_webhook_at(
            SECRET,
            &h,
            BODY,
            1_614_265_330 + 3600
        ));
        assert!(!verify_standard_webhook_at(
            SECRET,
            &vector_headers("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            BODY,
            1_614_265_330
        ));
        assert!(!verify_standard_webhook_at(
            SECRET,
            &HeaderMap::new(),
            BODY,
            1_614_265_330
        ));
    }
}
