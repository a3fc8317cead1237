//! The client-facing HTTP API (rqlite-compatible) and cluster management endpoints.
//!
//! Writes and leader-only reads that reach a follower are forwarded to the leader over HTTP
//! (or answered with 301 and `Location` under `?redirect`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use raftlite_consensus::node::{RaftNode, WriteError, WriteOutcome};
use raftlite_consensus::{NodeAddr, NodeId};
use raftlite_store::{Statement, StatementResult, WriteRequest};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::error::ApiError;
use crate::{pragma, rqlite};

/// Marks a request a node forwarded to the leader, so a stale leader view never loops.
pub(crate) const FORWARDED_HEADER: &str = "x-raftlite-forwarded";
/// Largest request body accepted; larger ones are refused with 400.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

pub struct ApiState {
    pub node: RaftNode,
    pub client: reqwest::Client,
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
    pub data_dir: std::path::PathBuf,
    /// HTTP Basic auth (`--auth FILE`); `None` lets every request through.
    pub auth: Option<Arc<crate::auth::AuthStore>>,
    /// `POST /backups` (`--backup-to`); `None` answers 400.
    pub backups: Option<Arc<raftlite_backup::service::BackupService>>,
    /// Requests in flight, bodies held, response size (`--max-*`).
    pub limits: crate::limits::Limits,
    /// The HTTP listener, as `/status` shows it (rqlite's `http` section).
    pub http: HttpInfo,
}

/// What `/status` says about the HTTP listener.
#[derive(Clone, Debug, Default)]
pub struct HttpInfo {
    /// The address the API listens on (rqlite's `http.bind_addr`).
    pub bind_addr: String,
    /// Whether the API is served over HTTPS.
    pub tls: bool,
}

type Params = Query<HashMap<String, String>>;

pub fn router(state: Arc<ApiState>) -> Router {
    let auth = state.auth.clone();
    let admission = crate::limits::Admission::new(state.limits);
    let app = Router::new()
        .route("/db/execute", post(execute))
        .route("/db/query", get(query).post(query))
        .route("/db/request", post(request))
        .route("/status", get(status))
        .route("/nodes", get(nodes))
        .route("/readyz", get(readyz))
        .route("/leader", get(leader).post(step_down))
        .route("/remove", delete(remove))
        .route("/join", post(join))
        .route("/metrics", get(metrics))
        .merge(crate::transfer::routes())
        .merge(crate::backups::routes())
        .layer(axum::middleware::from_fn(check_duration_params))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    // Last, so that every route above (merged ones included) is checked.
    let app = crate::auth::protect(app, auth);
    // Outside auth: a flood of unauthenticated requests is bounded too.
    crate::limits::guard(app, admission)
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        ApiError::BadRequest(format!(
            "cannot read the request body ({e}); bodies are limited to {} MiB",
            MAX_BODY_BYTES / (1024 * 1024)
        ))
    })
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

pub(crate) fn flag(params: &HashMap<String, String>, key: &str) -> bool {
    params
        .get(key)
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"))
}

/// Reads the duration query parameter `key` with Go's `time.ParseDuration` syntax, as rqlite
/// does (`http/query_params.go`, `NewQueryParams`): `500ms`, `1.5s`, `1m30s`, `1h2m3.5s`, `0`.
/// A value Go refuses, and a negative one, is a 400 that says why.
pub(crate) fn duration_param(
    params: &HashMap<String, String>,
    key: &str,
) -> Result<Option<Duration>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(t) => raftlite_store::go_duration::parse_go_duration(t)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("{key} is not a valid duration: {e}"))),
    }
}

/// The duration parameters rqlite checks on every request (`http/query_params.go`,
/// `NewQueryParams`), whatever the endpoint.
const DURATION_PARAMS: [&str; 4] = ["timeout", "freshness", "db_timeout", "linearizable_timeout"];

/// Refuses, with a 400 naming it, any request whose duration parameter Go's
/// `time.ParseDuration` would refuse (or that is negative), as rqlite does before any handler
/// runs; handlers then read them with [`duration_param`].
async fn check_duration_params(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Ok(Query(params)) = Query::<HashMap<String, String>>::try_from_uri(request.uri()) {
        for key in DURATION_PARAMS {
            if let Err(e) = duration_param(&params, key) {
                return e.into_response();
            }
        }
    }
    next.run(request).await
}

/// The time a request may still take: what is left of its deadline (`?timeout` from its
/// arrival, see [`crate::limits`]), or `?timeout` itself (default 10 s) on exempt endpoints.
pub(crate) fn timeout_of(params: &HashMap<String, String>) -> Result<Duration, ApiError> {
    let given = duration_param(params, "timeout")?.unwrap_or(crate::limits::DEFAULT_TIMEOUT);
    Ok(crate::limits::remaining().unwrap_or(given))
}

pub(crate) fn json_response(status: StatusCode, value: &Json, pretty: bool) -> Response {
    let mut response = (status, rqlite::to_body(value, pretty)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// What a node does with a request that only the leader can serve.
pub(crate) struct LeaderOnly<'a> {
    pub(crate) method: Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) redirect: bool,
}

pub(crate) async fn to_leader(state: &ApiState, req: LeaderOnly<'_>, err: WriteError) -> Response {
    to_leader_within(state, req, err, None).await
}

/// Headers of the leader's answer that a forwarded answer keeps.
const FORWARDED_RESPONSE_HEADERS: [&str; 7] = [
    "content-type",
    "content-disposition",
    "content-length",
    "retry-after",
    "www-authenticate",
    "x-raftlite-applied-index",
    "x-raftlite-timeline",
];

