//! The HTTP client for the node API (docs/API.md): plain HTTP/1.1, JSON in and out.
//!
//! Every request has a connect timeout, a response timeout and a limit on the
//! size of the answer. A node's error answer (`{"error", "detail"}`) becomes
//! `ClientError::Refused` with its stable code, so callers decide on codes
//! (`mempool_full`, `not_certified`) and never on English.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// How long to wait for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a whole answer, unless a request says otherwise.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest ordinary answer read (status, a record, a checkpoint).
pub const SMALL_BYTES_MAX: u64 = 1 << 20;
/// The longest `Retry-After` honoured; a node asking for more is waited on this long.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: the node speaks plain HTTP; give an http:// address (TLS is not built into this client)")]
    NotHttp { url: String },
    #[error("cannot reach the node at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("node refused: {code}: {detail}")]
    Refused {
        url: String,
        status: u16,
        code: String,
        detail: String,
        /// The `Retry-After` the node sent, if any.
        retry_after: Option<Duration>,
    },
    #[error("{url}: answer is over the limit of {max} bytes")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: unexpected answer (HTTP {status}): {detail}")]
    BadAnswer { url: String, status: u16, detail: String },
}

impl ClientError {
    /// The node's error code, when the node answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// How long the node asked us to wait, or `default` when it did not say.
    pub fn retry_after(&self, default: Duration) -> Duration {
        match self {
            ClientError::Refused { retry_after: Some(d), .. } => (*d).min(RETRY_AFTER_MAX),
            _ => default,
        }
    }
}

/// The answer to `POST /v1/records/batch` (docs/API.md): one result per record, in order.
#[derive(Deserialize)]
pub struct BatchAnswer {
    pub results: Vec<BatchResult>,
}

/// One record's result: its id and status when accepted, else the error.
#[derive(Deserialize)]
pub struct BatchResult {
    pub id: Option<String>,
    pub status: Option<String>,
    pub error: Option<BatchError>,
}

#[derive(Deserialize)]
pub struct BatchError {
    pub error: String,
    pub detail: String,
}

/// One node's API.
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for the node at `url` (`http://host:port`; a bare `host:port` means http).
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let base = normalize_base(url)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(RESPONSE_TIMEOUT))
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("annal/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client { base, agent: config.into() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GETs `path` (with its query) and parses the JSON answer as `T`.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str, bytes_max: u64) -> Result<T, ClientError> {
        let url = self.url(path);
        let answer = self.agent.get(&url).header("accept", "application/json").call();
        parse_json(&url, read(&url, answer, bytes_max)?)
    }

    /// GETs `path` and returns the answer as text (for `text/plain` answers).
    pub fn get_text(&self, path: &str, bytes_max: u64) -> Result<String, ClientError> {
        let url = self.url(path);
        let (status, bytes) = read(&url, self.agent.get(&url).call(), bytes_max)?;
        String::from_utf8(bytes).map_err(|e| ClientError::BadAnswer { url, status, detail: format!("not UTF-8: {e}") })
    }

    /// POSTs `body` as JSON to `path`; waits up to `timeout` for the answer.
    pub fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
        bytes_max: u64,
    ) -> Result<T, ClientError> {
        self.post(path, "application/json", body.to_string().as_bytes(), timeout, bytes_max)
    }

    /// POSTs `body` of media type `content_type` to `path` and parses the JSON answer as `T`.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
        timeout: Duration,
        bytes_max: u64,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let answer = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("content-type", content_type)
            .header("accept", "application/json")
            .send(body);
        parse_json(&url, read(&url, answer, bytes_max)?)
    }

    fn url(&self, path: &str) -> String {
        debug_assert!(path.starts_with('/'));
        format!("{}{path}", self.base)
    }
}

/// `http://host:port` without a trailing slash; refuses other schemes.
pub fn normalize_base(url: &str) -> Result<String, ClientError> {
    let url = url.trim();
    let host = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err(ClientError::NotHttp { url: url.to_string() }),
        None => url,
    }
    .trim_end_matches('/');
    if host.is_empty() {
        return Err(ClientError::NotHttp { url: url.to_string() });
    }
    Ok(format!("http://{host}"))
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters.
/// (Record keys may hold `/`, which must not split the segment.)
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a successful answer's body (at most `bytes_max`), or turns an error answer into `Refused`.
fn read(
    url: &str,
    answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    bytes_max: u64,
) -> Result<(u16, Vec<u8>), ClientError> {
    let mut response = answer.map_err(|e| transport(url, e))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let limit = if status >= 400 { SMALL_BYTES_MAX.min(bytes_max.max(64 * 1024)) } else { bytes_max };
    let bytes = match response.body_mut().with_config().limit(limit).read_to_vec() {
        Ok(b) => b,
        Err(ureq::Error::BodyExceedsLimit(_)) => return Err(ClientError::TooLarge { url: url.into(), max: limit }),
        Err(e) => return Err(transport(url, e)),
    };
    if (200..300).contains(&status) {
        return Ok((status, bytes));
    }
    Err(refusal(url, status, &bytes, retry_after))
}

