//! The node's HTTP API (docs/API.md): routes, the JSON error shape, and the
//! guard every request passes (rate limit, body size, time bound, counting).
//!
//! Handlers only translate: they read parameters, call [`Shared`], and turn a
//! [`Failure`] into the status and code of API.md's table. Store reads run on
//! the blocking pool, since a commit holds the store's write lock.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annal_ledger::record::{RecordId, SignedRecord};
use annal_ledger::submission::{self, BatchBody, SubmitBody};
use annal_ledger::Error as LedgerError;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::mempool::Source;
use crate::shared::{Admitted, Failure, Placed, Shared};

/// The OpenAPI 3.0 description served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `wait=final` waits this long unless `timeout_ms` says otherwise.
pub const WAIT_MS_DEFAULT: u64 = 30_000;
/// The longest `timeout_ms` a client may ask for.
pub const WAIT_MS_MAX: u64 = 120_000;
/// How long before the request's time bound a wait (`wait=final`, a certificate) gives up, to answer in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);
/// How long a proof waits for a certificate still being collected before it is 503 `not_certified`.
const CERTIFICATE_WAIT: Duration = Duration::from_secs(2);
/// Clients (IPv4 addresses, IPv6 /64s) the rate limiter remembers; past it, refilled ones are forgotten first.
pub const CLIENTS_MAX: usize = 10_000;

type Routes = Vec<(Method, &'static str, MethodRouter<Arc<Shared>>)>;

/// Every route: method, path (axum syntax), handler. The router and [`routes`] both read it.
fn table() -> Routes {
    fn route<H: Handler<T, Arc<Shared>>, T: 'static>(
        method: Method,
        path: &'static str,
        handler: H,
    ) -> (Method, &'static str, MethodRouter<Arc<Shared>>) {
        let filter = MethodFilter::try_from(method.clone()).expect("routes use standard methods");
        (method, path, on(filter, handler))
    }
    vec![
        route(Method::POST, "/v1/records", submit),
        route(Method::POST, "/v1/records/batch", submit_batch),
        route(Method::GET, "/v1/records/{id}", record),
        // Keys may hold `/`: the key is the rest of the path, raw or percent-encoded.
        route(Method::GET, "/v1/history/{namespace}/{*key}", history),
        route(Method::GET, "/v1/nonces/{submitter}", nonce),
        route(Method::GET, "/v1/proofs/{id}", proof),
        route(Method::GET, "/v1/checkpoint", checkpoint),
        route(Method::GET, "/v1/consistency", consistency),
        route(Method::GET, "/v1/blocks/{height}", block),
        route(Method::GET, "/v1/gov", gov),
        route(Method::GET, "/v1/gov/proposals", proposals),
        route(Method::GET, "/v1/gov/proposals/{id}", proposal),
        route(Method::GET, "/v1/status", status),
        route(Method::GET, "/metrics", metrics),
        route(Method::GET, "/healthz", healthz),
        route(Method::GET, "/openapi.json", openapi),
    ]
}

/// The routes served, as `(method, path)` in OpenAPI's path syntax.
pub fn routes() -> Vec<(Method, String)> {
    table().into_iter().map(|(method, path, _)| (method, path.replace("{*", "{"))).collect()
}

pub fn router(shared: Arc<Shared>) -> Router {
    let guard = Arc::new(Guard::new(shared.clone()));
    let router = table().into_iter().fold(Router::new(), |r, (_, path, handler)| r.route(path, handler));
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(shared.limits.api_body_bytes_max))
        .layer(middleware::from_fn_with_state(guard, guard_request))
        .with_state(shared)
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight finish.
///
/// At most `limits.api_connections_max` connections are served at once; the
/// next waits in the kernel's accept queue until one ends, so idle sockets
/// cannot take the file handles the store and the network need. A connection
/// must send each request's head within `limits.api_header_timeout_ms`, also
/// the next one on a kept-alive connection, or it is closed: a client that opens
/// a request and never finishes its headers never reaches the guard below.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots_max = shared.limits.api_connections_max;
    let header_timeout = Duration::from_millis(shared.limits.api_header_timeout_ms);
    let slots = Arc::new(tokio::sync::Semaphore::new(slots_max));
    let app = router(shared);
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(stream, peer, app.clone(), header_timeout, slot, closed.clone()));
    }
    drop(listener);
    let _ = closing.send(true);
    // Each connection gives its slot back as it ends: all back is all answered.
    let all = u32::try_from(slots_max).expect("limits.api_connections_max is checked to be at most 65,536");
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// One HTTP/1.1 connection, its requests tagged with the peer's address (the rate limit's client).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    _slot: tokio::sync::OwnedSemaphorePermit,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = closing.changed() => {
            // Stop taking requests; the one in flight is answered.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A failed accept: the peer's own trouble is skipped; running out of file
/// handles or memory waits a second, or the loop would spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        tracing::warn!(error = %e, "accepting an API connection failed; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---------------------------------------------------------------- errors

/// An error answer: `{"error": code, "detail"}` with its status (docs/API.md "Errors").
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), retry_after_s: None }
    }

    fn malformed(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed", detail)
    }

    fn bad_query(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query", detail)
    }

    /// 503 `busy` with `Retry-After: 1`: a budget of the node's is spent for now.
    fn busy(detail: impl Into<String>) -> ApiError {
        ApiError { retry_after_s: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", detail) }
    }

    fn too_large(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail)
    }

    fn internal(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> ApiError {
        let (status, retry_after_s) = match failure {
            Failure::Malformed(_) | Failure::BadQuery(_) => (StatusCode::BAD_REQUEST, None),
            Failure::NotFound(_) => (StatusCode::NOT_FOUND, None),
            Failure::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, None),
            Failure::MempoolFull(_) | Failure::NotCertified(_) | Failure::NoPeers(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, Some(1))
            }
            Failure::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, None),
            Failure::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        ApiError { status, code: failure.code(), detail: failure.detail().to_string(), retry_after_s }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.code, "detail": self.detail }))).into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {method} {}; GET /openapi.json lists the API", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}; the Allow header lists the methods that are", uri.path()),
    )
}