/// Like [`to_leader`], with a time limit for the whole forwarded exchange other than the
/// client's default (long operations such as backups). The leader's answer is streamed through,
/// so a large body (a database file) never sits in this node's memory.
pub(crate) async fn to_leader_within(
    state: &ApiState,
    req: LeaderOnly<'_>,
    err: WriteError,
    timeout: Option<Duration>,
) -> Response {
    let req = LeaderOnlyStream {
        method: req.method,
        uri: req.uri,
        headers: req.headers,
        body: reqwest::Body::from(req.body),
        redirect: req.redirect,
    };
    to_leader_streaming(state, req, err, timeout).await
}

/// How long a leader may send nothing (not even a heartbeat) to this follower before a long
/// forwarded operation stops waiting for it: many heartbeat intervals, more than an election
/// timeout.
const LEADER_SILENCE_BOUND: Duration = Duration::from_secs(5);

/// Resolves, with the reason, once `leader_id` is no longer a leader this node hears from:
/// another node leads, none is known, or it sent nothing for [`LEADER_SILENCE_BOUND`].
async fn leader_lost(node: &RaftNode, leader_id: NodeId) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        match node.leader() {
            Some((id, _)) if id == leader_id => {
                if let Some(silent) = node
                    .since_leader_contact()
                    .filter(|s| *s > LEADER_SILENCE_BOUND)
                {
                    return format!("leader {leader_id} sent nothing for {silent:?}");
                }
            }
            Some((id, _)) => return format!("leadership moved from node {leader_id} to node {id}"),
            None => return format!("node {leader_id} stopped leading"),
        }
    }
}

/// [`LeaderOnly`] whose body is sent as it is produced (a database file read in chunks), so a
/// large upload never sits in this node's memory.
pub(crate) struct LeaderOnlyStream<'a> {
    pub(crate) method: Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: reqwest::Body,
    pub(crate) redirect: bool,
}

/// [`to_leader_within`] for a streamed request body. Under `?redirect` the body is dropped
/// unsent (the client sends it again to the leader).
pub(crate) async fn to_leader_streaming(
    state: &ApiState,
    req: LeaderOnlyStream<'_>,
    err: WriteError,
    timeout: Option<Duration>,
) -> Response {
    let WriteError::NotLeader {
        leader: Some((leader_id, leader)),
    } = err
    else {
        return ApiError::from(err).into_response();
    };
    if leader_id == state.node.id() || req.headers.contains_key(FORWARDED_HEADER) {
        return ApiError::Unavailable(
            "leadership is changing; retry the request shortly".to_string(),
        )
        .into_response();
    }
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = format!("{}{path}", api_base(&leader));
    if req.redirect {
        let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
        if let Ok(location) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    }
    // The leader gets what is left of this request's deadline, not the client's fixed limit:
    // a paused leader accepts connections and never answers.
    let limit = crate::limits::remaining().or(timeout);
    if limit == Some(Duration::ZERO) {
        return ApiError::Unavailable(format!(
            "the request's timeout ran out before it could be forwarded to leader {leader_id}; \
             retry (with a larger ?timeout if the cluster is busy)"
        ))
        .into_response();
    }
    let mut forwarded = state
        .client
        .request(req.method, &target)
        .header(FORWARDED_HEADER, state.node.id().to_string())
        .body(req.body);
    if let Some(limit) = limit {
        forwarded = forwarded.timeout(limit);
    }
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
        if let Some(v) = req.headers.get(&name) {
            forwarded = forwarded.header(name, v);
        }
    }
    // A long operation (a restore, a backup: minutes, on purpose without a deadline) is bounded
    // by the leader's life instead: it is answered once that leader stops being the one this
    // node hears from. A paused leader is replaced within an election timeout.
    let long = limit.is_none_or(|l| l > crate::limits::DEFAULT_TIMEOUT);
    let sent = if long {
        tokio::select! {
            sent = forwarded.send() => sent,
            lost = leader_lost(&state.node, leader_id) => {
                return ApiError::Unavailable(format!(
                    "{lost} while it handled this forwarded request; its outcome is unknown: \
                     check /status (a restore names its timeline there) before retrying"
                ))
                .into_response()
            }
        }
    } else {
        forwarded.send().await
    };
    let upstream = match sent {
        Ok(upstream) => upstream,
        Err(e) if e.is_timeout() => {
            return ApiError::Unavailable(format!(
                "leader {leader_id} at {} did not answer within the request's timeout ({:?}); \
                 a write may or may not have been applied: retry shortly",
                leader.api_addr,
                limit.unwrap_or_default()
            ))
            .into_response()
        }
        Err(e) => {
            return ApiError::Unavailable(format!(
                "cannot forward to leader {leader_id} at {}: {e}; retry shortly",
                leader.api_addr
            ))
            .into_response()
        }
    };
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut kept = HeaderMap::new();
    for name in FORWARDED_RESPONSE_HEADERS {
        if let (Some(v), Ok(name)) = (
            upstream.headers().get(name),
            header::HeaderName::from_bytes(name.as_bytes()),
        ) {
            if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                kept.insert(name, v);
            }
        }
    }
    let body = futures::stream::unfold(Some(upstream), move |upstream| async move {
        let mut upstream = upstream?;
        match upstream.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(upstream))),
            Ok(None) => None,
            Err(e) => Some((
                Err(std::io::Error::other(format!(
                    "leader {leader_id} stopped answering the forwarded request ({e}); it may \
                     or may not have been applied"
                ))),
                None,
            )),
        }
    });
    let mut response = (status, axum::body::Body::from_stream(body)).into_response();
    response.headers_mut().extend(kept);
    response
}

