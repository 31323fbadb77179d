//! Keeps secrets out of what Bootpay's answers put in errors and logs.
//!
//! Some proxies and WAFs in front of an API quote the request they refused — its
//! `Authorization` header, its body with the private key — in their answer. Every piece of
//! text taken from an answer (an error code, a message, a body snippet, a parse error that
//! quotes a value) goes through [`Redactor::redact`] before it reaches an error: each known
//! secret (the private key, the current and recent tokens) and anything shaped like a
//! credential is replaced, and the text is capped.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex, PoisonError};

use regex::Regex;
use secrecy::{ExposeSecret, SecretString};

/// What stands in for a secret.
pub const REDACTED: &str = "[redacted]";
/// The most characters of an answer kept in an error.
pub const MAX_QUOTED_CHARS: usize = 200;
/// Tokens remembered besides the current one: an answer may quote one just replaced.
const RECENT_TOKENS: usize = 3;

/// Credential shapes, whatever their value: an `Authorization` header or scheme, and the
/// fields a token request carries.
static SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used, reason = "a constant pattern")]
    Regex::new(
        r#"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+|(authorization)("?\s*[:=]\s*"?)[^"\r\n,}&]*|(private_key|secret_key|access_token)("?\s*[:=]\s*"?)[^"&,\s}]*"#,
    )
    .expect("a valid pattern")
});

pub(super) struct Redactor {
    /// The private key (and, with Basic auth, the secret key): never change.
    fixed: Vec<SecretString>,
    tokens: Mutex<VecDeque<SecretString>>,
}

impl Redactor {
    pub fn new(fixed: Vec<SecretString>) -> Self {
        Self {
            fixed,
            tokens: Mutex::new(VecDeque::new()),
        }
    }

    /// Remembers a token Bootpay issued, so that an answer quoting it is redacted.
    pub fn remember(&self, token: &SecretString) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.push_front(token.clone());
        tokens.truncate(RECENT_TOKENS + 1);
    }

    /// `text` with every known secret and credential-shaped value replaced, at most
    /// [`MAX_QUOTED_CHARS`] characters.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        for secret in self.fixed.iter().chain(tokens.iter()) {
            let secret = secret.expose_secret();
            // A very short "secret" would redact ordinary words; real keys are long.
            if secret.len() >= 8 && text.contains(secret) {
                text = text.replace(secret, REDACTED);
            }
        }
        drop(tokens);
        let text = SHAPES.replace_all(&text, |c: &regex::Captures<'_>| {
            match (c.get(1), c.get(2)) {
                (Some(scheme), _) => format!("{} {REDACTED}", scheme.as_str()),
                (None, Some(name)) => format!("{}{}{REDACTED}", name.as_str(), &c[3]),
                (None, None) => REDACTED.to_owned(),
            }
        });
        let mut capped: String = text.chars().take(MAX_QUOTED_CHARS).collect();
        if text.chars().count() > MAX_QUOTED_CHARS {
            capped.push('…');
        }
        capped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        let redactor = Redactor::new(vec![SecretString::from("pk-never-log-me-4f1c9e7a")]);
        redactor.remember(&SecretString::from("token-one-abcdefgh"));
        redactor.remember(&SecretString::from("token-two-ijklmnop"));
        redactor
    }

    #[test]
    fn known_secrets_and_credential_shapes_are_redacted() {
        let redactor = redactor();
        let echoed = "blocked GET /v2/receipt/r-1\r\nAuthorization: Bearer token-two-ijklmnop\r\n\
                      old: token-one-abcdefgh body={\"application_id\":\"app\",\
                      \"private_key\":\"pk-never-log-me-4f1c9e7a\"} other=private_key=abc&x=1";
        let text = redactor.redact(echoed);
        for secret in [
            "pk-never-log-me-4f1c9e7a",
            "token-one-abcdefgh",
            "token-two-ijklmnop",
            "abc&",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("Authorization: Bearer [redacted]")
                || text.contains("Authorization: [redacted]"),
            "{text}"
        );
        assert!(
            text.contains("blocked GET /v2/receipt/r-1"),
            "the rest stays: {text}"
        );
        let unknown = redactor.redact("Authorization: Basic YWJjOmRlZg==, access_token=xyz");
        assert!(
            !unknown.contains("YWJjOmRlZg==") && !unknown.contains("xyz"),
            "{unknown}"
        );
    }

    #[test]
    fn text_is_capped() {
        let text = redactor().redact(&"x".repeat(1000));
        assert_eq!(text.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(text.ends_with('…'));
        assert_eq!(redactor().redact("RC_NOT_FOUND"), "RC_NOT_FOUND");
    }

    #[test]
    fn old_tokens_are_forgotten_after_a_while() {
        let redactor = redactor();
        for i in 0..RECENT_TOKENS {
            redactor.remember(&SecretString::from(format!("later-token-{i:08}")));
        }
        assert_eq!(redactor.redact("token-one-abcdefgh"), "token-one-abcdefgh");
        assert_eq!(redactor.redact("later-token-00000000"), REDACTED);
    }
}