// ---------------------------------------------------------------- guard

/// What every request passes before its handler: the per-client rate limit,
/// the body size, and the time bound; every answer is counted by status.
struct Guard {
    shared: Arc<Shared>,
    limiter: Option<Mutex<Limiter>>,
    timeout: Duration,
    /// Request bodies being served, in KiB of `limits.api_body_bytes_in_flight_max`:
    /// each is held as text, then decoded, several times over while it is
    /// admitted, so their sum bounds what clients can make the node hold.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Large answers not yet taken by their clients, in KiB of `limits.api_answer_bytes_in_flight_max`.
    answers: Answers,
    /// KiB of `in_flight` each client holds now (clients holding none are not kept).
    bodies_by_client: Mutex<HashMap<Client, u32>>,
    /// The most one client may hold: a quarter of `in_flight`, at least one largest body.
    client_share_kib: u32,
}

/// A request body's room in [`Guard::admit`]: its KiB of the budget, and of its client's share.
struct BodyRoom {
    _permit: tokio::sync::OwnedSemaphorePermit,
    client: Option<(Client, u32, Arc<Guard>)>,
}

impl Drop for BodyRoom {
    fn drop(&mut self) {
        if let Some((client, kib, guard)) = &self.client {
            let mut held = guard.bodies_by_client.lock().expect("bodies lock");
            if let Some(mine) = held.get_mut(client) {
                *mine = mine.saturating_sub(*kib);
                if *mine == 0 {
                    held.remove(client);
                }
            }
        }
    }
}

impl Guard {
    fn new(shared: Arc<Shared>) -> Guard {
        let limits = &shared.limits;
        let limiter = (limits.api_requests_per_s > 0).then(|| Mutex::new(Limiter::new(limits.api_requests_per_s)));
        let timeout = Duration::from_millis(limits.api_request_timeout_ms);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(limits.api_body_bytes_in_flight_max.div_ceil(1024)));
        let answers = Answers::new(limits.api_answer_bytes_in_flight_max);
        let share = (limits.api_body_bytes_in_flight_max / 4).max(limits.api_body_bytes_max).div_ceil(1024);
        let client_share_kib = u32::try_from(share).unwrap_or(u32::MAX);
        let bodies_by_client = Mutex::new(HashMap::new());
        Guard { shared, limiter, timeout, in_flight, answers, bodies_by_client, client_share_kib }
    }

    /// The rate limit and the declared body size, checked before the body is
    /// read. Returns the bytes the body may take (its declared size; the
    /// limit when undeclared, i.e. chunked).
    fn check(&self, request: &Request) -> Result<usize, ApiError> {
        if let (Some(limiter), Some(client)) = (&self.limiter, Guard::client_of(request)) {
            let taken = limiter.lock().expect("limiter lock").take(client, Instant::now());
            if let Err(wait_s) = taken {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "client {client} exceeded {} requests per second (limits.api_requests_per_s)",
                        self.shared.limits.api_requests_per_s
                    ),
                );
                e.retry_after_s = Some(wait_s);
                return Err(e);
            }
        }
        let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let max = self.shared.limits.api_body_bytes_max;
        match declared {
            Some(n) if n > max as u64 => Err(body_too_large(Some(n), max)),
            Some(n) => Ok(n as usize),
            None if matches!(*request.method(), Method::GET | Method::HEAD) => Ok(0),
            None => Ok(max),
        }
    }

    /// Room for a body of `bytes` among those being served, or 503 `busy`.
    /// A client (as the rate limit counts one) may hold at most its share of
    /// it, so a few slow bodies from one client cannot keep everyone else's out.
    fn admit(self: &Arc<Self>, bytes: usize, client: Option<Client>) -> Result<Option<BodyRoom>, ApiError> {
        if bytes == 0 {
            return Ok(None);
        }
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let mut held = self.bodies_by_client.lock().expect("bodies lock");
        let mine = client.map(|c| (c, held.get(&c).copied().unwrap_or(0)));
        if let Some((client, _)) = mine.filter(|(_, mine)| mine.saturating_add(kib) > self.client_share_kib) {
            return Err(ApiError::busy(format!(
                "client {client} is already sending request bodies up to its share of {} bytes at once \
                 (a quarter of limits.api_body_bytes_in_flight_max, at least limits.api_body_bytes_max); \
                 this one was not read",
                u64::from(self.client_share_kib) * 1024
            )));
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_many_owned(kib) else {
            return Err(ApiError::busy(format!(
                "the node is serving request bodies up to its limit of {} bytes at once \
                 (limits.api_body_bytes_in_flight_max); this one was not read",
                self.shared.limits.api_body_bytes_in_flight_max
            )));
        };
        let client = mine.map(|(client, mine)| {
            held.insert(client, mine + kib);
            (client, kib, self.clone())
        });
        Ok(Some(BodyRoom { _permit: permit, client }))
    }

    /// The client a request is counted as, when its peer address is known.
    fn client_of(request: &Request) -> Option<Client> {
        request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| Client::of(peer.ip()))
    }

    fn count(&self, status: StatusCode) {
        *self.shared.metrics.api_requests.lock().expect("api lock").entry(status.as_u16()).or_insert(0) += 1;
    }
}

/// When the request's time bound (`limits.api_request_timeout_ms`) runs out:
/// a handler that waits (`wait=final`) stops in time to answer for itself.
#[derive(Clone, Copy)]
struct Deadline(Instant);