pub(crate) fn api_base(addr: &NodeAddr) -> String {
    if addr.api_addr.starts_with("http://") || addr.api_addr.starts_with("https://") {
        addr.api_addr.clone()
    } else {
        format!("http://{}", addr.api_addr)
    }
}

/// rqlite's answer to a request with a PRAGMA that would break the database layer (see
/// [`pragma`]): 200, `{"results":[],"error":"disallowed pragma"}`, before anything is forwarded
/// or proposed, on a follower too (rqlite's store checks before it checks for leadership).
pub(crate) fn disallowed_pragma(opts: &rqlite::ResponseOptions, started: Instant) -> Response {
    json_response(
        StatusCode::OK,
        &rqlite::encode_request_failure(
            pragma::DISALLOWED_PRAGMA,
            opts,
            Some(started.elapsed().as_secs_f64()),
        ),
        opts.pretty,
    )
}

pub(crate) async fn write_with_timeout(
    node: &RaftNode,
    request: WriteRequest,
    timeout: Duration,
) -> Result<WriteOutcome, WriteError> {
    match tokio::time::timeout(timeout, node.write(request)).await {
        Ok(r) => r,
        Err(_) => Err(WriteError::Unavailable(format!(
            "the write was not committed within {timeout:?} (no quorum?); it may still be \
             applied later"
        ))),
    }
}

async fn execute(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "execute").increment(1);
    let started = Instant::now();
    let opts = rqlite::response_options(&params);
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        let statements = rqlite::parse_statements(&body, content_type(&headers))?;
        let timeout = timeout_of(&params)?;
        if pragma::has_disallowed_pragma(&statements) {
            return Ok(disallowed_pragma(&opts, started));
        }
        let request = WriteRequest {
            statements,
            transaction: flag(&params, "transaction"),
        };
        if flag(&params, "queue") && state.node.is_leader() {
            return Ok(queue_write(&state, request, &params, &opts, timeout).await);
        }
        match write_with_timeout(&state.node, request, timeout).await {
            Ok(outcome) => Ok(json_response(
                StatusCode::OK,
                &rqlite::encode_results(
                    &outcome.results,
                    &opts,
                    Some(started.elapsed().as_secs_f64()),
                    flag(&params, "raft_index").then_some(outcome.raft_index),
                ),
                opts.pretty,
            )),
            Err(err) => {
                let req = LeaderOnly {
                    method,
                    uri: &uri,
                    headers: &headers,
                    body,
                    redirect: flag(&params, "redirect"),
                };
                Ok(to_leader(&state, req, err).await)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    None,
    Weak,
    Linearizable,
}

/// How a read may be served (rqlite's `level`, `freshness`, `freshness_strict`, `db_timeout`).
#[derive(Clone, Copy, Debug)]
struct ReadOptions {
    level: Level,
    /// With `level=none`: the most time allowed since this node last heard from the leader.
    freshness: Option<Duration>,
    /// Also require the last applied write to be no older than `freshness`.
    freshness_strict: bool,
    db_timeout: Option<Duration>,
}

/// rqlite's rules: unknown or missing levels mean `weak`; `auto` means `none` on a non-voter
/// (read-only node) and `weak` on a voter.
fn level_of(params: &HashMap<String, String>, node: &RaftNode) -> Level {
    match params
        .get("level")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("none") => Level::None,
        Some("strong") | Some("linearizable") => Level::Linearizable,
        Some("auto") => {
            let voters: Vec<NodeId> = node
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if voters.contains(&node.id()) {
                Level::Weak
            } else {
                Level::None
            }
        }
        _ => Level::Weak,
    }
}

fn read_options(
    params: &HashMap<String, String>,
    node: &RaftNode,
) -> Result<ReadOptions, ApiError> {
    Ok(ReadOptions {
        level: level_of(params, node),
        freshness: duration_param(params, "freshness")?,
        freshness_strict: flag(params, "freshness_strict"),
        db_timeout: {
            // Checked as rqlite checks it (a 400 when malformed); reads here never wait on a
            // leader's commit index, so its value is not used.
            duration_param(params, "linearizable_timeout")?;
            duration_param(params, "db_timeout")?
        },
    })
}

/// Why a read cannot be served here.
enum ReadRefusal {
    /// Only the leader may serve it (forward or redirect).
    Leader(WriteError),
    /// `freshness` is not met: rqlite answers with an error instead of stale data.
    Stale(String),
}

