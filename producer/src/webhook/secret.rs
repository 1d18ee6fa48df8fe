//! Signing secrets, written as Standard Webhooks writes them: `whsec_` and the key in standard
//! base64.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use rand::RngCore as _;

const PREFIX: &str = "whsec_";

/// Shortest key accepted: 24 bytes (192 bits), the spec's lower bound.
pub const MIN_KEY_BYTES: usize = 24;
/// Longest key accepted: 64 bytes, the spec's upper bound (and HMAC-SHA256's block size).
pub const MAX_KEY_BYTES: usize = 64;
/// What [`Secret::generate`] makes: 32 bytes, as the reference implementations do.
const GENERATED_KEY_BYTES: usize = 32;

/// A webhook's signing key. `Debug` never prints it: secrets must not reach the logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.key.len())
    }
}

impl Secret {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = vec![0; GENERATED_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    /// Parses `whsec_<base64>`; the error says what is wrong without echoing the secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("a secret starts with \"{PREFIX}\""))?;
        let key = BASE64
            .decode(encoded)
            .map_err(|err| format!("after \"{PREFIX}\" a secret is standard base64 ({err})"))?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(format!(
                "a secret's key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, this one is {}",
                key.len()
            ));
        }
        Ok(Self { key })
    }

    /// The `whsec_…` text, to show once when the producer generated the key.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}", BASE64.encode(&self.key))
    }

    pub(crate) fn signer(&self) -> standardwebhooks::Webhook {
        standardwebhooks::Webhook::from_bytes(self.key.clone())
            .expect("from_bytes accepts every key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_reads_back_as_itself() {
        let secret = Secret::generate();
        let text = secret.reveal();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        assert_ne!(
            Secret::generate(),
            secret,
            "two generated keys are different"
        );
    }

    #[test]
    fn malformed_secrets_are_refused_with_the_reason() {
        let short = format!("whsec_{}", BASE64.encode([7u8; 23]));
        let long = format!("whsec_{}", BASE64.encode([7u8; 65]));
        for (text, says) in [
            ("c2VjcmV0", "starts with \"whsec_\""),
            ("whsec_not base64!", "standard base64"),
            (short.as_str(), "this one is 23"),
            (long.as_str(), "this one is 65"),
        ] {
            let err = Secret::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        let fine = format!("whsec_{}", BASE64.encode([7u8; 24]));
        assert!(Secret::parse(&fine).is_ok());
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let secret = Secret::generate();
        let shown = format!("{secret:?}");
        assert_eq!(shown, "Secret(32 bytes)");
        assert!(!shown.contains(&secret.reveal()[6..]));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Any text is a secret or a refusal that does not echo it.
        #[test]
        fn any_text_is_a_secret_or_refused_without_echoing_it(text in prop_oneof![
            any::<String>(),
            "whsec_[A-Za-z0-9+/=]{0,100}",
        ]) {
            match Secret::parse(&text) {
                Ok(secret) => prop_assert_eq!(Secret::parse(&secret.reveal()).unwrap(), secret),
                Err(err) => {
                    let encoded = text.strip_prefix(PREFIX).unwrap_or(&text);
                    prop_assert!(encoded.len() < 4 || !err.contains(encoded), "{err}");
                }
            }
        }

        #[test]
        fn any_key_of_a_valid_length_reads_back(key in prop::collection::vec(any::<u8>(), MIN_KEY_BYTES..=MAX_KEY_BYTES)) {
            let secret = Secret { key };
            prop_assert_eq!(Secret::parse(&secret.reveal()).unwrap(), secret);
        }
    }
}