/// An error answer: the node's `{"error", "detail"}` when it sent one, else the status and body.
pub fn refusal(url: &str, status: u16, body: &[u8], retry_after: Option<Duration>) -> ClientError {
    #[derive(serde::Deserialize)]
    struct NodeError {
        error: String,
        #[serde(default)]
        detail: String,
    }
    match serde_json::from_slice::<NodeError>(body) {
        Ok(e) => ClientError::Refused { url: url.into(), status, code: e.error, detail: e.detail, retry_after },
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
            ClientError::BadAnswer { url: url.into(), status, detail: format!("not an API error: {text:?}") }
        }
    }
}

fn parse_json<T: DeserializeOwned>(url: &str, (status, bytes): (u16, Vec<u8>)) -> Result<T, ClientError> {
    serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
        url: url.into(),
        status,
        detail: format!("not the JSON the API describes: {e}"),
    })
}

fn transport(url: &str, e: ureq::Error) -> ClientError {
    let detail = match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::HostNotFound => "host not found".into(),
        other => other.to_string(),
    };
    ClientError::Unreachable { url: url.into(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canned::{answer, serve};

    #[test]
    fn base_urls_are_plain_http_without_trailing_slash() {
        // Goal: what users type for --node becomes one canonical base, and TLS addresses are refused.
        assert_eq!(normalize_base("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(normalize_base("localhost:8080").unwrap(), "http://localhost:8080");
        assert!(matches!(normalize_base("https://node.example"), Err(ClientError::NotHttp { .. })));
        assert!(matches!(normalize_base("http://"), Err(ClientError::NotHttp { .. })));
    }

    #[test]
    fn path_segments_keep_slashes_inside_keys() {
        // Goal: a record key with `/`, spaces or non-ASCII stays one path segment.
        assert_eq!(path_segment("parcel/0042"), "parcel%2F0042");
        assert_eq!(path_segment("a b~c"), "a%20b~c");
        assert_eq!(path_segment("é"), "%C3%A9");
        assert_eq!(path_segment("land-titles"), "land-titles");
    }

    #[test]
    fn node_errors_keep_their_code_and_retry_after() {
        // Goal: the node's error JSON becomes Refused with its code, shown as `node refused: code: detail`.
        let e = refusal(
            "http://n/v1/records",
            503,
            br#"{"error":"mempool_full","detail":"2000 records pending"}"#,
            Some(Duration::from_secs(3)),
        );
        assert_eq!(e.code(), Some("mempool_full"));
        assert_eq!(e.retry_after(Duration::from_secs(1)), Duration::from_secs(3));
        assert_eq!(e.to_string(), "node refused: mempool_full: 2000 records pending");
        let proxy = refusal("http://n/x", 502, b"<html>bad gateway</html>", None);
        assert!(proxy.code().is_none());
        assert_eq!(proxy.retry_after(Duration::from_secs(1)), Duration::from_secs(1));
        assert!(refusal("http://n/x", 503, b"{}", None).code().is_none(), "an error without a code is no refusal");
        let long = refusal("http://n/x", 503, br#"{"error":"mempool_full"}"#, Some(Duration::from_secs(3600)));
        assert_eq!(long.retry_after(Duration::from_secs(1)), RETRY_AFTER_MAX, "a node cannot stall us for an hour");
    }

    #[test]
    fn answers_one_byte_over_the_limit_are_refused() {
        // Goal: an answer of exactly bytes_max is read; one byte more is TooLarge, naming the URL.
        let at_limit = format!("\"{}\"", "a".repeat(98));
        let over = format!("\"{}\"", "a".repeat(99));
        let base = serve(vec![answer("200 OK", at_limit.as_bytes(), ""), answer("200 OK", over.as_bytes(), "")]);
        let client = Client::new(&base).unwrap();
        let s: String = client.get_json("/v1/status", 100).unwrap();
        assert_eq!(s.len(), 98);
        match client.get_json::<String>("/v1/status", 100) {
            Err(ClientError::TooLarge { url, max: 100 }) => assert!(url.ends_with("/v1/status")),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn error_answers_carry_code_and_retry_after() {
        // Goal: a 503 with the API's error JSON and Retry-After reaches the caller as Refused.
        let body = br#"{"error":"not_certified","detail":"certificate for height 9 is being collected"}"#;
        let base = serve(vec![answer("503 Service Unavailable", body, "retry-after: 2\r\n")]);
        let e = Client::new(&base).unwrap().get_json::<serde_json::Value>("/v1/proofs/ab", 1 << 20).unwrap_err();
        assert_eq!(e.code(), Some("not_certified"));
        assert_eq!(e.retry_after(Duration::ZERO), Duration::from_secs(2));
    }
}
