//! REST error bodies, in both shapes Kaiku has used.

use serde::Deserialize;

/// What an error response said: a machine-readable code (empty when the body had none) and a
/// human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestError {
    /// `TOKEN_EXPIRED`, `CHANNEL_NOT_FOUND`, ... (empty for a plain-text body).
    pub code: String,
    /// The message, or the start of a plain-text body.
    pub message: String,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// Longest plain-text body kept as a message.
const MAX_TEXT: usize = 512;

impl RestError {
    /// Reads `{error: CODE, message}` (newer), `{error: message, code}` (older), or a plain
    /// text body (axum's own rejections, proxies). Never fails; never keeps more than 512
    /// bytes of an unexpected body.
    pub fn decode(body: &[u8]) -> Self {
        match serde_json::from_slice::<Body>(body) {
            Ok(Body {
                code: Some(code),
                error,
                message,
            }) => Self {
                code,
                message: error.or(message).unwrap_or_default(),
            },
            Ok(Body {
                error: Some(code),
                message,
                ..
            }) => Self {
                code,
                message: message.unwrap_or_default(),
            },
            _ => {
                let cut = &body[..body.len().min(MAX_TEXT)];
                Self {
                    code: String::new(),
                    message: String::from_utf8_lossy(cut).trim().to_owned(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_shapes_and_plain_text() {
        let e = RestError::decode(br#"{"error":"TOKEN_EXPIRED","message":"Token expired"}"#);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("TOKEN_EXPIRED", "Token expired")
        );
        let e = RestError::decode(br#"{"error":"Channel not found","code":"CHANNEL_NOT_FOUND"}"#);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("CHANNEL_NOT_FOUND", "Channel not found")
        );
        let e = RestError::decode(b"Failed to parse the request body as JSON");
        assert_eq!(e.code, "");
        assert!(e.message.starts_with("Failed"));
        assert!(RestError::decode(&vec![b'x'; 10_000]).message.len() <= MAX_TEXT);
        assert_eq!(RestError::decode(&[0xff, 0xfe]).code, "");
    }
}