impl Deadline {
    /// How long a handler may still wait and answer in time.
    fn room(self) -> Duration {
        self.0.saturating_duration_since(Instant::now() + DEADLINE_MARGIN)
    }
}

async fn guard_request(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let deadline = Instant::now() + guard.timeout;
    request.extensions_mut().insert(Deadline(deadline));
    let client = Guard::client_of(&request);
    let response = match guard.check(&request).and_then(|bytes| guard.admit(bytes, client)) {
        Err(e) => e.into_response(),
        // The room is held until the answer is made (or the request dropped).
        Ok(_room) => match tokio::time::timeout_at(deadline.into(), next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the request took longer than this node's limit of {} ms (limits.api_request_timeout_ms); \
                     a submission may still have been accepted: GET /v1/records/{{id}} says",
                    guard.timeout.as_millis()
                ),
            )
            .into_response(),
        },
    };
    let response = guard.answers.hold(response).await;
    guard.count(response.status());
    response
}

/// Answers of at least this many bytes are counted until their client has taken them.
const ANSWER_HELD_BYTES_MIN: usize = 64 * 1024;
/// The pieces a held answer is handed to the connection in: it asks for the next only as
/// the client reads, so the rest stays here, counted.
const ANSWER_PIECE_BYTES: usize = 64 * 1024;

/// Large answers (a block's records, a proof) in memory until their clients take
/// them, summed against `limits.api_answer_bytes_in_flight_max`: a client that
/// asks for a full block and never reads would otherwise hold it in the node, and
/// a few hundred such clients its memory. An answer that does not fit is 503 `busy`.
#[derive(Clone)]
struct Answers {
    kib: Arc<tokio::sync::Semaphore>,
    kib_max: usize,
}

impl Answers {
    fn new(bytes_max: usize) -> Answers {
        let kib_max = bytes_max.div_ceil(1024);
        Answers { kib: Arc::new(tokio::sync::Semaphore::new(kib_max)), kib_max }
    }

    /// `response`, its body counted until the client has taken it, or 503 `busy`
    /// if the answers in flight leave no room. One larger than the whole budget
    /// takes all of it.
    async fn hold(&self, response: Response) -> Response {
        let size = http_body::Body::size_hint(response.body()).exact().unwrap_or(0);
        if size < ANSWER_HELD_BYTES_MIN as u64 {
            return response;
        }
        let kib = usize::try_from(size.div_ceil(1024)).unwrap_or(usize::MAX).min(self.kib_max);
        let Ok(permit) = self.kib.clone().try_acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX)) else {
            return ApiError::busy(format!(
                "the node is sending answers up to its limit of {} bytes at once \
                 (limits.api_answer_bytes_in_flight_max); this one ({size} bytes) was not sent",
                self.kib_max * 1024
            ))
            .into_response();
        };
        let (parts, body) = response.into_parts();
        // Every answer here is built whole (a JSON text, a block): this takes its one piece.
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(rest) => Response::from_parts(parts, axum::body::Body::new(Held { rest, _permit: permit })),
            Err(e) => ApiError::from(Failure::Internal(format!("reading an answer back: {e}"))).into_response(),
        }
    }
}

/// A held answer's body: its bytes, handed out in pieces, and its place in [`Answers`].
struct Held {
    rest: Bytes,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.rest.len().min(ANSWER_PIECE_BYTES);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

fn body_too_large(declared: Option<u64>, max: usize) -> ApiError {
    let size = declared.map_or("the body".to_string(), |n| format!("the body of {n} bytes"));
    ApiError::too_large(format!("{size} exceeds this node's limit of {max} bytes (limits.api_body_bytes_max)"))
}

/// Whom the rate limit counts as one client: an IPv4 address (also when it
/// arrives IPv4-mapped on an IPv6 socket), or an IPv6 /64 — one subscriber's
/// network, whose 2^64 addresses would otherwise each get a fresh bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Client {
    V4(std::net::Ipv4Addr),
    V6Net64(u64),
}

impl Client {
    fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4),
                None => Client::V6Net64((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::V4(v4) => write!(f, "{v4}"),
            Client::V6Net64(net) => write!(f, "{}/64", std::net::Ipv6Addr::from_bits(u128::from(*net) << 64)),
        }
    }
}

/// Token buckets per client: `rate` tokens a second, at most one second's worth held.
struct Limiter {
    rate: f64,
    clients: HashMap<Client, Bucket>,
}

struct Bucket {
    tokens: f64,
    seen: Instant,
}

impl Limiter {
    fn new(requests_per_s: u32) -> Limiter {
        Limiter { rate: f64::from(requests_per_s), clients: HashMap::new() }
    }

