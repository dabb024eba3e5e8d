//! Enrolment tokens: random secrets handed to whoever installs an agent. Only their SHA-256 is
//! stored, so a copy of the database cannot enrol anything.

use ring::rand::SecureRandom;

const PREFIX: &str = "evt_";
const SECRET_BYTES: usize = 32;

/// A token as typed by a person: `evt_` followed by 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFormatError {
    #[error("enrolment token is empty: pass the token printed by `evident-collector token create`")]
    Empty,
    #[error(
        "enrolment token is malformed: expected `evt_` followed by 64 hex digits, as printed by `evident-collector token create`"
    )]
    Malformed,
}

impl Token {
    pub fn generate() -> anyhow::Result<Token> {
        let mut secret = [0u8; SECRET_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| anyhow::anyhow!("system random number generator failed"))?;
        Ok(Token(format!("{PREFIX}{}", hex::encode(secret))))
    }

    pub fn parse(text: &str) -> Result<Token, TokenFormatError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenFormatError::Empty);
        }
        let secret = text
            .strip_prefix(PREFIX)
            .ok_or(TokenFormatError::Malformed)?;
        if secret.len() != SECRET_BYTES * 2 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenFormatError::Malformed);
        }
        Ok(Token(format!("{PREFIX}{}", secret.to_ascii_lowercase())))
    }

    /// What the database keeps instead of the token.
    pub fn hash(&self) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// The secret itself, for printing once to whoever created it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_and_differ() {
        let a = Token::generate().expect("generate");
        let b = Token::generate().expect("generate");
        assert_ne!(a, b);
        assert_eq!(Token::parse(a.expose()), Ok(a.clone()));
        assert_eq!(
            Token::parse(&format!(
                "  {}\n",
                a.expose().to_uppercase().replace("EVT_", "evt_")
            )),
            Ok(a)
        );
    }

    #[test]
    fn malformed_tokens_are_named() {
        assert_eq!(Token::parse(""), Err(TokenFormatError::Empty));
        assert_eq!(Token::parse("evt_12"), Err(TokenFormatError::Malformed));
        assert_eq!(
            Token::parse(&"a".repeat(68)),
            Err(TokenFormatError::Malformed)
        );
        assert_eq!(
            Token::parse(&format!("evt_{}", "g".repeat(64))),
            Err(TokenFormatError::Malformed)
        );
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let token = Token::generate().expect("generate");
        assert!(!format!("{token:?}").contains(&token.expose()[4..]));
    }
}
