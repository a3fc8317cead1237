//! The node's side of a restore: `POST /db/load`, what its answer means, and, when the answer
//! is lost or the node says the outcome is unknown, every member's `/status` polled until it is
//! known.
//!
//! The client picks the new timeline's id (`?timeline_id=`). The members are asked for with
//! `/nodes` before the upload; the restore took effect (all-new) exactly when a node's current
//! timeline is that id; the polling goes on while the leader reports the restore in progress or
//! chunks keep arriving, and ends [`POLL_FOR`] after that stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftlite_backup::BackupError;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::node_client::{excerpt, innermost, NodeClient, NodeError};
use crate::source::{Prepared, Upload};
use crate::upload::{backup_body, file_body, UploadProgress, EXPECT_SHA256_HEADER};

/// The node answers only once the whole cluster switched to the new file (after checking and
/// replicating all of it): one read may wait that long.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3 * 3600);
/// How long `/status` is polled, when the outcome is unknown, after the restore stops moving.
pub const POLL_FOR: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Why a streamed backup failed, when it failed for its own reasons (a check, the download);
/// `None` when it succeeded or only stopped because the upload did. Waits a little for it.
async fn backup_failure(
    feeder: &mut tokio::task::JoinHandle<Result<(), BackupError>>,
) -> Option<String> {
    let done = tokio::time::timeout(Duration::from_secs(10), &mut *feeder).await;
    match done {
        Ok(Ok(Err(BackupError::Local { .. }))) | Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(e.to_string()),
        Ok(Err(e)) => Some(format!("the download task failed: {e}")),
        Err(_) => None,
    }
}

/// Why the restore certainly did not take effect (all-old), or the answer makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid --node URL {base}: {reason}")]
    InvalidUrl { base: String, reason: String },
    #[error(
        "the restore did not take effect (all-old): {why}; the upload was cut off before its \
         end, so the node restored nothing"
    )]
    BackupFailed { why: String },
    /// Nothing reached the node.
    #[error("{0}; nothing was sent")]
    NotSent(NodeError),
    #[error(
        "POST /db/load on {base} answered 200 without a restore report ({excerpt}); is it a \
         raftlite node of this version? Check /status: the restore took effect if the current \
         timeline is {timeline_id}"
    )]
    NoReport {
        base: String,
        excerpt: String,
        timeline_id: String,
    },
    #[error(
        "the restore did not take effect (all-old): POST /db/load: HTTP {status}: {message}{hint}"
    )]
    Refused {
        status: StatusCode,
        message: String,
        hint: &'static str,
    },
}

/// What the node's answer says.
#[derive(Debug)]
pub enum Answer {
    /// The node's 200 answer.
    Restored(Value),
    /// Whether the restore took effect cannot be told from the answer (why).
    Unknown(String),
}

/// Streams the file to `/db/load` and interprets the answer. `Err` when the restore certainly
/// did not take effect.
pub async fn load(
    node: &NodeClient,
    prepared: &Prepared,
    timeline_id: &str,
    reason: &str,
    progress: Arc<dyn UploadProgress>,
) -> Result<Answer, LoadError> {
    let url = Url::parse_with_params(
        &format!("{}/db/load", node.base),
        [("timeline_id", timeline_id), ("reason", reason)],
    )
    .map_err(|e| LoadError::InvalidUrl {
        base: node.base.clone(),
        reason: e.to_string(),
    })?;
    let mut request = node
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
    let mut feeder = None;
    match &prepared.upload {
        Upload::File(path) => request = request.body(file_body(path.clone(), progress)),
        Upload::Backup(backup) => {
            let (body, task) = backup_body(backup.clone(), progress);
            if let Some(sha256) = &backup.plain_sha256 {
                request = request.header(EXPECT_SHA256_HEADER, sha256.as_str());
            }
            request = request.body(body);
            feeder = Some(task);
        }
    }
    let sent = node.authorized(request).send().await;
    // A backup that failed a check cut its upload off, so the node cannot have restored it.
    let failed_backup = match (&sent, feeder.as_mut()) {
        (Ok(resp), _) if resp.status() == StatusCode::OK => None,
        (_, Some(task)) => backup_failure(task).await,
        (_, None) => None,
    };
    if let Some(why) = failed_backup {
        return Err(LoadError::BackupFailed { why });
    }
    let resp = match sent {
        Ok(resp) => resp,
        // Nothing reached the node.
        Err(e) if e.is_connect() => return Err(LoadError::NotSent(node.transport_error(&e))),
        Err(e) => {
            return Ok(Answer::Unknown(format!(
                "the connection to {} broke: {}",
                node.base,
                innermost(&e)
            )));
        }
    };
    let status = resp.status();
    let text = resp.text().await;
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            return Ok(Answer::Unknown(format!(
                "the answer of {} broke off: {}",
                node.base,
                innermost(&e)
            )))
        }
    };
    let body: Option<Value> = serde_json::from_str(&text).ok();
    let message = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| excerpt(&text));
    if status == StatusCode::OK {
        return match body {
            Some(body) if body.get("restore").is_some() => Ok(Answer::Restored(body)),
            _ => Err(LoadError::NoReport {
                base: node.base.clone(),
                excerpt: excerpt(&text),
                timeline_id: timeline_id.to_string(),
            }),
        };
    }
    if status.is_server_error() && !is_definitely_all_old(&message, timeline_id) {
        return Ok(Answer::Unknown(format!("HTTP {status}: {message}")));
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (give credentials with -u USER:PASSWORD)",
        StatusCode::FORBIDDEN => " (the user needs the `load` permission)",
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => " (is this a raftlite node?)",
        _ => "",
    };
    Err(LoadError::Refused {
        status,
        message,
        hint,
    })
}