    /// Takes a token for `client`, or says how many whole seconds until one is there.
    fn take(&mut self, client: Client, now: Instant) -> Result<(), u64> {
        if !self.clients.contains_key(&client) && self.clients.len() >= CLIENTS_MAX {
            self.evict(now);
        }
        let rate = self.rate;
        let bucket = self.clients.entry(client).or_insert(Bucket { tokens: rate, seen: now });
        bucket.tokens = refilled(bucket, rate, now);
        bucket.seen = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Forgets clients whose bucket is full again (forgetting them changes
    /// nothing); if that leaves the table full, the longest idle eighth of it,
    /// so a stream of new clients pays for one scan per CLIENTS_EVICTED of them
    /// rather than one per client, under the lock every request takes.
    fn evict(&mut self, now: Instant) {
        let rate = self.rate;
        self.clients.retain(|_, b| refilled(b, rate, now) < rate);
        if self.clients.len() >= CLIENTS_MAX {
            let mut by_idle: Vec<(Instant, Client)> = self.clients.iter().map(|(c, b)| (b.seen, *c)).collect();
            by_idle.select_nth_unstable_by_key(CLIENTS_EVICTED - 1, |(seen, _)| *seen);
            for (_, client) in &by_idle[..CLIENTS_EVICTED] {
                self.clients.remove(client);
            }
        }
    }
}

/// How many limited clients one eviction forgets when every bucket is still in use.
const CLIENTS_EVICTED: usize = CLIENTS_MAX / 8;

fn refilled(bucket: &Bucket, rate: f64, now: Instant) -> f64 {
    (bucket.tokens + now.duration_since(bucket.seen).as_secs_f64() * rate).min(rate)
}

// ---------------------------------------------------------------- extractors

/// Path parameters; an unreadable one is `bad_query` naming it.
struct PathParams<T>(T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(|e| ApiError::bad_query(e.body_text()))
    }
}

/// Query parameters by name; unknown or repeated names are `bad_query`.
struct QueryParams(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_query(e.body_text()))?;
        let mut params = BTreeMap::new();
        for (name, value) in pairs {
            if params.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad_query(format!("query parameter {name:?} is given twice")));
            }
        }
        Ok(QueryParams(params))
    }
}

impl QueryParams {
    /// Refuses parameters outside `known`, so a misspelt one is not silently ignored.
    fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        let Some(unknown) = self.0.keys().find(|k| !known.contains(&k.as_str())) else {
            return Ok(());
        };
        let takes = match known {
            [] => "no query parameters".to_string(),
            _ => format!("only {}", known.join(", ")),
        };
        Err(ApiError::bad_query(format!("unknown query parameter {unknown:?}; this route takes {takes}")))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `limit`: `default` when absent, else a whole number from 1 to `max`.
    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_query(format!("limit={v:?} must be a whole number from 1 to {max}"))),
            },
        }
    }

    fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| v.parse::<u64>().map_err(|e| ApiError::bad_query(format!("{name}={v:?} is not a height: {e}"))))
            .transpose()
    }
}

/// A route that takes no query parameters, refusing any (a misspelt one is not silently ignored).
struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        QueryParams::from_request_parts(parts, state).await?.only(&[]).map(|()| NoQuery)
    }
}

/// A JSON body ([`submission::from_json`]): over the size limit is `too_large`,
/// anything unreadable is `malformed`.
struct JsonBody<T>(T);

impl<T: DeserializeOwned> FromRequest<Arc<Shared>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(request, shared).await?;
        submission::from_json(&bytes).map(JsonBody).map_err(|e| ApiError::malformed(e.to_string()))
    }
}

/// The request body, read within `limits.api_body_bytes_max` and at the pace
/// [`read_body`] asks, but not parsed yet.
struct RawBody(Bytes);

impl FromRequest<Arc<Shared>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let l = &shared.limits;
        let pace = BodyPace {
            started: tokio::time::Instant::now(),
            grace: Duration::from_millis(l.api_header_timeout_ms).min(BODY_START_MAX),
            bytes_per_s_min: l.api_body_bytes_per_s_min,
        };
        read_body(request.into_body(), l.api_body_bytes_max, pace).await.map(RawBody)
    }
}

/// The longest a request body's first bytes may take after its head (less if
/// `limits.api_header_timeout_ms` is less): an honest client sends them at once,
/// and a declared body holds its place in the body budget while it waits.
const BODY_START_MAX: Duration = Duration::from_secs(5);

/// How fast a request body must come: all of what has arrived by `started +
/// grace + bytes / bytes_per_s_min`, the next byte by then too. A client that
/// declares a large body and sends it slowly, or not at all, holds its share
/// of `limits.api_body_bytes_in_flight_max` only that long, not for the
/// whole request bound.
#[derive(Clone, Copy)]
struct BodyPace {
    started: tokio::time::Instant,
    grace: Duration,
    bytes_per_s_min: u64,
}

impl BodyPace {
    /// When the byte after the first `received` is due.
    fn due(&self, received: usize) -> tokio::time::Instant {
        let paced = Duration::from_secs_f64(received as f64 / self.bytes_per_s_min.max(1) as f64);
        self.started + self.grace + paced
    }
}

/// Reads a body whole: at most `max` bytes, each frame by its [`BodyPace::due`] time.
async fn read_body<B>(body: B, max: usize, pace: BodyPace) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let mut body = body;
    let mut parts: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(pace.due(received), body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "too_slow",
                    format!(
                        "the body came slower than this node takes: {received} bytes in {} ms \
                         (at most 5 s, or limits.api_header_timeout_ms if less, to begin; then \
                         limits.api_body_bytes_per_s_min = {} bytes/s)",
                        pace.started.elapsed().as_millis(),
                        pace.bytes_per_s_min
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::malformed(format!("the body could not be read: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            received += data.len();
            if received > max {
                return Err(body_too_large(None, max));
            }
            parts.push(data);
        }
    }
    Ok(match parts.len() {
        0 => Bytes::new(),
        1 => parts.pop().expect("one part"),
        _ => parts.concat().into(),
    })
}

// ---------------------------------------------------------------- helpers

/// Runs store reads on the blocking pool: a commit may hold the store's write lock.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Failure> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("the request's worker failed: {e}"))),
    }
}

/// A record id from hex; `what` names the parameter (`path parameter id`, `query parameter before`).
fn record_id(what: &str, hex: &str) -> Result<RecordId, ApiError> {
    RecordId::from_hex(hex).map_err(|e| ApiError::bad_query(format!("{what}: {e}")))
}

fn final_json(id: &RecordId, placed: Placed) -> Value {
    json!({ "id": id.to_hex(), "status": "final", "index": placed.index, "height": placed.height })
}

fn json_text(text: String) -> Response {
    ([(CONTENT_TYPE, "application/json")], text).into_response()
}

