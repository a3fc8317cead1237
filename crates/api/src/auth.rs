//! HTTP Basic authentication with rqlite's permissions file.
//!
//! The file given with `--auth` is a JSON array of users:
//!
//! ```json
//! [{"username": "alice", "password": "secret", "perms": ["all"]},
//!  {"username": "*", "perms": ["ready", "status"]}]
//! ```
//!
//! Passwords are stored as written: plaintext (compared in constant time) or a bcrypt hash
//! (`$2a$`, `$2b$`, `$2y$`). The user `*` grants its permissions to every request, with or
//! without credentials. [`required_perms`] maps each endpoint to the permissions it needs and
//! [`protect`] enforces the map as an axum middleware.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use serde::Deserialize;

use crate::error::ApiError;

/// The username whose permissions every request gets.
pub const ANY_USER: &str = "*";
/// Value of `WWW-Authenticate` on every 401.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"raftlite\"";

/// A permission of rqlite's permissions file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Perm {
    All,
    Execute,
    Query,
    Load,
    Backup,
    Status,
    Ready,
    Join,
    JoinReadOnly,
    Remove,
    LeaderOps,
}

impl Perm {
    pub const EVERY: [Perm; 11] = [
        Perm::All,
        Perm::Execute,
        Perm::Query,
        Perm::Load,
        Perm::Backup,
        Perm::Status,
        Perm::Ready,
        Perm::Join,
        Perm::JoinReadOnly,
        Perm::Remove,
        Perm::LeaderOps,
    ];

    /// The name used in the permissions file.
    pub fn name(self) -> &'static str {
        match self {
            Perm::All => "all",
            Perm::Execute => "execute",
            Perm::Query => "query",
            Perm::Load => "load",
            Perm::Backup => "backup",
            Perm::Status => "status",
            Perm::Ready => "ready",
            Perm::Join => "join",
            Perm::JoinReadOnly => "join-read-only",
            Perm::Remove => "remove",
            Perm::LeaderOps => "leader-ops",
        }
    }

    /// Parses a permission name (case-insensitive, surrounding spaces ignored).
    pub fn parse(name: &str) -> Option<Perm> {
        let name = name.trim();
        Perm::EVERY
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn known_perms() -> String {
    Perm::EVERY.map(Perm::name).join(", ")
}

/// Why the `--auth` file cannot be used; the server refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read the --auth file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the --auth file {path} is not a valid permissions file ({error}); expected a JSON \
         array such as [{{\"username\": \"alice\", \"password\": \"secret\", \"perms\": [\"all\"]}}]"
    )]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error(
        "the --auth file {path}: entry {index} has an empty username; give every entry a username"
    )]
    EmptyUsername { path: PathBuf, index: usize },
    #[error(
        "the --auth file {path}: user {user:?} is listed more than once; keep one entry per user"
    )]
    DuplicateUser { path: PathBuf, user: String },
    #[error(
        "the --auth file {path}: user {user:?} has no password; add a \"password\" (plaintext or \
         a bcrypt hash)"
    )]
    MissingPassword { path: PathBuf, user: String },
    #[error(
        "the --auth file {path}: user {user:?} has unknown permission {perm:?}; known \
         permissions are: {known}"
    )]
    UnknownPerm {
        path: PathBuf,
        user: String,
        perm: String,
        known: String,
    },
    #[error(
        "the --auth file {path}: the password of user {user:?} looks like a bcrypt hash but is \
         not a valid one ({reason}); write a complete hash such as the output of \
         `htpasswd -nbB user password`, or a plaintext password that does not start with $2a$, \
         $2b$ or $2y$"
    )]
    BadHash {
        path: PathBuf,
        user: String,
        reason: String,
    },
}

/// Why `--join-as USER` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinAsError {
    #[error(
        "--join-as {user:?}: no such user in the --auth file {path}; name a user listed there"
    )]
    UnknownUser { user: String, path: PathBuf },
    #[error(
        "--join-as {user:?}: the password of this user in the --auth file {path} is a bcrypt \
         hash, so this node cannot send it; use a user whose password is stored in plaintext"
    )]
    HashedPassword { user: String, path: PathBuf },
    #[error(
        "--join-as {user:?}: \"*\" is the anonymous entry, not a user; name a user of the --auth \
         file {path}"
    )]
    Anonymous { user: String, path: PathBuf },
}