/// Checks that this node may serve a read with these options.
async fn read_allowed(
    node: &RaftNode,
    opts: &ReadOptions,
    timeout: Duration,
) -> Result<(), ReadRefusal> {
    match opts.level {
        Level::None => {
            match opts.freshness {
                // The leader is always within any freshness bound.
                Some(limit) if !node.is_leader() => {
                    match node.since_leader_contact() {
                        Some(since) if since <= limit => {}
                        Some(since) => {
                            return Err(ReadRefusal::Stale(format!(
                            "stale read: last contact with the leader was {since:?} ago, more than \
                             freshness {limit:?}"
                        )))
                        }
                        None => return Err(ReadRefusal::Stale(
                            "stale read: this node has not heard from a leader since it started"
                                .to_string(),
                        )),
                    }
                    if opts.freshness_strict {
                        let age_ms = node
                            .store()
                            .last_write_at_ms()
                            .map(|at| (raftlite_consensus::node::unix_ms() - at).max(0) as u128);
                        if let Some(age_ms) = age_ms.filter(|a| *a > limit.as_millis()) {
                            return Err(ReadRefusal::Stale(format!(
                                "stale read: the last write applied here is {age_ms} ms old, more \
                             than freshness {limit:?} (freshness_strict)"
                            )));
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        Level::Weak => {
            if node.is_leader() {
                Ok(())
            } else {
                Err(ReadRefusal::Leader(WriteError::NotLeader {
                    leader: node.leader(),
                }))
            }
        }
        Level::Linearizable => {
            match tokio::time::timeout(timeout, node.ensure_linearizable()).await {
                Ok(r) => r.map_err(ReadRefusal::Leader),
                Err(_) => Err(ReadRefusal::Leader(WriteError::Unavailable(format!(
                    "could not confirm leadership within {timeout:?}"
                )))),
            }
        }
    }
}

async fn run_query(
    state: &ApiState,
    statements: Vec<Statement>,
    db_timeout: Option<Duration>,
) -> Result<Vec<StatementResult>, ApiError> {
    let store = state.node.store();
    let max_bytes = state.limits.max_response_bytes;
    tokio::task::spawn_blocking(move || {
        store.query_within(&statements, db_timeout, Some(max_bytes))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::from)
}

async fn query(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "query").increment(1);
    let started = Instant::now();
    let opts = rqlite::response_options(&params);
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        let statements = if method == Method::GET {
            let q = params.get("q").map(String::as_str).unwrap_or("");
            let statements = rqlite::parse_query_param(q);
            if statements.is_empty() {
                return Err(ApiError::BadRequest(
                    "query parameter q is not set: use /db/query?q=SELECT...".into(),
                ));
            }
            statements
        } else {
            rqlite::parse_statements(&body, content_type(&headers))?
        };
        let read = read_options(&params, &state.node)?;
        let timeout = timeout_of(&params)?;
        if pragma::has_disallowed_pragma(&statements) {
            return Ok(disallowed_pragma(&opts, started));
        }
        match read_allowed(&state.node, &read, timeout).await {
            Ok(()) => {}
            Err(ReadRefusal::Stale(msg)) => {
                return Ok(json_response(
                    StatusCode::OK,
                    &rqlite::encode_request_failure(&msg, &opts, None),
                    opts.pretty,
                ))
            }
            Err(ReadRefusal::Leader(err)) => {
                let req = LeaderOnly {
                    method,
                    uri: &uri,
                    headers: &headers,
                    body,
                    redirect: flag(&params, "redirect"),
                };
                return Ok(to_leader(&state, req, err).await);
            }
        }
        let results = run_query(&state, statements, read.db_timeout).await?;
        Ok(json_response(
            StatusCode::OK,
            &rqlite::encode_results(&results, &opts, Some(started.elapsed().as_secs_f64()), None),
            opts.pretty,
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `/db/request`: reads go the read path, anything that writes goes through the log.
async fn request(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "request").increment(1);
    let started = Instant::now();
    let opts = rqlite::response_options(&params);
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        let statements = rqlite::parse_statements(&body, content_type(&headers))?;
        let timeout = timeout_of(&params)?;
        if pragma::has_disallowed_pragma(&statements) {
            return Ok(disallowed_pragma(&opts, started));
        }
        let store = state.node.store();
        let probe = statements.clone();
        let read_only = tokio::task::spawn_blocking(move || store.is_read_only(&probe))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        let redirect = flag(&params, "redirect");
        let outcome = if read_only {
            let read = read_options(&params, &state.node)?;
            match read_allowed(&state.node, &read, timeout).await {
                Ok(()) => Ok((run_query(&state, statements, read.db_timeout).await?, None)),
                Err(ReadRefusal::Stale(msg)) => {
                    return Ok(json_response(
                        StatusCode::OK,
                        &rqlite::encode_request_failure(&msg, &opts, None),
                        opts.pretty,
                    ))
                }
                Err(ReadRefusal::Leader(e)) => Err(e),
            }
        } else {
            let request = WriteRequest {
                statements,
                transaction: flag(&params, "transaction"),
            };
            write_with_timeout(&state.node, request, timeout)
                .await
                .map(|o| (o.results, Some(o.raft_index)))
        };
        match outcome {
            Ok((results, index)) => Ok(json_response(
                StatusCode::OK,
                &rqlite::encode_unified_results(
                    &results,
                    &opts,
                    Some(started.elapsed().as_secs_f64()),
                    index.filter(|_| flag(&params, "raft_index")),
                ),
                opts.pretty,
            )),
            Err(err) => {
                let req = LeaderOnly {
                    method,
                    uri: &uri,
                    headers: &headers,
                    body,
                    redirect,
                };
                Ok(to_leader(&state, req, err).await)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Raft states by the names rqlite shows (hashicorp/raft's `RaftState.String`). A learner
/// (openraft's name for a non-voter) follows the leader: hashicorp/raft calls it a Follower.
fn state_name(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "Leader",
        openraft::ServerState::Follower | openraft::ServerState::Learner => "Follower",
        openraft::ServerState::Candidate => "Candidate",
        openraft::ServerState::Shutdown => "Shutdown",
    }
}

/// rqlite's `Store.Ready` (store/store.go): open, and a leader is known. `/readyz` answers 200
/// exactly when this holds; `/status` shows it as `store.ready`.
fn is_ready(node: &RaftNode) -> bool {
    node.leader().is_some()
}

/// Go's `runtime.GOOS` for the platform this binary was built for.
fn go_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// Go's `runtime.GOARCH` for the architecture this binary was built for.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// rqlite's `os` section of `/status` (`http/service.go`, `handleStatus`).
fn os_status() -> Json {
    let mut os = serde_json::Map::new();
    os.insert("pid".into(), json!(std::process::id()));
    os.insert("ppid".into(), json!(std::os::unix::process::parent_id()));
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    os.insert("page_size".into(), json!(page_size.max(0)));
    // Like rqlite, left out when it cannot be found.
    if let Ok(exe) = std::env::current_exe() {
        os.insert("executable".into(), json!(exe.display().to_string()));
    }
    if let Some(host) = hostname() {
        os.insert("hostname".into(), json!(host));
    }
    Json::Object(os)
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..len]).ok().map(str::to_owned)
}

/// rqlite's `runtime` section, with Go's keys and the Rust equivalents as values: the target's
/// OS and architecture under Go's names, the CPUs this process may use, the Tokio tasks alive
/// (rqlite: goroutines) and the compiler that built this binary.
fn runtime_status() -> Json {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    json!({
        "GOARCH": go_arch(),
        "GOOS": go_os(),
        "GOMAXPROCS": cpus,
        "num_cpu": cpus,
        "num_goroutine": tasks,
        "version": env!("RAFTLITE_RUSTC_VERSION"),
        "kubernetes_hint": std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    })
}

/// RFC 3339 with nanoseconds, as Go marshals a `time.Time`.
fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// `GET /status`. The sections and the fields clients read have rqlite's names and JSON types
/// (`http/service.go` `handleStatus`, `store/store.go` `Stats`): node ids are strings,
/// `store.leader` is `{"node_id": "", "addr": ""}` without a leader, `store.ready` is
/// rqlite's `Store.Ready`. raftlite's own fields (timeline, restore, backup, ...) sit beside them.
async fn status(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    let node = &state.node;
    let m = node.metrics();
    let store = node.store();
    // The committed state, read without the writer's lock: /status answers while an entry
    // (a long write, say) is being applied.
    let meta = tokio::task::spawn_blocking(move || {
        (store.committed_meta(), store.committed_pending_restore())
    })
    .await;
    let (timeline, history, chunks_held) = match meta {
        Ok((Ok(meta), pending)) => (
            meta.timeline().map(|t| json!(t)).unwrap_or(Json::Null),
            json!(meta.timeline_history),
            match pending {
                Ok(Some((restore_id, chunks, bytes))) => {
                    json!({ "restore_id": restore_id, "chunks": chunks, "bytes": bytes })
                }
                _ => Json::Null,
            },
        ),
        _ => (Json::Null, Json::Null, Json::Null),
    };
    let leader = node.leader();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let members: Vec<Json> = membership
        .nodes()
        .map(|(id, addr)| {
            json!({
                "id": id.to_string(),
                "addr": addr.raft_addr,
                "suffrage": if voters.contains(id) { "Voter" } else { "Nonvoter" },
            })
        })
        .collect();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let db_size = node.store().file_size();
    // hashicorp/raft's `last_contact`: "0" on the leader, "never" before any contact.
    let last_contact = match node.since_leader_contact() {
        Some(d) if d.is_zero() => "0".to_owned(),
        Some(d) => raftlite_store::go_duration::format_go_duration(d),
        None => "never".to_owned(),
    };
    let now = std::time::SystemTime::now();
    let uptime = state.started.elapsed();
    let body = json!({
        "os": os_status(),
        "runtime": runtime_status(),
        "http": {
            "bind_addr": state.http.bind_addr,
            "auth": if state.auth.is_some() { "enabled" } else { "disabled" },
            // rqlite writes this flag as a string.
            "tls": { "enabled": state.http.tls.to_string() },
        },
        "node": {
            "start_time": rfc3339(now.checked_sub(uptime).unwrap_or(now)),
            "current_time": rfc3339(now),
            "uptime": raftlite_store::go_duration::format_go_duration(uptime),
            "id": node.id().to_string(),
            "uptime_secs": uptime.as_secs(),
            "api_addr": node.addr().api_addr,
        },
        "build": {
            "version": env!("CARGO_PKG_VERSION"),
            "compiler_toolchain": "rustc",
            "compiler_command": env!("RAFTLITE_RUSTC_VERSION"),
        },
        "store": {
            "open": true,
            "node_id": node.id().to_string(),
            "addr": node.addr().raft_addr,
            "leader": {
                "node_id": leader.as_ref().map(|(id, _)| id.to_string()).unwrap_or_default(),
                "addr": leader.as_ref().map(|(_, a)| a.raft_addr.clone()).unwrap_or_default(),
                "api_addr": leader.as_ref().map(|(_, a)| a.api_addr.clone()).unwrap_or_default(),
            },
            "ready": is_ready(node),
            "nodes": members,
            "fsm_index": applied,
            "db_applied_index": applied,
            "dir": state.data_dir.display().to_string(),
            "db_size": db_size,
            "sqlite3": {
                "path": node.store().path().display().to_string(),
                "db_size": db_size,
                "version": raftlite_store::sqlite_version(),
            },
            "timeline": timeline,
            "timeline_history": history,
            // The restore this node runs as leader, and the chunks of an unfinished restore it
            // holds: a client whose answer was lost waits while either moves.
            "restore": {
                "in_progress": node.restore_progress(),
                "chunks_held": chunks_held,
            },
            "raft": {
                "state": state_name(m.state),
                "term": m.current_term,
                "applied_index": applied,
                // openraft does not publish the commit index; what is applied is committed.
                "commit_index": applied,
                "last_log_index": m.last_log_index.unwrap_or(0),
                "snapshot_index": m.snapshot.map(|l| l.index).unwrap_or(0),
                "last_snapshot_index": m.snapshot.map(|l| l.index).unwrap_or(0),
                "purged_index": m.purged.map(|l| l.index).unwrap_or(0),
                "num_peers": voters.iter().filter(|v| **v != node.id()).count(),
                "last_contact": last_contact,
                "voter": voters.contains(&node.id()),
                // Node ids are strings everywhere in /status, as in rqlite.
                "voters": voters.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
            },
        },
        "backup": crate::backups::status_json(state.backups.as_deref()),
    });
    let body = match params.get("key") {
        Some(path) => sub_json(&body, path),
        None => body,
    };
    json_response(StatusCode::OK, &body, flag(&params, "pretty"))
}

/// rqlite's `getSubJSON` (`http/service.go`): follows the dotted `key`; a missing key gives
/// `{}`, and a value that is not an object ends the walk there.
fn sub_json(body: &Json, key: &str) -> Json {
    if key.is_empty() {
        return body.clone();
    }
    let mut at = body;
    for k in key.split('.') {
        match at {
            Json::Object(map) => match map.get(k) {
                Some(v) => at = v,
                None => return json!({}),
            },
            other => return other.clone(),
        }
    }
    at.clone()
}

/// What a node looks like from here: rqlite's `Node` (`http/nodes.go`), with its JSON field
/// order and `omitempty` rules (but `time`, see there). rqlite asks each node for its metadata; this node opens a TCP
/// connection to its Raft address, so a peer's `version` is `"unknown"` when it answers
/// (rqlite's word for a node that gives none) and `""` when it does not, as in rqlite.
#[derive(serde::Serialize, Clone, Debug)]
struct NodeJson {
    id: String,
    api_addr: String,
    addr: String,
    version: String,
    voter: bool,
    reachable: bool,
    leader: bool,
    /// Always present (rqlite omits a zero): rqlite-rs 0.6 requires it in every entry.
    time: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    time_s: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

/// A struct as JSON in its field order (Go's `encoding/json` order for structs, sorted keys for
/// maps); `?pretty` indents by four spaces as rqlite does.
fn struct_response<T: serde::Serialize>(value: &T, pretty: bool) -> Response {
    let mut out = Vec::new();
    let written = if pretty {
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        value.serialize(&mut ser)
    } else {
        serde_json::to_writer(&mut out, value)
    };
    if let Err(e) = written {
        return ApiError::Internal(format!("encoding the answer: {e}")).into_response();
    }
    let mut response = (StatusCode::OK, out).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Contacts `addr` now (itself needs no contact) and describes it as a [`NodeJson`].
async fn node_entry(
    state: &ApiState,
    id: NodeId,
    addr: &NodeAddr,
    voter: bool,
    leader: Option<NodeId>,
    probe_timeout: Duration,
) -> NodeJson {
    let started = Instant::now();
    let (reachable, error, version) = if id == state.node.id() {
        (true, String::new(), env!("CARGO_PKG_VERSION"))
    } else {
        match tokio::time::timeout(
            probe_timeout,
            tokio::net::TcpStream::connect(&addr.raft_addr),
        )
        .await
        {
            Ok(Ok(_)) => (true, String::new(), "unknown"),
            Ok(Err(e)) => (false, e.to_string(), ""),
            Err(_) => (false, format!("no answer within {probe_timeout:?}"), ""),
        }
    };
    let elapsed = started.elapsed();
    NodeJson {
        id: id.to_string(),
        api_addr: api_base(addr),
        addr: addr.raft_addr.clone(),
        version: version.to_owned(),
        voter,
        reachable,
        // rqlite sets these only for a node that answered.
        leader: reachable && Some(id) == leader,
        time: if reachable {
            elapsed.as_secs_f64()
        } else {
            0.0
        },
        time_s: if reachable {
            raftlite_store::go_duration::format_go_duration(elapsed)
        } else {
            String::new()
        },
        error,
    }
}

/// `GET /nodes` (rqlite's `handleNodes`): the voters, or every member with `?nonvoters`, each
/// contacted now (concurrently), sorted by id as strings; `?ver=2` gives `{"nodes": [...]}`,
/// otherwise an object keyed by node id.
async fn nodes(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    let m = state.node.metrics();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let leader = m.current_leader;
    let probe_timeout = match timeout_of(&params) {
        Ok(t) => t.min(Duration::from_secs(5)),
        Err(e) => return e.into_response(),
    };
    let with_nonvoters = flag(&params, "nonvoters");
    let mut members: Vec<(NodeId, NodeAddr)> = membership
        .nodes()
        .filter(|(id, _)| with_nonvoters || voters.contains(id))
        .map(|(id, addr)| (*id, addr.clone()))
        .collect();
    members.sort_by_key(|(id, _)| id.to_string());
    let entries: Vec<NodeJson> = futures::future::join_all(members.iter().map(|(id, addr)| {
        node_entry(
            &state,
            *id,
            addr,
            voters.contains(id),
            leader,
            probe_timeout,
        )
    }))
    .await;
    let pretty = flag(&params, "pretty");
    if params.get("ver").map(String::as_str) == Some("2") {
        #[derive(serde::Serialize)]
        struct Nodes {
            nodes: Vec<NodeJson>,
        }
        return struct_response(&Nodes { nodes: entries }, pretty);
    }
    let legacy: std::collections::BTreeMap<String, NodeJson> =
        entries.into_iter().map(|e| (e.id.clone(), e)).collect();
    struct_response(&legacy, pretty)
}

async fn readyz(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    if flag(&params, "sync") && !flag(&params, "noleader") {
        let timeout = match timeout_of(&params) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        if !caught_up(&state.node, timeout).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "[+]node ok\n[-]sync not ok: the node has not applied its log within the timeout\n",
            )
                .into_response();
        }
    }
    let has_leader = is_ready(&state.node);
    let (status, body) = if flag(&params, "noleader") || has_leader {
        (
            StatusCode::OK,
            if has_leader {
                "[+]node ok\n[+]leader ok\n[+]store ok\n"
            } else {
                "[+]node ok\n"
            },
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "[+]node ok\n[-]leader not ok: no leader is known yet\n",
        )
    };
    (status, body).into_response()
}

/// `GET /leader` (rqlite's `handleLeader`): the leader as one `/nodes` entry (see
/// [`node_entry`]), or 503 when none is known.
async fn leader(State(state): State<Arc<ApiState>>, Query(params): Params) -> Response {
    let probe_timeout = match timeout_of(&params) {
        Ok(t) => t.min(Duration::from_secs(5)),
        Err(e) => return e.into_response(),
    };
    match state.node.leader() {
        Some((id, addr)) => {
            let voter = state
                .node
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id);
            let entry = node_entry(&state, id, &addr, voter, Some(id), probe_timeout).await;
            struct_response(&entry, flag(&params, "pretty"))
        }
        None => ApiError::NoLeader.into_response(),
    }
}

#[derive(Deserialize)]
struct RemoveBody {
    id: Json,
}

fn node_id_of(v: &Json) -> Option<NodeId> {
    match v {
        Json::Number(n) => n.as_u64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

async fn remove(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        let parsed: RemoveBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"id\": <node id>}}: {e}")))?;
        let id = node_id_of(&parsed.id)
            .ok_or_else(|| ApiError::BadRequest("node id must be a number".into()))?;
        let timeout = timeout_of(&params)?;
        let removed = tokio::time::timeout(timeout, state.node.remove_node(id))
            .await
            .unwrap_or_else(|_| {
                Err(WriteError::Unavailable(format!(
                    "node {id} was not removed within the request's timeout ({timeout:?}): the \
                     cluster may have no quorum; retry, it may already be under way"
                )))
            });
        match removed {
            Ok(()) => Ok(StatusCode::OK.into_response()),
            Err(WriteError::Unavailable(m)) if m.contains("not a member") => {
                Err(ApiError::NotFound(m))
            }
            Err(err) => {
                let req = LeaderOnly {
                    method: Method::DELETE,
                    uri: &uri,
                    headers: &headers,
                    body,
                    redirect: flag(&params, "redirect"),
                };
                Ok(to_leader(&state, req, err).await)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Body of `POST /join`, sent by a starting node to any member.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct JoinRequest {
    pub id: Json,
    /// Raft address (rqlite calls it `addr`).
    #[serde(alias = "raft_addr")]
    pub addr: String,
    pub api_addr: String,
}

/// `POST /join`. Only the leader answers it: a 200 means the leader's committed membership
/// holds the joiner as a voter at the given address. Any other member forwards it (its own view
/// of the membership may be stale) or, without a known leader, answers 503 so the joiner retries.
async fn join(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        let parsed: JoinRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "expected {{\"id\": N, \"addr\": \"raft host:port\", \"api_addr\": \"host:port\"}}: {e}"
            ))
        })?;
        let id = node_id_of(&parsed.id)
            .ok_or_else(|| ApiError::BadRequest("node id must be a number".into()))?;
        let addr = NodeAddr {
            raft_addr: parsed.addr,
            api_addr: parsed.api_addr,
        };
        let timeout = timeout_of(&params)?;
        let joined = tokio::time::timeout(timeout, state.node.add_node(id, addr))
            .await
            .unwrap_or_else(|_| {
                Err(WriteError::Unavailable(format!(
                    "node {id} was not added within the request's timeout ({timeout:?}); the \
                     joining node retries"
                )))
            });
        match joined {
            Ok(()) => Ok(StatusCode::OK.into_response()),
            Err(err) => {
                let req = LeaderOnly {
                    method: Method::POST,
                    uri: &uri,
                    headers: &headers,
                    body,
                    redirect: false,
                };
                Ok(to_leader(&state, req, err).await)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// rqlite's queued writes: the leader answers at once with a sequence number and applies the
/// request in the background (through the same group commit as every write); `?wait` answers
/// only once it is applied.
async fn queue_write(
    state: &ApiState,
    request: WriteRequest,
    params: &HashMap<String, String>,
    opts: &rqlite::ResponseOptions,
    timeout: Duration,
) -> Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SEQUENCE: AtomicU64 = AtomicU64::new(0);
    // Like rqlite: nanoseconds since the epoch, strictly increasing.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let sequence = LAST_SEQUENCE
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .map(|last| now.max(last + 1))
        .unwrap_or(now);
    // Queued now, so a refusal (too large, queue full) is the client's answer, not a log line.
    let outcome = match state.node.submit(request) {
        Ok(outcome) => outcome,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let applied = tokio::spawn(async move {
        match outcome.await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                metrics::counter!("raftlite_queued_write_failures_total").increment(1);
                tracing::warn!(sequence, error = %e, "queued write failed");
                Err(e)
            }
        }
    });
    if flag(params, "wait") {
        match tokio::time::timeout(timeout, applied).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => return ApiError::from(e).into_response(),
            Ok(Err(e)) => return ApiError::Internal(e.to_string()).into_response(),
            Err(_) => {
                return ApiError::Unavailable(format!(
                    "queued write {sequence} was not applied within {timeout:?}"
                ))
                .into_response()
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"results": [], "sequence_number": sequence}),
        opts.pretty,
    )
}

/// Whether this node applies everything in its log within `timeout` (`/readyz?sync`).
async fn caught_up(node: &RaftNode, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let target = node.metrics().last_log_index.unwrap_or(0);
    loop {
        let applied = node.metrics().last_applied.map(|l| l.index).unwrap_or(0);
        if applied >= target {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Deserialize, Default)]
struct StepDownBody {
    id: Option<Json>,
}

/// `POST /leader`: the leader hands leadership to another voter (the given `{"id": N}`, or the
/// most up-to-date one) and answers with the new leader. `?elect` is the internal call that
/// asks the chosen node to campaign.
async fn step_down(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let body = body_bytes(body)?;
        if flag(&params, "elect") {
            let old_leader = params
                .get("from")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            state.node.campaign(old_leader);
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        if !state.node.is_leader() {
            let req = LeaderOnly {
                method: Method::POST,
                uri: &uri,
                headers: &headers,
                body,
                redirect: flag(&params, "redirect"),
            };
            let err = WriteError::NotLeader {
                leader: state.node.leader(),
            };
            return Ok(to_leader(&state, req, err).await);
        }
        let parsed: StepDownBody = if body.iter().all(|b| b.is_ascii_whitespace()) {
            StepDownBody::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                ApiError::BadRequest(format!("expected an empty body or {{\"id\": N}}: {e}"))
            })?
        };
        let requested = match &parsed.id {
            None => None,
            Some(v) => Some(
                node_id_of(v)
                    .ok_or_else(|| ApiError::BadRequest("node id must be a number".into()))?,
            ),
        };
        let timeout = timeout_of(&params)?;
        let (target_id, target) = state.node.transfer_target(requested)?;
        let me = state.node.id();
        let deadline = tokio::time::Instant::now() + timeout;
        // Resumes leading however this ends, the request's deadline cutting it short included.
        let paused = PausedLeadership::new(&state.node);
        let mut ask = state
            .client
            .post(format!("{}/leader?elect&from={me}", api_base(&target)))
            .timeout(timeout.max(Duration::from_millis(1)));
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            ask = ask.header(header::AUTHORIZATION, auth);
        }
        let asked = ask.send().await;
        let new_leader = loop {
            match state.node.leader() {
                Some((id, addr)) if id != me => break Some((id, addr)),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        drop(paused);
        match (new_leader, asked) {
            (Some((id, addr)), _) => Ok(json_response(
                StatusCode::OK,
                &json!({"leader": {"id": id.to_string(), "addr": addr.raft_addr, "api_addr": api_base(&addr)}}),
                flag(&params, "pretty"),
            )),
            (None, Err(e)) => Err(ApiError::Unavailable(format!(
                "could not reach node {target_id} to hand over leadership: {e}; this node stays leader"
            ))),
            (None, Ok(_)) => Err(ApiError::Unavailable(format!(
                "no new leader within {timeout:?}; this node resumes leading"
            ))),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Leadership paused for a hand-over, resumed when dropped.
struct PausedLeadership<'a>(&'a RaftNode);

impl<'a> PausedLeadership<'a> {
    fn new(node: &'a RaftNode) -> PausedLeadership<'a> {
        node.pause_leadership(true);
        PausedLeadership(node)
    }
}

impl Drop for PausedLeadership<'_> {
    fn drop(&mut self) {
        self.0.pause_leadership(false);
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let m = state.node.metrics();
    metrics::gauge!("raftlite_raft_term").set(m.current_term as f64);
    metrics::gauge!("raftlite_raft_applied_index")
        .set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
    metrics::gauge!("raftlite_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!("raftlite_raft_is_leader").set(if state.node.is_leader() { 1.0 } else { 0.0 });
    metrics::gauge!("raftlite_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
    metrics::gauge!("raftlite_db_size_bytes").set(state.node.store().file_size() as f64);
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError::NotFound("metrics are not enabled".into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every duration parameter takes Go's syntax (the parser's own tests are in
    /// `raftlite_store::go_duration`); a malformed or negative one is a 400 naming the parameter.
    #[test]
    fn duration_parameters_take_go_syntax() {
        for key in ["timeout", "db_timeout", "freshness", "linearizable_timeout"] {
            for (text, want) in [
                ("1m30s", Duration::from_secs(90)),
                ("1h2m3.5s", Duration::from_millis(3_723_500)),
                ("250us", Duration::from_micros(250)),
                ("250\u{b5}s", Duration::from_micros(250)),
                (".5s", Duration::from_millis(500)),
                ("0", Duration::ZERO),
            ] {
                let got = duration_param(&params(&[(key, text)]), key);
                assert_eq!(got.ok().flatten(), Some(want), "{key}={text}");
            }
            for text in ["10", "-1s", "soon", "1d", "", " 1s"] {
                match duration_param(&params(&[(key, text)]), key) {
                    Err(ApiError::BadRequest(m)) => {
                        assert!(
                            m.starts_with(&format!("{key} is not a valid duration")),
                            "{m}"
                        )
                    }
                    other => panic!("{key}={text:?}: {:?}", other.map_err(|e| e.to_string())),
                }
            }
        }
        assert_eq!(
            timeout_of(&params(&[])).ok(),
            Some(crate::limits::DEFAULT_TIMEOUT)
        );
    }
}