// ---------------------------------------------------------------- records

/// `POST /v1/records[?wait=final&timeout_ms=N]`.
async fn submit(
    State(shared): State<Arc<Shared>>,
    deadline: Option<axum::Extension<Deadline>>,
    query: QueryParams,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<Response, ApiError> {
    query.only(&["wait", "timeout_ms"])?;
    let wait = match query.get("wait") {
        None => false,
        Some("final") => true,
        Some(other) => return Err(ApiError::bad_query(format!("wait={other:?}: the only value is \"final\""))),
    };
    let timeout_ms = match query.get("timeout_ms") {
        None => WAIT_MS_DEFAULT,
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if ms <= WAIT_MS_MAX => ms,
            _ => return Err(ApiError::bad_query(format!("timeout_ms={v:?} must be a number from 0 to {WAIT_MS_MAX}"))),
        },
    };
    let bytes = body.record_bytes().map_err(|e| ApiError::malformed(e.to_string()))?;
    let submitting = shared.clone();
    let admitted = blocking(move || tokio::runtime::Handle::current().block_on(submitting.submit(bytes))).await?;
    match admitted {
        Admitted::Final { id, placed } => Ok(Json(final_json(&id, placed)).into_response()),
        Admitted::Pending { id, .. } if wait => {
            // The wait ends before the request's own bound, so the answer names
            // the record and says it is pending, not only that time ran out.
            let asked = Duration::from_millis(timeout_ms);
            let room = deadline.map_or(asked, |d| d.0.room());
            let placed = match shared.wait_final(id, asked.min(room)).await {
                Err(Failure::Timeout(why)) if room < asked => {
                    return Err(Failure::Timeout(format!(
                        "{why} (the wait was cut from the {timeout_ms} ms asked to end within this node's \
                         limit of {} ms per request, limits.api_request_timeout_ms)",
                        shared.limits.api_request_timeout_ms
                    ))
                    .into())
                }
                other => other?,
            };
            Ok(Json(final_json(&id, placed)).into_response())
        }
        Admitted::Pending { id, .. } => {
            Ok((StatusCode::ACCEPTED, Json(json!({ "id": id.to_hex(), "status": "pending" }))).into_response())
        }
    }
}

/// `POST /v1/records/batch`.
async fn submit_batch(
    State(shared): State<Arc<Shared>>,
    _: NoQuery,
    headers: HeaderMap,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    if let Some(why) = shared.no_route() {
        return Err(Failure::NoPeers(why).into());
    }
    // A full mempool takes nothing: the batch is answered before it is parsed
    // (an importer resending a batch of 500 records several times a second
    // would otherwise cost a JSON parse and 500 base64 decodes each time).
    if let Err(full) = shared.pool.lock().expect("pool lock").room_for(1, 0, Source::Api) {
        return Err(Failure::MempoolFull(format!(
            "{full}; no record of this batch was read: resend it after the Retry-After delay"
        ))
        .into());
    }
    let records_max = shared.limits.api_batch_records_max;
    let binary = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(submission::is_binary_batch);
    let refused = |e: LedgerError| match e {
        LedgerError::BatchTooLarge { .. } => ApiError::too_large(e.to_string()),
        e => ApiError::malformed(e.to_string()),
    };
    let decoded = if binary {
        let records = submission::binary_batch(&bytes, records_max).map_err(refused)?;
        records.into_iter().map(Ok).collect()
    } else {
        let body = BatchBody::from_json(&bytes, records_max).map_err(refused)?;
        body.record_bytes().into_iter().map(|d| d.map_err(|e| Failure::Malformed(e.to_string()))).collect()
    };
    let handle = tokio::runtime::Handle::current();
    let answer = blocking(move || Ok(admit_batch(decoded, |batch| handle.block_on(shared.submit_many(batch))))).await?;
    let full = answer.full;
    let mut response = Json(answer).into_response();
    if full {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1));
    }
    Ok(response)
}

/// The answer to `POST /v1/records/batch`. Typed rather than built as JSON
/// maps: a map of three owned keys per record was ~1 % of a validator at
/// rate max (docs/BENCHMARKS.md, session 19). Fields in the order a JSON map
/// would sort them, so the bytes are the same.
#[derive(serde::Serialize)]
struct BatchAnswer {
    accepted: usize,
    results: Vec<BatchResult>,
    /// Whether the mempool filled (the response then says when to retry).
    #[serde(skip)]
    full: bool,
}

#[derive(serde::Serialize)]
struct BatchResult {
    error: Option<Value>,
    id: Option<String>,
    status: Option<&'static str>,
}

/// Admits the decodable records together (one signature batch), in order;
/// once the mempool is full the rest are not accepted. Returns the number
/// accepted, one result per record, and whether the mempool filled.
fn admit_batch(
    decoded: Vec<Result<Vec<u8>, Failure>>,
    submit: impl FnOnce(Vec<Vec<u8>>) -> Vec<Result<Admitted, Failure>>,
) -> BatchAnswer {
    let mut admitted = submit(decoded.iter().filter_map(|d| d.as_ref().ok().cloned()).collect()).into_iter();
    let mut accepted = 0;
    let mut full = false;
    let mut results = Vec::with_capacity(decoded.len());
    for d in decoded {
        // An admitted record's id comes with it; a refused one's is hashed here, only then.
        let (outcome, bytes) = match d {
            Err(f) => (Err(f), None),
            Ok(bytes) => (admitted.next().expect("one result per decodable record"), Some(bytes)),
        };
        // Each record's own outcome, also past the one that found the pool full:
        // admission tried no new record after it (each says so), but a record
        // already pending or final, or refused, is still answered as such.
        results.push(match outcome {
            Ok(Admitted::Pending { id, .. }) => {
                accepted += 1;
                BatchResult { error: None, id: Some(id.to_hex()), status: Some("pending") }
            }
            Ok(Admitted::Final { id, .. }) => {
                accepted += 1;
                BatchResult { error: None, id: Some(id.to_hex()), status: Some("final") }
            }
            Err(f) => {
                full |= matches!(f, Failure::MempoolFull(_));
                let id = bytes
                    .filter(|_| !matches!(f, Failure::Malformed(_)))
                    .map(|b| SignedRecord::id_of_bytes(&b).to_hex());
                BatchResult { error: Some(f.to_json()), id, status: None }
            }
        });
    }
    BatchAnswer { accepted, results, full }
}

