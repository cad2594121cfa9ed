//! Signed notifications (webhooks), the rules: which targets may be called, what a message
//! looks like and how it is signed (the Standard Webhooks specification), and when a failed
//! delivery is tried again.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::audit::EventKind;

/// The events an endpoint receives when it names none.
pub const DEFAULT_KINDS: [EventKind; 5] = [
    EventKind::ReplayRefused,
    EventKind::Locked,
    EventKind::Removed,
    EventKind::RecoveryCodeUsed,
    EventKind::RecoveryCodesGenerated,
];

/// Why a target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    #[error("the URL does not parse")]
    Malformed,
    #[error(
        "only https URLs are accepted (http only for loopback, when private targets are allowed)"
    )]
    NotHttps,
    #[error("the target {0} is a private, loopback or link-local address")]
    Private(IpAddr),
}

/// Whether an address is one an outsider must not make tessera call (SSRF): loopback,
/// private, link-local, carrier-grade NAT, unspecified, unique-local, multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// The scheme and host rule for an endpoint's URL: https, or http to a loopback host when
/// private targets are allowed (tests, a sidecar); a literal address must not be private
/// unless allowed. (Names are checked again at each delivery, against what they resolve to.)
pub fn check_target(
    scheme: &str,
    host: Option<&str>,
    allow_private: bool,
) -> Result<(), TargetRefused> {
    let host = host.ok_or(TargetRefused::Malformed)?;
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let loopback = literal.is_some_and(|ip| ip.is_loopback()) || host == "localhost";
    match scheme {
        "https" => {}
        "http" if loopback && allow_private => {}
        _ => return Err(TargetRefused::NotHttps),
    }
    match literal {
        Some(ip) if is_private(ip) && !allow_private => Err(TargetRefused::Private(ip)),
        None if loopback && !allow_private => {
            Err(TargetRefused::Private(IpAddr::from([127, 0, 0, 1])))
        }
        _ => Ok(()),
    }
}

/// The `webhook-signature` header of a message (Standard Webhooks, "v1"): the HMAC-SHA256,
/// under the endpoint's secret, of `<id>.<timestamp>.<body>`, in base64.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
}

/// An endpoint's secret as the specification writes it: `whsec_` and the key in base64.
pub fn secret_text(secret: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(secret))
}

/// The wait before try `attempt` (1: the first retry): exponential from `base`, capped at
/// `cap`, with the jitter `jitter` (0.0 to 1.0, drawn by the caller) taking up to half of it
/// off, so that endpoints that failed together do not come back together.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exponent).min(cap);
    full.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's test vector (standard-webhooks, "Verifying signatures").
    #[test]
    fn the_signature_is_the_specifications() {
        let secret = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn targets_follow_the_rules() {
        assert_eq!(
            check_target("https", Some("hooks.example.com"), false),
            Ok(())
        );
        assert_eq!(
            check_target("http", Some("hooks.example.com"), true),
            Err(TargetRefused::NotHttps)
        );
        assert!(matches!(
            check_target("https", Some("10.1.2.3"), false),
            Err(TargetRefused::Private(_))
        ));
        assert!(matches!(
            check_target("https", Some("[::1]"), false),
            Err(TargetRefused::Private(_))
        ));
        assert!(check_target("http", Some("127.0.0.1"), false).is_err());
        assert_eq!(check_target("http", Some("127.0.0.1"), true), Ok(()));
        assert_eq!(check_target("https", Some("10.1.2.3"), true), Ok(()));
        assert_eq!(
            check_target("ftp", Some("example.com"), true),
            Err(TargetRefused::NotHttps)
        );
    }

    #[test]
    fn private_ranges_are_known() {
        for private in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(5);
        let cap = Duration::from_secs(3600);
        assert_eq!(backoff(1, base, cap, 0.0), Duration::from_secs(5));
        assert_eq!(backoff(3, base, cap, 0.0), Duration::from_secs(20));
        assert_eq!(backoff(30, base, cap, 0.0), cap);
        assert_eq!(backoff(1, base, cap, 1.0), Duration::from_millis(2500));
    }
}