/// Server errors that say the cluster kept its old data; any other one may hide a restore that
/// took effect (a broken forward, a leader change after the commit was proposed).
fn is_definitely_all_old(message: &str, timeline_id: &str) -> bool {
    // An unknown outcome names the timeline to look for (and mentions both outcomes).
    if message.contains(timeline_id) || message.contains("unknown") {
        return false;
    }
    message.contains("(all-old)")
        || message.contains("nothing was changed")
        || message.contains("no leader is known")
}

/// What `/status` told after a lost answer.
#[derive(Debug, PartialEq)]
pub enum Polled {
    /// `/status` shows the new timeline (its record).
    TookEffect(Value),
    /// `/status` answered, with this other timeline id, and the restore stopped moving.
    Other(String),
    /// `/status` never answered.
    Unreachable(String),
}

/// The API bases of the other members, non-voters too, from `/nodes` (none when it does not
/// answer).
pub async fn peer_bases(node: &NodeClient) -> Vec<String> {
    let request = node.authorized(
        node.client
            .get(format!("{}/nodes?ver=2&nonvoters", node.base))
            .timeout(Duration::from_secs(10)),
    );
    let Ok(resp) = request.send().await else {
        return Vec::new();
    };
    let Ok(nodes) = resp.json::<Value>().await else {
        return Vec::new();
    };
    let own = node.base.trim_end_matches('/');
    nodes["nodes"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|n| n["api_addr"].as_str())
                .map(|a| a.trim_end_matches('/').to_string())
                .filter(|a| a != own)
                .collect()
        })
        .unwrap_or_default()
}

/// Decides the outcome of a restore whose answer was lost from what the nodes' `/status` say:
/// it took effect once any node is on its timeline; it is still under way while the leader
/// reports it in progress or any node's held chunks grow; it did not take effect once it has
/// stopped moving for [`POLL_FOR`] with the nodes on another timeline.
struct OutcomeWatch {
    timeline_id: String,
    deadline: Instant,
    /// Bytes of chunks held, per node, at the last answer.
    held: std::collections::HashMap<String, u64>,
    /// A known timeline is the best evidence; an error only replaces another error.
    last: Option<Result<String, String>>,
}

impl OutcomeWatch {
    fn new(timeline_id: &str, now: Instant) -> OutcomeWatch {
        OutcomeWatch {
            timeline_id: timeline_id.to_string(),
            deadline: now + POLL_FOR,
            held: Default::default(),
            last: None,
        }
    }

    /// One node's `/status` (or why it did not answer); `Some` once the outcome is known.
    fn observe(
        &mut self,
        base: &str,
        answer: Result<Value, String>,
        now: Instant,
    ) -> Option<Polled> {
        let status = match answer {
            Ok(status) => status,
            Err(e) => {
                if !matches!(self.last, Some(Ok(_))) {
                    self.last = Some(Err(e));
                }
                return None;
            }
        };
        let timeline = &status["store"]["timeline"];
        match timeline["id"].as_str() {
            Some(id) if id == self.timeline_id => {
                return Some(Polled::TookEffect(timeline.clone()))
            }
            Some(id) => self.last = Some(Ok(id.to_string())),
            None => self.last = Some(Ok("(none)".to_string())),
        }
        let restore = &status["store"]["restore"];
        let ours_running =
            restore["in_progress"]["timeline_id"].as_str() == Some(self.timeline_id.as_str());
        let held = restore["chunks_held"]["bytes"].as_u64().unwrap_or(0);
        let grew = self
            .held
            .insert(base.to_string(), held)
            .is_some_and(|before| held > before);
        if ours_running || grew {
            self.deadline = now + POLL_FOR;
        }
        None
    }