/// `GET /v1/records/{id}`.
async fn record(
    State(shared): State<Arc<Shared>>,
    PathParams(id): PathParams<String>,
    _: NoQuery,
) -> Result<Response, ApiError> {
    let id = record_id("path parameter id", &id)?;
    Ok(Json(blocking(move || shared.record(&id)).await?).into_response())
}

/// `GET /v1/history/{namespace}/{key}`.
async fn history(
    State(shared): State<Arc<Shared>>,
    PathParams((namespace, key)): PathParams<(String, String)>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    query.only(&["before", "limit"])?;
    let before = query.get("before").map(|b| record_id("query parameter before", b)).transpose()?;
    let limit = query.limit(HISTORY_PAGE, HISTORY_PAGE_MAX)?;
    Ok(Json(blocking(move || shared.history(&namespace, &key, before, limit)).await?).into_response())
}

/// Versions listed by one `GET /v1/history` answer, unless `limit` says otherwise, and at most.
/// Each costs a record read and a binary search over the headers for its height.
const HISTORY_PAGE: usize = 100;
const HISTORY_PAGE_MAX: usize = 1000;

/// `GET /v1/nonces/{submitter}`.
async fn nonce(
    State(shared): State<Arc<Shared>>,
    PathParams(submitter): PathParams<String>,
    _: NoQuery,
) -> Result<Response, ApiError> {
    let answer = blocking(move || {
        shared.last_nonce(&submitter).map_err(|f| match f {
            Failure::BadQuery(d) => Failure::BadQuery(format!("path parameter submitter: {d}")),
            other => other,
        })
    });
    Ok(Json(answer.await?).into_response())
}

// ---------------------------------------------------------------- proofs

/// `GET /v1/proofs/{id}[?status=true][&format=tlog-proof]`.
async fn proof(
    State(shared): State<Arc<Shared>>,
    deadline: Option<axum::Extension<Deadline>>,
    PathParams(id): PathParams<String>,
    query: QueryParams,
) -> Result<Response, ApiError> {
    query.only(&["status", "format"])?;
    let id = record_id("path parameter id", &id)?;
    let with_status = match query.get("status") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_query(format!("status={other:?} must be true or false"))),
    };
    let tlog = match query.get("format") {
        None | Some("bundle") => false,
        Some("tlog-proof") => true,
        Some(other) => return Err(ApiError::bad_query(format!("format={other:?} must be bundle or tlog-proof"))),
    };
    // A certificate still being collected is waited for, within the request's own bound.
    let wait = deadline.map_or(CERTIFICATE_WAIT, |d| d.0.room()).min(CERTIFICATE_WAIT);
    let bundle = blocking(move || shared.bundle(&id, with_status, wait)).await?;
    if tlog {
        let text = bundle.to_tlog_proof().map_err(|e| Failure::Internal(format!("a bundle this node built: {e}")))?;
        return Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    Ok(json_text(bundle.to_json()))
}

/// `GET /v1/checkpoint`.
async fn checkpoint(State(shared): State<Arc<Shared>>, _: NoQuery) -> Result<Response, ApiError> {
    Ok(Json(blocking(move || shared.checkpoint()).await?).into_response())
}

/// `GET /v1/consistency?from=H1[&to=H2]`.
async fn consistency(State(shared): State<Arc<Shared>>, query: QueryParams) -> Result<Response, ApiError> {
    query.only(&["from", "to"])?;
    let from = query.u64("from")?.ok_or_else(|| ApiError::bad_query("query parameter from is required"))?;
    let to = query.u64("to")?;
    let proof = blocking(move || shared.consistency(from, to)).await?;
    Ok(json_text(proof.to_json()))
}

// ---------------------------------------------------------------- blocks

/// `GET /v1/blocks/{height}`.
async fn block(
    State(shared): State<Arc<Shared>>,
    PathParams(height): PathParams<String>,
    _: NoQuery,
) -> Result<Response, ApiError> {
    let height = height
        .parse::<u64>()
        .map_err(|e| ApiError::bad_query(format!("path parameter height {height:?} is not a height: {e}")))?;
    let turn = block_build_turn(&shared.block_builds).await;
    // Built and written out as JSON on the blocking pool, holding the turn until done.
    let text = blocking(move || {
        let _turn = turn;
        Ok(shared.block(height)?.to_string())
    })
    .await?;
    Ok(json_text(text))
}

/// One of the `BLOCK_BUILDS_MAX` turns to build a block answer, waited for.
async fn block_build_turn(builds: &Arc<tokio::sync::Semaphore>) -> tokio::sync::OwnedSemaphorePermit {
    builds.clone().acquire_owned().await.expect("the block builds semaphore is never closed")
}

// ---------------------------------------------------------------- governance

/// `GET /v1/gov`.
async fn gov(State(shared): State<Arc<Shared>>, _: NoQuery) -> Result<Response, ApiError> {
    Ok(Json(blocking(move || shared.gov_state()).await?).into_response())
}

/// Proposals in one page of `GET /v1/gov/proposals`, by default and at most.
const PROPOSALS_PAGE: usize = 100;
const PROPOSALS_PAGE_MAX: usize = 1000;