/// Why a request is refused (answered with 401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "authentication required: this request needs the {perms} permission; send HTTP Basic \
         credentials (Authorization: Basic ...) of a user of the server's --auth file"
    )]
    MissingCredentials { perms: String },
    #[error(
        "malformed Authorization header ({0}); send `Authorization: Basic <base64 of \
         user:password>`"
    )]
    Malformed(&'static str),
    #[error("invalid username or password")]
    BadCredentials,
    #[error(
        "user {user:?} does not have the {perm} permission this request needs; grant \"{perm}\" \
         (or \"all\") to the user in the server's --auth file"
    )]
    Forbidden { user: String, perm: Perm },
}

/// One entry of the permissions file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    perms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Secret {
    Plain(String),
    Bcrypt(String),
}

impl Secret {
    fn matches(&self, password: &str) -> bool {
        match self {
            Secret::Plain(p) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            // The hash was validated at load; a verify error still only means "no".
            Secret::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        }
    }
}

fn is_bcrypt(password: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| password.starts_with(prefix))
}

#[derive(Debug)]
struct User {
    secret: Secret,
    perms: HashSet<Perm>,
}

fn has(perms: &HashSet<Perm>, perm: Perm) -> bool {
    perms.contains(&perm) || perms.contains(&Perm::All)
}

/// The loaded permissions file.
#[derive(Debug)]
pub struct AuthStore {
    path: PathBuf,
    users: HashMap<String, User>,
    /// Permissions of the `*` entry: granted to every request.
    anyone: HashSet<Perm>,
    any_hashed: bool,
}