    /// The verdict once nothing moved for [`POLL_FOR`].
    fn expired(&self, now: Instant) -> Option<Polled> {
        if now < self.deadline {
            return None;
        }
        Some(match &self.last {
            Some(Ok(id)) => Polled::Other(id.clone()),
            Some(Err(e)) => Polled::Unreachable(e.clone()),
            None => Polled::Unreachable("no answer".to_string()),
        })
    }
}

/// Asks every member's `/status` (the node first) every [`POLL_EVERY`] until the outcome is
/// known ([`OutcomeWatch`]).
pub async fn poll_timeline(node: &NodeClient, peers: &[String], timeline_id: &str) -> Polled {
    let started = Instant::now();
    let mut watch = OutcomeWatch::new(timeline_id, started);
    loop {
        for base in std::iter::once(&node.base).chain(peers) {
            let request = node.authorized(
                node.client
                    .get(format!("{base}/status"))
                    .timeout(Duration::from_secs(5)),
            );
            let answer = match request.send().await {
                Ok(resp) if resp.status() == StatusCode::OK => resp
                    .json::<Value>()
                    .await
                    .map_err(|e| format!("unreadable /status: {}", innermost(&e))),
                Ok(resp) => Err(format!("/status answered HTTP {}", resp.status())),
                Err(e) => Err(innermost(&e)),
            };
            if let Some(outcome) = watch.observe(base, answer, Instant::now()) {
                return outcome;
            }
        }
        let now = Instant::now();
        if let Some(outcome) = watch.expired(now) {
            return outcome;
        }
        if now.duration_since(started) >= ANSWER_TIMEOUT {
            return Polled::Unreachable(format!(
                "still under way after {} s",
                ANSWER_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(timeline: &str, in_progress: Option<&str>, held: Option<u64>) -> Value {
        json!({ "store": {
            "timeline": { "id": timeline, "counter": 1 },
            "restore": {
                "in_progress": in_progress.map(|t| json!({ "timeline_id": t, "phase": "sending" })),
                "chunks_held": held.map(|b| json!({ "restore_id": "r", "chunks": 1, "bytes": b })),
            },
        }})
    }

    #[test]
    fn a_lost_answer_waits_while_the_restore_moves_and_reports_what_it_became() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        let mut watch = OutcomeWatch::new("new", t0);
        // The leader still checks or sends our restore: no verdict, however long it takes.
        for s in [0, 20, 40, 60] {
            assert_eq!(
                watch.observe("a", Ok(status("old", Some("new"), None)), later(s)),
                None
            );
            assert_eq!(watch.expired(later(s + 1)), None);
        }
        // The leader is gone; a follower's held chunks keep growing.
        assert_eq!(watch.observe("a", Err("refused".into()), later(70)), None);
        assert_eq!(
            watch.observe("b", Ok(status("old", None, Some(10))), later(70)),
            None
        );
        assert_eq!(
            watch.observe("b", Ok(status("old", None, Some(20))), later(85)),
            None
        );
        assert_eq!(watch.expired(later(100)), None);
        // Then nothing moves for POLL_FOR: all-old, with the timeline seen.
        assert_eq!(
            watch.observe("b", Ok(status("old", None, Some(20))), later(110)),
            None
        );
        assert_eq!(watch.expired(later(116)), Some(Polled::Other("old".into())));
        // A node on the new timeline settles it at once.
        let mut watch = OutcomeWatch::new("new", t0);
        assert_eq!(watch.observe("a", Err("refused".into()), t0), None);
        assert!(matches!(
            watch.observe("b", Ok(status("new", None, None)), t0),
            Some(Polled::TookEffect(_))
        ));
        // Another restore in progress does not keep ours alive; no answer at all is unknown.
        let mut watch = OutcomeWatch::new("new", t0);
        assert_eq!(
            watch.observe("a", Ok(status("old", Some("other"), None)), t0),
            None
        );
        assert_eq!(watch.expired(later(31)), Some(Polled::Other("old".into())));
        let mut watch = OutcomeWatch::new("new", t0);
        assert_eq!(watch.observe("a", Err("refused".into()), t0), None);
        assert_eq!(
            watch.expired(later(31)),
            Some(Polled::Unreachable("refused".into()))
        );
    }

    #[test]
    fn server_errors_that_leave_the_old_data() {
        use raftlite_consensus::restore::RestoreError;
        let id = "0123abcd";
        let failed = RestoreError::Failed { reason: "x".into() }.to_string();
        assert!(is_definitely_all_old(&failed, id), "{failed}");
        let unknown = RestoreError::Unknown {
            reason: "y".into(),
            timeline_id: id.into(),
        }
        .to_string();
        assert!(!is_definitely_all_old(&unknown, id), "{unknown}");
        assert!(!is_definitely_all_old(
            "cannot forward to leader 2 at 127.0.0.1:1: error; retry shortly",
            id
        ));
    }
}