/// `GET /v1/gov/proposals[?after=ID][&limit=N]`.
async fn proposals(State(shared): State<Arc<Shared>>, query: QueryParams) -> Result<Response, ApiError> {
    query.only(&["after", "limit"])?;
    let after = query.get("after").map(|a| record_id("query parameter after", a)).transpose()?;
    let limit = query.limit(PROPOSALS_PAGE, PROPOSALS_PAGE_MAX)?;
    Ok(Json(blocking(move || shared.gov_proposals(after, limit)).await?).into_response())
}

/// `GET /v1/gov/proposals/{id}`.
async fn proposal(
    State(shared): State<Arc<Shared>>,
    PathParams(id): PathParams<String>,
    _: NoQuery,
) -> Result<Response, ApiError> {
    let id = record_id("path parameter id", &id)?;
    Ok(Json(blocking(move || shared.gov_proposal(&id)).await?).into_response())
}

// ---------------------------------------------------------------- status

/// `GET /v1/status`.
async fn status(State(shared): State<Arc<Shared>>, _: NoQuery) -> Result<Response, ApiError> {
    Ok(Json(blocking(move || shared.status_json()).await?).into_response())
}

/// `GET /metrics`.
async fn metrics(State(shared): State<Arc<Shared>>, _: NoQuery) -> Result<Response, ApiError> {
    let text = blocking(move || Ok(shared.metrics_text())).await?;
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /healthz`.
async fn healthz(State(shared): State<Arc<Shared>>, _: NoQuery) -> Response {
    if shared.healthy() {
        return ([(CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response();
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unhealthy",
        "the node's loop is not running or its last commit failed; see its log",
    )
    .into_response()
}

/// `GET /openapi.json`.
async fn openapi(_: NoQuery) -> Response {
    json_text(OPENAPI.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: past the record that found the mempool full, a record already final is
    /// answered as final (and counted accepted), not as "not tried"; the answer says full.
    #[test]
    fn a_batch_answers_each_record_past_a_full_mempool() {
        let id = |b: u8| SignedRecord::id_of_bytes(&[b]);
        let decoded = vec![Ok(vec![1]), Ok(vec![2]), Err(Failure::Malformed("records[2] is junk".into())), Ok(vec![3])];
        let answer = admit_batch(decoded, |batch| {
            assert_eq!(batch, [vec![1], vec![2], vec![3]], "only the decodable records are submitted");
            vec![
                Ok(Admitted::Pending { id: id(1), new: true }),
                Err(Failure::MempoolFull("the mempool is full".into())),
                Ok(Admitted::Final { id: id(3), placed: Placed { index: 7, height: 2 } }),
            ]
        });
        assert!(answer.full);
        assert_eq!(answer.accepted, 2);
        let statuses: Vec<_> = answer.results.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [Some("pending"), None, None, Some("final")]);
        assert_eq!(answer.results[3].id, Some(id(3).to_hex()));
        assert_eq!(answer.results[1].id, Some(id(2).to_hex()), "a record not taken is named by its id");
        assert_eq!(answer.results[2].id, None, "a malformed record has no id");
    }

    /// Goal: at most `BLOCK_BUILDS_MAX` block answers are built at once; the next waits for
    /// a turn, and a turn comes back only when the build holding it ends, not when the
    /// request that started it goes away.
    #[tokio::test]
    async fn block_answers_take_turns_and_a_build_keeps_its_turn() {
        let builds = Arc::new(tokio::sync::Semaphore::new(crate::shared::BLOCK_BUILDS_MAX));
        let mut turns = Vec::new();
        for _ in 0..crate::shared::BLOCK_BUILDS_MAX {
            turns.push(block_build_turn(&builds).await);
        }
        let next = block_build_turn(&builds);
        tokio::pin!(next);
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut next).await.is_err(), "all turns taken");
        // A build holding a turn outlives the request that started it.
        let held = turns.pop().unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let build = tokio::task::spawn_blocking(move || {
            let _turn = held;
            released.recv().unwrap();
        });
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut next).await.is_err(), "the build holds it");
        release.send(()).unwrap();
        build.await.unwrap();
        let _turn =
            tokio::time::timeout(Duration::from_secs(5), next).await.expect("its turn comes when the build ends");
    }

    /// Goal: a body is read whole while it keeps the pace (the grace, then the rate), is
    /// refused 408 `too_slow` when its next bytes are late, and 413 once past the limit.
    #[tokio::test]
    async fn a_body_is_read_at_its_pace_or_refused() {
        // Chunks of 100 bytes, `gap` apart; after the last, the stream ends or hangs.
        fn body(chunks: usize, gap: Duration, hang: bool) -> axum::body::Body {
            let stream = futures::stream::unfold(0, move |i| async move {
                if i == chunks {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    return None;
                }
                tokio::time::sleep(gap).await;
                Some((Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 100])), i + 1))
            });
            axum::body::Body::from_stream(stream)
        }
        // 100 ms to begin, then 1,000 bytes/s: the byte after the k-th hundred is due at 100 + 100k ms.
        let pace = || BodyPace {
            started: tokio::time::Instant::now(),
            grace: Duration::from_millis(100),
            bytes_per_s_min: 1_000,
        };
        let read = read_body(body(5, Duration::from_millis(50), false), 1_000, pace()).await.unwrap();
        assert_eq!(read.len(), 500);

        let started = Instant::now();
        let late = read_body(body(1, Duration::from_millis(10), true), 1_000, pace()).await.unwrap_err();
        let after = started.elapsed();
        assert_eq!((late.status, late.code), (StatusCode::REQUEST_TIMEOUT, "too_slow"));
        assert!(late.detail.contains("100 bytes in"), "{}", late.detail);
        assert!(after >= Duration::from_millis(195) && after < Duration::from_secs(2), "refused after {after:?}");

        let large = read_body(body(5, Duration::ZERO, false), 250, pace()).await.unwrap_err();
        assert_eq!((large.status, large.code), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    }

    /// Goal: a large answer takes its size from the budget until its body has been read to
    /// the end, piece by piece; one that does not fit meanwhile is 503 busy; small answers
    /// are not counted; one larger than the whole budget takes all of it.
    #[tokio::test]
    async fn large_answers_are_counted_until_taken() {
        use http_body_util::BodyExt;
        let answers = Answers::new(200 * 1024);
        let answer = |bytes: usize| vec![7u8; bytes].into_response();
        let mut first = answers.hold(answer(150 * 1024)).await.into_body();
        assert_eq!(answers.kib.available_permits(), 50);
        let busy = answers.hold(answer(100 * 1024)).await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers().get(RETRY_AFTER).unwrap(), "1");
        let small = answers.hold(answer(ANSWER_HELD_BYTES_MIN - 1)).await;
        assert_eq!(small.status(), StatusCode::OK, "small answers are not counted");
        let mut read = Vec::new();
        while let Some(frame) = first.frame().await {
            let piece = frame.unwrap().into_data().unwrap();
            assert!(piece.len() <= ANSWER_PIECE_BYTES);
            read.extend_from_slice(&piece);
            if read.len() < 150 * 1024 {
                assert_eq!(answers.kib.available_permits(), 50, "held until the last piece is taken");
            }
        }
        assert_eq!(read, vec![7u8; 150 * 1024]);
        drop(first);
        assert_eq!(answers.kib.available_permits(), 200);
        let huge = answers.hold(answer(1 << 20)).await;
        assert_eq!(huge.status(), StatusCode::OK);
        assert_eq!(answers.kib.available_permits(), 0, "an answer over the budget takes all of it");
        drop(huge);
        assert_eq!(answers.kib.available_permits(), 200);
    }

    fn ip(n: usize) -> Client {
        Client::of(IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]))
    }

    /// Goal: a bucket holds one second's worth, refills at the rate, and says when to come back.
    #[test]
    fn buckets_refill_at_the_rate() {
        let mut limiter = Limiter::new(4);
        let t = Instant::now();
        for _ in 0..4 {
            limiter.take(ip(1), t).unwrap();
        }
        assert_eq!(limiter.take(ip(1), t), Err(1));
        limiter.take(ip(2), t).expect("another client has its own bucket");
        limiter.take(ip(1), t + Duration::from_millis(250)).expect("a quarter second refills one token");
        assert_eq!(limiter.take(ip(1), t + Duration::from_millis(250)), Err(1));
        let mut slow = Limiter::new(1);
        slow.take(ip(1), t).unwrap();
        assert_eq!(slow.take(ip(1), t), Err(1));
    }

    /// Goal: the limiter never remembers more than CLIENTS_MAX clients, forgetting idle ones
    /// first; one more client past the bound evicts the longest idle eighth of the limited
    /// ones at once (not the newest), so the next ones are admitted without another scan.
    #[test]
    fn clients_are_bounded() {
        let mut limiter = Limiter::new(1);
        let t = Instant::now();
        for n in 0..CLIENTS_MAX {
            limiter.take(ip(n), t + Duration::from_micros(n as u64)).unwrap();
        }
        assert_eq!(limiter.clients.len(), CLIENTS_MAX);
        let late = t + Duration::from_millis(20);
        limiter.take(ip(CLIENTS_MAX), late).unwrap();
        assert_eq!(limiter.clients.len(), CLIENTS_MAX - CLIENTS_EVICTED + 1);
        assert!((0..CLIENTS_EVICTED).all(|n| !limiter.clients.contains_key(&ip(n))), "the longest idle are forgotten");
        assert!((CLIENTS_EVICTED..=CLIENTS_MAX).all(|n| limiter.clients.contains_key(&ip(n))), "the rest are kept");
        assert_eq!(limiter.take(ip(CLIENTS_MAX), late), Err(1), "the newest is still limited");
        let idle = t + Duration::from_secs(2);
        for n in 1..CLIENTS_EVICTED {
            limiter.take(ip(CLIENTS_MAX + n), late).unwrap();
        }
        assert_eq!(limiter.clients.len(), CLIENTS_MAX, "room for an eighth more before the next eviction");
        limiter.take(ip(2 * CLIENTS_MAX), idle).unwrap();
        assert_eq!(limiter.clients.len(), 1, "every refilled bucket is forgotten at once");
    }

    /// Goal: one IPv6 /64 is one client (its host part is the subscriber's to
    /// choose), an IPv4-mapped address is its IPv4 client, and the 429's text names the /64.
    #[test]
    fn an_ipv6_network_is_one_client() {
        let v6 = |s: &str| Client::of(s.parse::<IpAddr>().unwrap());
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:10.0.0.7"), v6("10.0.0.7"));
        assert_eq!(v6("2001:db8:1:2:3:4:5:6").to_string(), "2001:db8:1:2::/64");
        assert_eq!(v6("10.0.0.7").to_string(), "10.0.0.7");
        let mut limiter = Limiter::new(1);
        let t = Instant::now();
        limiter.take(v6("2001:db8:1:2::1"), t).unwrap();
        assert_eq!(limiter.take(v6("2001:db8:1:2::99"), t), Err(1), "another host of the /64 shares its bucket");
        limiter.take(v6("2001:db8:1:3::1"), t).expect("the next /64 has its own");
    }

    /// Goal: the served OpenAPI document is JSON naming OpenAPI 3.0.
    #[test]
    fn openapi_is_json() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
    }
}