impl AuthStore {
    /// Reads and validates the permissions file at `path`.
    pub fn load(path: &Path) -> Result<AuthStore, AuthFileError> {
        let text = std::fs::read(path).map_err(|error| AuthFileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        AuthStore::from_json(&text, path)
    }

    /// Parses permissions-file JSON; `path` only names the file in errors.
    pub fn from_json(text: &[u8], path: &Path) -> Result<AuthStore, AuthFileError> {
        let raw: Vec<RawEntry> =
            serde_json::from_slice(text).map_err(|error| AuthFileError::Parse {
                path: path.to_path_buf(),
                error,
            })?;
        let mut users = HashMap::new();
        let mut anyone: Option<HashSet<Perm>> = None;
        for (index, entry) in raw.into_iter().enumerate() {
            let user = entry.username;
            if user.is_empty() {
                return Err(AuthFileError::EmptyUsername {
                    path: path.to_path_buf(),
                    index,
                });
            }
            let mut perms = HashSet::new();
            for name in &entry.perms {
                let perm = Perm::parse(name).ok_or_else(|| AuthFileError::UnknownPerm {
                    path: path.to_path_buf(),
                    user: user.clone(),
                    perm: name.clone(),
                    known: known_perms(),
                })?;
                perms.insert(perm);
            }
            let duplicate = if user == ANY_USER {
                anyone.replace(perms).is_some()
            } else {
                let password = entry
                    .password
                    .ok_or_else(|| AuthFileError::MissingPassword {
                        path: path.to_path_buf(),
                        user: user.clone(),
                    })?;
                let secret = if is_bcrypt(&password) {
                    bcrypt::HashParts::from_str(&password).map_err(|e| AuthFileError::BadHash {
                        path: path.to_path_buf(),
                        user: user.clone(),
                        reason: e.to_string(),
                    })?;
                    Secret::Bcrypt(password)
                } else {
                    Secret::Plain(password)
                };
                users.insert(user.clone(), User { secret, perms }).is_some()
            };
            if duplicate {
                return Err(AuthFileError::DuplicateUser {
                    path: path.to_path_buf(),
                    user,
                });
            }
        }
        let any_hashed = users
            .values()
            .any(|u| matches!(u.secret, Secret::Bcrypt(_)));
        Ok(AuthStore {
            path: path.to_path_buf(),
            users,
            anyone: anyone.unwrap_or_default(),
            any_hashed,
        })
    }

    /// The file this store was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if the `*` entry grants `perm` to everyone.
    pub fn anyone_has(&self, perm: Perm) -> bool {
        has(&self.anyone, perm)
    }

    /// True if some password is a bcrypt hash (checking it takes milliseconds of CPU).
    pub fn has_hashed_passwords(&self) -> bool {
        self.any_hashed
    }

    /// True if `user` exists and holds `perm` (directly or through `all`).
    pub fn user_has(&self, user: &str, perm: Perm) -> bool {
        self.users.get(user).is_some_and(|u| has(&u.perms, perm))
    }

    /// Checks that the request with this `Authorization` header value holds every permission in
    /// `needed`. Permissions of `*` are granted whatever the header says.
    pub fn check(&self, authorization: Option<&str>, needed: &[Perm]) -> Result<(), AuthError> {
        let missing: Vec<Perm> = needed
            .iter()
            .copied()
            .filter(|p| !self.anyone_has(*p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let Some(authorization) = authorization else {
            return Err(AuthError::MissingCredentials {
                perms: missing
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(" and "),
            });
        };
        let (user, password) = parse_basic(authorization)?;
        let Some(entry) = self.users.get(&user) else {
            return Err(AuthError::BadCredentials);
        };
        if !entry.secret.matches(&password) {
            return Err(AuthError::BadCredentials);
        }
        match missing.into_iter().find(|p| !has(&entry.perms, *p)) {
            None => Ok(()),
            Some(perm) => Err(AuthError::Forbidden { user, perm }),
        }
    }

    /// `(user, password)` of a user whose password is stored in plaintext; `None` for an
    /// unknown user, `*`, or a user whose password is a bcrypt hash.
    pub fn credentials_of(&self, user: &str) -> Option<(String, String)> {
        match &self.users.get(user)?.secret {
            Secret::Plain(p) => Some((user.to_string(), p.clone())),
            Secret::Bcrypt(_) => None,
        }
    }

    /// Credentials for `--join-as USER`, or why that user cannot be used.
    pub fn join_credentials(&self, user: &str) -> Result<(String, String), JoinAsError> {
        if user == ANY_USER {
            return Err(JoinAsError::Anonymous {
                user: user.to_string(),
                path: self.path.clone(),
            });
        }
        match self.users.get(user).map(|u| &u.secret) {
            None => Err(JoinAsError::UnknownUser {
                user: user.to_string(),
                path: self.path.clone(),
            }),
            Some(Secret::Bcrypt(_)) => Err(JoinAsError::HashedPassword {
                user: user.to_string(),
                path: self.path.clone(),
            }),
            Some(Secret::Plain(p)) => Ok((user.to_string(), p.clone())),
        }
    }
}

/// Decodes `Basic base64(user:password)`.
fn parse_basic(authorization: &str) -> Result<(String, String), AuthError> {
    let value = authorization.trim();
    let (scheme, encoded) = value
        .split_once(' ')
        .ok_or(AuthError::Malformed("expected `Basic <credentials>`"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Malformed("only the Basic scheme is supported"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthError::Malformed("the credentials are not valid base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| AuthError::Malformed("the credentials are not UTF-8"))?;
    let (user, password) = decoded.split_once(':').ok_or(AuthError::Malformed(
        "the credentials have no `:` between user and password",
    ))?;
    Ok((user.to_string(), password.to_string()))
}

/// The `Authorization` header value for `user`/`password`.
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Compares two byte strings in time that depends only on their lengths, not their contents.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff: u8 = 0;
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff = std::hint::black_box(diff | (x ^ y));
    }
    diff == 0 && a.len() == b.len()
}

/// The permissions a request needs; empty means the path is open to everyone.
pub fn required_perms(method: &Method, path: &str) -> &'static [Perm] {
    match path {
        "/db/execute" => &[Perm::Execute],
        "/db/query" => &[Perm::Query],
        "/db/request" => &[Perm::Execute, Perm::Query],
        "/db/load" => &[Perm::Load],
        "/db/backup" => &[Perm::Backup],
        p if p.starts_with("/backups") => &[Perm::Backup],
        "/status" | "/nodes" | "/metrics" | "/debug/raft-stats" => &[Perm::Status],
        "/leader" if method == Method::GET || method == Method::HEAD => &[Perm::Status],
        "/leader" => &[Perm::LeaderOps],
        "/readyz" => &[Perm::Ready],
        "/join" => &[Perm::Join],
        "/remove" => &[Perm::Remove],
        _ => &[],
    }
}

/// Wraps every route of `router` with the permission check when `store` is set.
/// Call it on the finished router so routes merged in later are covered too.
pub fn protect(router: Router, store: Option<Arc<AuthStore>>) -> Router {
    match store {
        Some(store) => router.layer(axum::middleware::from_fn_with_state(store, require)),
        None => router,
    }
}

/// The 401 answer for `err`.
pub fn unauthorized(err: &AuthError) -> Response {
    let mut response = ApiError::Unauthorized(err.to_string()).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(WWW_AUTHENTICATE),
    );
    response
}

/// The middleware: refuses with 401 a request lacking a permission its endpoint needs.
pub async fn require(State(store): State<Arc<AuthStore>>, req: Request, next: Next) -> Response {
    let needed = required_perms(req.method(), req.uri().path());
    if needed.is_empty() {
        return next.run(req).await;
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let verdict = if store.has_hashed_passwords() && authorization.is_some() {
        // bcrypt takes milliseconds of CPU: keep it off the async workers.
        let store = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || store.check(authorization.as_deref(), needed))
            .await
        {
            Ok(v) => v,
            Err(e) => {
                return ApiError::Internal(format!("the credential check failed: {e}"))
                    .into_response()
            }
        }
    } else {
        store.check(authorization.as_deref(), needed)
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(err) => {
            tracing::debug!(
                method = %req.method(),
                path = req.uri().path(),
                error = %err,
                "request refused: 401"
            );
            unauthorized(&err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(json: &str) -> AuthStore {
        match AuthStore::from_json(json.as_bytes(), Path::new("perms.json")) {
            Ok(s) => s,
            Err(e) => panic!("load failed: {e}"),
        }
    }

    fn load_err(json: &str) -> AuthFileError {
        match AuthStore::from_json(json.as_bytes(), Path::new("perms.json")) {
            Ok(_) => panic!("expected {json} to be refused"),
            Err(e) => e,
        }
    }

    fn basic(user: &str, password: &str) -> String {
        basic_authorization(user, password)
    }

    const FILE: &str = r#"[
        {"username": "admin", "password": "adminpw", "perms": ["all"]},
        {"username": "reader", "password": "readpw", "perms": ["query", "status"]},
        {"username": "writer", "password": "writepw", "perms": ["Execute", " query "]},
        {"username": "*", "perms": ["ready"]}
    ]"#;

    #[test]
    fn parses_users_and_perms() {
        let s = store(FILE);
        assert!(s.user_has("admin", Perm::Backup), "all implies everything");
        assert!(s.user_has("reader", Perm::Query));
        assert!(!s.user_has("reader", Perm::Execute));
        assert!(
            s.user_has("writer", Perm::Execute),
            "names are case-insensitive"
        );
        assert!(s.user_has("writer", Perm::Query), "names are trimmed");
        assert!(s.anyone_has(Perm::Ready));
        assert!(!s.anyone_has(Perm::Join));
        assert!(!s.has_hashed_passwords());
        assert_eq!(s.path(), Path::new("perms.json"));
    }

    #[test]
    fn every_perm_name_round_trips() {
        for p in Perm::EVERY {
            assert_eq!(Perm::parse(p.name()), Some(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!(Perm::parse("JOIN-READ-ONLY"), Some(Perm::JoinReadOnly));
        assert_eq!(Perm::parse("leader_ops"), None);
    }

    #[test]
    fn check_grants_and_refuses() {
        let s = store(FILE);
        let admin = basic("admin", "adminpw");
        let reader = basic("reader", "readpw");
        assert_eq!(s.check(Some(&admin), &[Perm::Execute, Perm::Query]), Ok(()));
        assert_eq!(s.check(Some(&reader), &[Perm::Query]), Ok(()));
        assert_eq!(
            s.check(Some(&reader), &[Perm::Query, Perm::Execute]),
            Err(AuthError::Forbidden {
                user: "reader".into(),
                perm: Perm::Execute
            })
        );
        assert_eq!(
            s.check(Some(&basic("reader", "wrong")), &[Perm::Query]),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            s.check(Some(&basic("nobody", "readpw")), &[Perm::Query]),
            Err(AuthError::BadCredentials)
        );
        assert!(matches!(
            s.check(None, &[Perm::Query]),
            Err(AuthError::MissingCredentials { .. })
        ));
        assert_eq!(
            s.check(None, &[]),
            Ok(()),
            "nothing needed, nothing checked"
        );
    }

    #[test]
    fn forbidden_message_names_the_permission() {
        let s = store(FILE);
        let err = s
            .check(Some(&basic("reader", "readpw")), &[Perm::Execute])
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("execute") && msg.contains("reader"), "{msg}");
    }

    #[test]
    fn star_user_grants_everyone() {
        let s = store(FILE);
        assert_eq!(s.check(None, &[Perm::Ready]), Ok(()));
        assert_eq!(
            s.check(Some(&basic("nobody", "x")), &[Perm::Ready]),
            Ok(()),
            "`*` perms hold whatever the credentials"
        );
        assert_eq!(s.check(Some("garbage"), &[Perm::Ready]), Ok(()));
        // A request needing ready and status: `*` covers ready, the user must cover status.
        assert_eq!(
            s.check(
                Some(&basic("reader", "readpw")),
                &[Perm::Ready, Perm::Status]
            ),
            Ok(())
        );
        assert!(s.check(None, &[Perm::Ready, Perm::Status]).is_err());

        let open = store(r#"[{"username": "*", "perms": ["all"]}]"#);
        assert_eq!(open.check(None, &[Perm::Execute, Perm::Remove]), Ok(()));
    }

    #[test]
    fn malformed_headers_are_refused() {
        let s = store(FILE);
        for header in [
            "Bearer abc",
            "Basic",
            "Basic !!!notbase64",
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("nocolon")
            ),
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b':', b'x'])
            ),
        ] {
            assert!(
                matches!(
                    s.check(Some(header), &[Perm::Query]),
                    Err(AuthError::Malformed(_))
                ),
                "{header}"
            );
        }
        // Scheme is case-insensitive; a password may contain ':'.
        let s = store(r#"[{"username": "u", "password": "a:b", "perms": ["query"]}]"#);
        let encoded = base64::engine::general_purpose::STANDARD.encode("u:a:b");
        assert_eq!(
            s.check(Some(&format!("basic {encoded}")), &[Perm::Query]),
            Ok(())
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret\0", b"secret"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn bcrypt_passwords() {
        let hash = match bcrypt::hash("hunter2", 4) {
            Ok(h) => h,
            Err(e) => panic!("hash: {e}"),
        };
        let alt = hash.replacen("$2b$", "$2y$", 1);
        let json = format!(
            r#"[{{"username": "b", "password": "{hash}", "perms": ["query"]}},
                {{"username": "y", "password": "{alt}", "perms": ["query"]}},
                {{"username": "p", "password": "plain", "perms": ["join"]}}]"#
        );
        let s = store(&json);
        assert!(s.has_hashed_passwords());
        assert_eq!(
            s.check(Some(&basic("b", "hunter2")), &[Perm::Query]),
            Ok(())
        );
        assert_eq!(
            s.check(Some(&basic("y", "hunter2")), &[Perm::Query]),
            Ok(())
        );
        assert_eq!(
            s.check(Some(&basic("b", "hunter3")), &[Perm::Query]),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            s.check(Some(&basic("b", &hash)), &[Perm::Query]),
            Err(AuthError::BadCredentials),
            "the hash itself is not the password"
        );

        assert_eq!(s.credentials_of("b"), None);
        assert_eq!(s.credentials_of("p"), Some(("p".into(), "plain".into())));
        assert_eq!(s.credentials_of("nobody"), None);
        let err = s.join_credentials("b").unwrap_err();
        assert!(matches!(err, JoinAsError::HashedPassword { .. }));
        assert!(err.to_string().contains("bcrypt"), "{err}");
        assert_eq!(s.join_credentials("p"), Ok(("p".into(), "plain".into())));
        assert!(matches!(
            s.join_credentials("nobody"),
            Err(JoinAsError::UnknownUser { .. })
        ));
        assert!(matches!(
            s.join_credentials("*"),
            Err(JoinAsError::Anonymous { .. })
        ));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let err = load_err(r#"[{"username": "bob", "password": "x", "perms": ["query", "fly"]}]"#);
        let msg = err.to_string();
        assert!(matches!(err, AuthFileError::UnknownPerm { .. }));
        assert!(
            msg.contains("bob") && msg.contains("fly") && msg.contains("perms.json"),
            "{msg}"
        );
        assert!(msg.contains("leader-ops"), "lists the known perms: {msg}");

        assert!(matches!(load_err("not json"), AuthFileError::Parse { .. }));
        assert!(matches!(
            load_err(r#"{"username": "a"}"#),
            AuthFileError::Parse { .. }
        ));
        assert!(matches!(
            load_err(r#"[{"username": "a", "password": "x", "perm": ["all"]}]"#),
            AuthFileError::Parse { .. }
        ));
        assert!(matches!(
            load_err(r#"[{"username": "", "password": "x"}]"#),
            AuthFileError::EmptyUsername { index: 0, .. }
        ));
        assert!(matches!(
            load_err(r#"[{"username": "a", "perms": ["all"]}]"#),
            AuthFileError::MissingPassword { .. }
        ));
        assert!(matches!(
            load_err(r#"[{"username": "a", "password": "x"}, {"username": "a", "password": "y"}]"#),
            AuthFileError::DuplicateUser { .. }
        ));
        assert!(matches!(
            load_err(r#"[{"username": "*"}, {"username": "*", "perms": ["all"]}]"#),
            AuthFileError::DuplicateUser { .. }
        ));
        assert!(matches!(
            load_err(r#"[{"username": "a", "password": "$2b$10$short"}]"#),
            AuthFileError::BadHash { .. }
        ));

        let err = match AuthStore::load(Path::new("/nonexistent/perms.json")) {
            Ok(_) => panic!("loaded a missing file"),
            Err(e) => e,
        };
        assert!(matches!(err, AuthFileError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/perms.json"), "{err}");

        // An empty list is a valid file that refuses every protected request.
        let s = store("[]");
        assert!(s.check(None, &[Perm::Ready]).is_err());
    }

    #[test]
    fn endpoint_map() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_perms(&post, "/db/execute"), &[Perm::Execute]);
        assert_eq!(required_perms(&get, "/db/query"), &[Perm::Query]);
        assert_eq!(required_perms(&post, "/db/query"), &[Perm::Query]);
        assert_eq!(
            required_perms(&post, "/db/request"),
            &[Perm::Execute, Perm::Query]
        );
        assert_eq!(required_perms(&post, "/db/load"), &[Perm::Load]);
        assert_eq!(required_perms(&get, "/db/backup"), &[Perm::Backup]);
        assert_eq!(required_perms(&get, "/backups"), &[Perm::Backup]);
        assert_eq!(required_perms(&post, "/backups/restore"), &[Perm::Backup]);
        for p in ["/status", "/nodes", "/metrics", "/leader"] {
            assert_eq!(required_perms(&get, p), &[Perm::Status], "{p}");
        }
        assert_eq!(required_perms(&post, "/leader"), &[Perm::LeaderOps]);
        assert_eq!(required_perms(&get, "/readyz"), &[Perm::Ready]);
        assert_eq!(required_perms(&post, "/join"), &[Perm::Join]);
        assert_eq!(required_perms(&Method::DELETE, "/remove"), &[Perm::Remove]);
        assert!(required_perms(&get, "/").is_empty());
        assert!(required_perms(&get, "/favicon.ico").is_empty());
    }

    #[test]
    fn unauthorized_response_has_challenge_and_json_error() {
        let resp = unauthorized(&AuthError::BadCredentials);
        assert_eq!(resp.status(), axum::http::StatusCode::UNAUTHORIZED);
        assert_eq!(
            resp.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static(WWW_AUTHENTICATE))
        );
    }
}
