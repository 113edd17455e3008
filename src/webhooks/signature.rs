//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the
//! three headers a receiver verifies with the `standardwebhooks` libraries
//! (npm, PyPI, …) and the secret it shares with the broker.
//!
//! `webhook-signature` is `v1,` and the base64 of the HMAC-SHA256 of
//! `<webhook-id>.<webhook-timestamp>.<body>` under the secret's key (the
//! base64 after `whsec_`). The timestamp is the attempt's, in seconds: a
//! receiver refuses one too far from its clock (five minutes, by default),
//! so each retry is signed anew; the id stays the same, for deduplication.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The message id header: the same on every attempt of one webhook.
pub const ID: &str = "webhook-id";
/// The attempt's time, seconds since the Unix epoch.
pub const TIMESTAMP: &str = "webhook-timestamp";
/// `v1,<base64 signature>`.
pub const SIGNATURE: &str = "webhook-signature";

/// Signs webhooks with one secret's key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { key: *** }")
    }
}

impl Signer {
    /// A signer with the HMAC key of a `whsec_` secret (see
    /// `crate::config::signing_key`).
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// The `webhook-signature` value of `body` sent as `id` at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::signing_key;

    /// The example of the Standard Webhooks specification signs as the specification says.
    #[test]
    fn signs_like_the_specification() {
        // From the reference libraries' tests.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a valid secret");
        let signer = Signer::new(key);
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
