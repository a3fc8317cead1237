//! Bounds on the work a node takes on: requests in flight, request bodies held in memory, and
//! the time a request may take (`?timeout`), applied in one middleware around the whole API.
//!
//! - At most `--max-concurrent-requests` requests are handled at once; one more is answered
//!   503 with `Retry-After` at once instead of queueing (each may hold a body of up to 64 MiB).
//! - Request bodies being handled hold at most `--max-buffered-body-bytes` together, counted
//!   from `Content-Length` (a body without one counts as the largest body accepted); one that
//!   does not fit is answered 503 with `Retry-After` before its body is read.
//! - Every request is answered by its deadline (`?timeout`, default 10 s): handlers see the
//!   time left through [`remaining`], so forwarding, linearizable reads and writes stop waiting
//!   then; the middleware answers 503 shortly after the deadline should anything still wait.
//!
//! `/readyz`, `/status` and `/metrics` are exempt, so an overloaded node stays observable (the
//! Raft listener is a separate router and is never limited: the cluster keeps its leader).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::ApiError;

/// Largest request body accepted; larger ones are refused with 400.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default of `--max-concurrent-requests`.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;
/// Default of `--max-buffered-body-bytes`.
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: usize = 256 << 20;
/// Default of `--max-response-bytes`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Time a request may take unless `?timeout` says otherwise (rqlite's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after its deadline the middleware itself answers a request still waiting: handlers
/// answer at the deadline with a precise message; this is the guarantee behind it.
const DEADLINE_BACKSTOP: Duration = Duration::from_millis(250);
/// Body budget unit: a tokio semaphore takes at most `u32` permits at once.
const BODY_UNIT: usize = 1024;

/// The configured limits (`--max-*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_concurrent_requests: usize,
    pub max_buffered_body_bytes: usize,
    pub max_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_buffered_body_bytes: DEFAULT_MAX_BUFFERED_BODY_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The shared counters behind [`Limits`].
pub struct Admission {
    limits: Limits,
    requests: Arc<Semaphore>,
    body_units: Arc<Semaphore>,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            requests: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            body_units: Arc::new(Semaphore::new(body_units(limits))),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// The body budget in [`BODY_UNIT`]s.
fn body_units(limits: Limits) -> usize {
    (limits.max_buffered_body_bytes / BODY_UNIT).clamp(1, u32::MAX as usize)
}

tokio::task_local! {
    /// When the request being handled on this task must be answered by.
    static DEADLINE: Instant;
}

/// Time left before the current request's deadline; `None` outside a request with one (exempt
/// endpoints, background tasks).
pub(crate) fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// Wraps the finished API router (auth included, so unauthenticated floods are bounded too).
pub fn guard(router: Router, admission: Arc<Admission>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(admission, admit))
}

fn is_exempt(path: &str) -> bool {
    matches!(path, "/readyz" | "/status" | "/metrics")
}

/// Endpoints whose work may rightly take long (a database upload or download, a backup): they
/// get a deadline only when the client gives `?timeout`.
fn is_long_running(path: &str) -> bool {
    matches!(path, "/db/load" | "/db/backup" | "/backups")
}

/// Endpoints that stream their request body instead of buffering it.
fn streams_body(path: &str) -> bool {
    path == "/db/load"
}

fn timeout_param(req: &Request) -> Option<Duration> {
    let Query(params) = Query::<HashMap<String, String>>::try_from_uri(req.uri()).ok()?;
    raftlite_store::go_duration::parse_go_duration(params.get("timeout")?).ok()
}

async fn admit(State(admission): State<Arc<Admission>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if is_exempt(&path) {
        return next.run(req).await;
    }
    let started = Instant::now();
    let limits = admission.limits;
    let Ok(_in_flight) = admission.requests.clone().try_acquire_owned() else {
        metrics::counter!("raftlite_requests_refused_total", "reason" => "concurrency")
            .increment(1);
        let refusal = ApiError::Unavailable(format!(
            "this node is already handling {} requests (--max-concurrent-requests); nothing \
             was done: retry shortly",
            limits.max_concurrent_requests
        ));
        return refuse(req, refusal).await;
    };
    let _body_budget = if streams_body(&path) || has_no_body(&req) {
        None
    } else {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(MAX_BODY_BYTES);
        let units = declared
            .min(MAX_BODY_BYTES)
            .div_ceil(BODY_UNIT)
            .clamp(1, body_units(limits));
        match admission
            .body_units
            .clone()
            .try_acquire_many_owned(units as u32)
        {
            Ok(permit) => Some(permit),
            Err(_) => {
                metrics::counter!("raftlite_requests_refused_total", "reason" => "body_bytes")
                    .increment(1);
                let refusal = ApiError::Unavailable(format!(
                    "this node already holds {} MiB of request bodies \
                     (--max-buffered-body-bytes); nothing was done: retry shortly",
                    limits.max_buffered_body_bytes >> 20
                ));
                return refuse(req, refusal).await;
            }
        }
    };
    let timeout = match timeout_param(&req) {
        Some(t) => t,
        None if is_long_running(&path) => return next.run(req).await,
        None => DEFAULT_TIMEOUT,
    };
    let deadline = started + timeout;
    let answered = DEADLINE.scope(
        deadline,
        tokio::time::timeout_at(deadline + DEADLINE_BACKSTOP, next.run(req)),
    );
    match answered.await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("raftlite_requests_timed_out_total").increment(1);
            ApiError::Unavailable(format!(
                "no answer within the request's timeout ({timeout:?}); a write may or may not \
                 have been applied: retry (with a larger ?timeout if the cluster is busy)"
            ))
            .into_response()
        }
    }
}

/// The answer to a request refused before it was handled. Its body is read and dropped first
/// (up to the largest body accepted, chunk by chunk: nothing is kept), because a client cut
/// off in the middle of its upload may never see the answer.
async fn refuse(req: Request, refusal: ApiError) -> Response {
    use futures::StreamExt;
    let mut body = req.into_body().into_data_stream();
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len();
        if seen > MAX_BODY_BYTES {
            break;
        }
    }
    refusal.into_response()
}

/// Requests without a body: a zero `Content-Length`, or neither it nor `Transfer-Encoding`.
fn has_no_body(req: &Request) -> bool {
    match req.headers().get(header::CONTENT_LENGTH) {
        Some(length) => length.as_bytes() == b"0",
        None => !req.headers().contains_key(header::TRANSFER_ENCODING),
    }
}
