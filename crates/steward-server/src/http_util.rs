//! Small HTTP helpers shared by the device surfaces.

use axum::body::{Body, Bytes};
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("cannot read request body: {0}")]
    Read(String),
}

/// Reads a request body of at most `limit` bytes. A declared Content-Length over the limit is refused
/// before a byte is read; a chunked body stops being read as soon as it passes the limit.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(BodyError::TooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}
