//! rqlite's `-auto-backup` JSON file (`--auto-backup FILE`), mapped onto raftlite's scheduled
//! backups, so that an rqlite deployment can move over without rewriting its backup settings.
//!
//! The file looks like
//!
//! ```json
//! {"version": 1, "type": "s3", "interval": "5m", "no_compress": false, "timestamp": true,
//!  "vacuum": false,
//!  "sub": {"access_key_id": "$KEY_ID", "secret_access_key": "$SECRET", "region": "eu-west-1",
//!          "endpoint": "", "bucket": "my-bucket", "path": "backups/db.sqlite3.gz",
//!          "force_path_style": false}}
//! ```
//!
//! with `type` one of `s3`, `file` (`sub`: `dir`, `name`) or `gcs` (`sub`: `bucket`, `name`,
//! `project_id`, `credentials_path`). As rqlite does, `$VAR` and `${VAR}` in the text are
//! replaced by environment variables before parsing (unset: empty).
//!
//! raftlite does not write rqlite's single object: it writes its own backup sets (see
//! README.md, "Backups") under the *directory* of rqlite's object path, so the mapping is:
//! bucket + directory of `path` → `--backup-to`, `sub` credentials → object store options
//! (overriding `AWS_*` variables), `interval` → `--backup-interval`. Fields raftlite handles
//! differently are accepted and described in [`AutoBackup::notes`], for the server to log.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// Object store options whose values are not secret, so `Debug` may show them.
const PUBLIC_OPTIONS: &[&str] = &[
    "aws_region",
    "aws_endpoint",
    "aws_allow_http",
    "aws_virtual_hosted_style_request",
];

/// The settings an rqlite auto-backup file stands for, in raftlite's terms.
#[derive(Clone)]
pub struct AutoBackup {
    /// Destination URL: `s3://bucket/<dir of path>`, `file:///dir` or `gs://bucket/<dir>`.
    pub to: String,
    /// object_store configuration keys for `Destination::parse_with_options` (credentials,
    /// region, endpoint, request style); they override the `AWS_*` environment.
    pub store_options: Vec<(String, String)>,
    /// How often to back up (rqlite's `interval`).
    pub interval: Duration,
    /// zstd level to use instead of `--backup-level`, if the file asks for one.
    pub level: Option<i32>,
    /// Fields accepted but handled differently from rqlite, in words, for the start-up log.
    pub notes: Vec<String>,
}

impl fmt::Debug for AutoBackup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written because store_options carries access keys and secrets.
        let options: Vec<String> = self
            .store_options
            .iter()
            .map(|(key, value)| {
                if PUBLIC_OPTIONS.contains(&key.as_str()) {
                    format!("{key}={value}")
                } else {
                    format!("{key}=<redacted>")
                }
            })
            .collect();
        f.debug_struct("AutoBackup")
            .field("to", &self.to)
            .field("store_options", &options)
            .field("interval", &self.interval)
            .field("level", &self.level)
            .field("notes", &self.notes)
            .finish()
    }
}

/// Why an auto-backup file cannot be used. Messages name the file and the field, never the
/// values of credential fields.
#[derive(thiserror::Error, Debug)]
pub enum AutoBackupError {
    #[error(
        "cannot read the auto-backup file {}: {source} (check the path given with \
         --auto-backup or RAFTLITE_AUTO_BACKUP)",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the auto-backup file{} is not valid JSON: {reason} (after replacing $VARIABLES \
         with their values; expected rqlite's format, e.g. {{\"version\": 1, \"type\": \
         \"file\", \"interval\": \"1h\", \"sub\": {{\"dir\": \"/backups\"}}}})",
        named(path)
    )]
    Parse { path: PathBuf, reason: String },

    #[error("the auto-backup file{} cannot be used: {reason}", named(path))]
    Invalid { path: PathBuf, reason: String },
}

impl AutoBackupError {
    /// The same error, naming the file it came from.
    fn in_file(self, file: &Path) -> AutoBackupError {
        match self {
            AutoBackupError::Parse { reason, .. } => AutoBackupError::Parse {
                path: file.to_path_buf(),
                reason,
            },
            AutoBackupError::Invalid { reason, .. } => AutoBackupError::Invalid {
                path: file.to_path_buf(),
                reason,
            },
            read @ AutoBackupError::Read { .. } => read,
        }
    }
}

/// ` <path>` for messages, or nothing for text parsed without a file.
fn named(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!(" {}", path.display())
    }
}

/// Reads and maps the auto-backup file at `path`, expanding `$VAR`s from this process's
/// environment.
pub fn load(path: &Path) -> Result<AutoBackup, AutoBackupError> {
    let text = std::fs::read_to_string(path).map_err(|source| AutoBackupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, |name| std::env::var(name).ok()).map_err(|e| e.in_file(path))
}

/// Maps the text of an auto-backup file; `env` looks up the variables it mentions. Errors
/// carry an empty path ([`load`] fills it in).
pub fn parse(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<AutoBackup, AutoBackupError> {
    let expanded = expand_env(text, &env);
    // Parsed as a generic value first, then field by field: serde's typed errors quote the
    // offending value, which may be a secret substituted from the environment.
    let root: Value = serde_json::from_str(&expanded).map_err(|e| AutoBackupError::Parse {
        path: PathBuf::new(),
        reason: e.to_string(),
    })?;
    map(&root).map_err(|reason| AutoBackupError::Invalid {
        path: PathBuf::new(),
        reason,
    })
}

/// The backends rqlite's auto-backup knows, as named in `type`.
const SUPPORTED_TYPES: &str = "\"s3\", \"file\" or \"gcs\"";

/// What an rqlite `-auto-restore` file stands for: where the backups are.
#[derive(Clone)]
pub struct AutoRestore {
    pub to: String,
    pub store_options: Vec<(String, String)>,
    /// rqlite's `continue_on_failure`: start empty when nothing can be restored.
    pub continue_on_failure: bool,
    /// rqlite's `timeout`: how long to keep retrying a failing store.
    pub timeout: Option<Duration>,
    pub notes: Vec<String>,
}

impl fmt::Debug for AutoRestore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoRestore")
            .field("to", &self.to)
            .field("continue_on_failure", &self.continue_on_failure)
            .finish_non_exhaustive()
    }
}

/// Reads rqlite's `-auto-restore` file (same `type` and `sub` as the auto-backup file, plus
/// `timeout` and `continue_on_failure`; no `interval`).
pub fn load_restore(path: &Path) -> Result<AutoRestore, AutoBackupError> {
    let text = std::fs::read_to_string(path).map_err(|source| AutoBackupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let expanded = expand_env(&text, &|name: &str| std::env::var(name).ok());
    let mut root: Value = serde_json::from_str(&expanded).map_err(|e| AutoBackupError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let invalid = |reason: String| AutoBackupError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let Value::Object(top) = &mut root else {
        return Err(invalid("the top level must be a JSON object".into()));
    };
    let continue_on_failure = match top.remove("continue_on_failure") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(invalid(
                "`continue_on_failure` must be true or false".into(),
            ))
        }
    };
    let notes = Vec::new();
    let timeout = match top.remove("timeout") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => {
            Some(crate::parse_duration(&t).map_err(|e| invalid(format!("`timeout` {t:?}: {e}")))?)
        }
        Some(_) => {
            return Err(invalid(
                "`timeout` must be a duration string like \"60s\"".into(),
            ))
        }
    };
    // The backup mapping wants an interval; a restore has none.
    top.insert("interval".into(), Value::String("1h".into()));
    let mapped = map(&root).map_err(invalid)?;
    let mut notes = notes;
    notes.extend(
        mapped
            .notes
            .into_iter()
            .filter(|n| !n.starts_with("timestamp") && !n.starts_with("no_compress")),
    );
    Ok(AutoRestore {
        to: mapped.to,
        store_options: mapped.store_options,
        continue_on_failure,
        timeout,
        notes,
    })
}

fn map(root: &Value) -> Result<AutoBackup, String> {
    let Value::Object(top) = root else {
        return Err("the top level must be a JSON object".to_owned());
    };
    let mut notes = Vec::new();
    let mut fields = Fields::new(top, "");

    if let Some(version) = fields.take("version") {
        if version.as_u64() != Some(1) {
            return Err(format!(
                "`version` is {version}; only version 1 of rqlite's format is supported"
            ));
        }
    }
    let kind = fields
        .string("type")?
        .ok_or_else(|| format!("no `type`; expected {SUPPORTED_TYPES}"))?
        .to_ascii_lowercase();
    let interval = interval(fields.string("interval")?)?;
    let no_compress = fields.boolean("no_compress")?.unwrap_or(false);
    let timestamp = fields.boolean("timestamp")?.unwrap_or(false);
    let vacuum = fields.boolean("vacuum")?.unwrap_or(false);
    let sub = match fields.take("sub") {
        Some(Value::Object(sub)) => sub.clone(),
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err("`sub` must be a JSON object".to_owned()),
    };
    fields.note_unknown(&mut notes);

    let (to, store_options) = match kind.as_str() {
        "s3" => s3(&sub, &mut notes)?,
        "file" => file(&sub, &mut notes)?,
        "gcs" => gcs(&sub, &mut notes)?,
        other => {
            return Err(format!(
                "`type` {other:?} is not supported; expected {SUPPORTED_TYPES}"
            ))
        }
    };

    let level = if no_compress {
        notes.push(
            "no_compress: raftlite always compresses backups (zstd); it uses level 1, the \
             cheapest"
                .to_owned(),
        );
        Some(1)
    } else {
        None
    };
    if !timestamp {
        notes.push(
            "timestamp is false: rqlite overwrites one object, raftlite writes each backup as \
             a new timestamped set and deletes old sets by its retention rules \
             (--backup-keep-*; default the newest 10, 24 hourly, 7 daily, 4 weekly, 12 monthly)"
                .to_owned(),
        );
    }
    if vacuum {
        notes.push(
            "vacuum: scheduled backups are copies of the database file as it is; raftlite \
             does not VACUUM them"
                .to_owned(),
        );
    }
    Ok(AutoBackup {
        to,
        store_options,
        interval,
        level,
        notes,
    })
}

fn interval(text: Option<String>) -> Result<Duration, String> {
    let text = text.ok_or_else(|| {
        "no `interval`; give how often to back up as a duration, e.g. \"5m\" or \"1h\"".to_owned()
    })?;
    let every = crate::parse_duration(&text).map_err(|e| {
        format!("`interval` {text:?} is not a duration ({e}); e.g. \"5m\" or \"1h\"")
    })?;
    // Schedules are in whole seconds at least; a sub-second interval would mean back-to-back
    // backups anyway.
    if every < Duration::from_secs(1) {
        return Err(format!(
            "`interval` {text:?} is shorter than the minimum, 1s"
        ));
    }
    Ok(every)
}

/// `s3`: bucket and object path become `s3://bucket/<dir>`; credentials, region and endpoint
/// become object_store options.
fn s3(
    sub: &Map<String, Value>,
    notes: &mut Vec<String>,
) -> Result<(String, Vec<(String, String)>), String> {
    let mut fields = Fields::new(sub, "sub.");
    let bucket = bucket(fields.string("bucket")?)?;
    let path = fields.string("path")?.unwrap_or_default();
    let access_key_id = fields.string("access_key_id")?;
    let secret_access_key = fields.string("secret_access_key")?;
    let region = fields.string("region")?;
    let endpoint = fields.string("endpoint")?;
    let force_path_style = fields.boolean("force_path_style")?.unwrap_or(false);
    fields.note_unknown(notes);

    let mut options = Vec::new();
    // Only what the file sets: empty keys fall back to the AWS_* environment, as rqlite falls
    // back to the SDK's default credentials.
    match (access_key_id, secret_access_key) {
        (Some(id), Some(secret)) => {
            options.push(("aws_access_key_id".to_owned(), id));
            options.push(("aws_secret_access_key".to_owned(), secret));
        }
        (None, None) => {}
        _ => {
            return Err(
                "`sub.access_key_id` and `sub.secret_access_key` must be given together (or \
                 both left empty to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                    .to_owned(),
            )
        }
    }
    if let Some(region) = region {
        options.push(("aws_region".to_owned(), region));
    }
    let custom_endpoint = endpoint.is_some();
    if let Some(endpoint) = endpoint {
        // rqlite (the AWS SDK) accepts a bare host; object_store needs a URL.
        let endpoint = if endpoint.contains("://") {
            endpoint
        } else {
            format!("https://{endpoint}")
        };
        if endpoint.to_ascii_lowercase().starts_with("http://") {
            options.push(("aws_allow_http".to_owned(), "true".to_owned()));
        }
        options.push(("aws_endpoint".to_owned(), endpoint));
    }
    // Path-style requests are what S3-compatible stores (a custom endpoint) expect and what
    // force_path_style asks for. Otherwise, on AWS, rqlite's default is virtual-hosted style,
    // except for dotted bucket names, whose virtual host names TLS certificates do not cover.
    let virtual_hosted = !force_path_style && !custom_endpoint && !bucket.contains('.');
    if custom_endpoint && !force_path_style {
        notes.push(
            "force_path_style is false with a custom endpoint: raftlite uses path-style \
             requests, which S3-compatible stores expect"
                .to_owned(),
        );
    }
    options.push((
        "aws_virtual_hosted_style_request".to_owned(),
        virtual_hosted.to_string(),
    ));

    let dir = object_dir("path", &path, notes);
    Ok((url_with_prefix("s3", &bucket, &dir), options))
}

/// `file`: rqlite writes `<dir>/<name>`; raftlite writes its sets under `<dir>`.
fn file(
    sub: &Map<String, Value>,
    notes: &mut Vec<String>,
) -> Result<(String, Vec<(String, String)>), String> {
    let mut fields = Fields::new(sub, "sub.");
    let dir = fields.string("dir")?.ok_or_else(|| {
        "`type` \"file\" needs `sub.dir`, the directory to write backups to".to_owned()
    })?;
    // rqlite calls it `name`; `file` is accepted as well.
    let name = fields.string("name")?;
    let name = name.or(fields.string("file")?);
    fields.note_unknown(notes);
    if let Some(name) = name {
        notes.push(format!(
            "sub.name {name:?} ignored: raftlite names its own backup sets inside {dir:?}"
        ));
    }
    let mut dir = PathBuf::from(&dir);
    if dir.is_relative() {
        // rqlite opens a relative dir from its working directory; a file:// URL needs the
        // absolute path.
        let cwd = std::env::current_dir().map_err(|e| {
            format!(
                "`sub.dir` {:?} is relative and the current directory is unknown ({e}); use \
                 an absolute path",
                dir.display()
            )
        })?;
        dir = cwd.join(dir);
    }
    let text = dir
        .to_str()
        .ok_or_else(|| "`sub.dir` is not valid UTF-8".to_owned())?;
    let trimmed = text.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    Ok((
        format!("file://{}", percent_encode_path(trimmed)),
        Vec::new(),
    ))
}

/// `gcs`: bucket and object name become `gs://bucket/<dir>`; a credentials file becomes
/// object_store's service account option.
fn gcs(
    sub: &Map<String, Value>,
    notes: &mut Vec<String>,
) -> Result<(String, Vec<(String, String)>), String> {
    let mut fields = Fields::new(sub, "sub.");
    let bucket = bucket(fields.string("bucket")?)?;
    let (key, name) = match fields.string("name")? {
        Some(name) => ("name", name),
        None => ("path", fields.string("path")?.unwrap_or_default()),
    };
    let project_id = fields.string("project_id")?;
    let credentials_path = fields.string("credentials_path")?;
    fields.note_unknown(notes);

    let mut options = Vec::new();
    if let Some(path) = credentials_path {
        options.push(("google_service_account".to_owned(), path));
    }
    if project_id.is_some() {
        notes.push(
            "sub.project_id ignored: reading and writing objects needs only the bucket and \
             the credentials"
                .to_owned(),
        );
    }
    let dir = object_dir(key, &name, notes);
    Ok((url_with_prefix("gs", &bucket, &dir), options))
}

fn bucket(value: Option<String>) -> Result<String, String> {
    let bucket = value.ok_or_else(|| "no `sub.bucket`".to_owned())?;
    // Checked here so that a bad name is reported against the file, not as a broken URL.
    let valid = bucket
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !valid {
        return Err(format!(
            "`sub.bucket` {bucket:?} is not a bucket name (letters, digits, `.`, `-`, `_`)"
        ));
    }
    Ok(bucket)
}

/// The directory part of an object key (`backups/db.sqlite3.gz` → `backups`), noting that the
/// file name is not used.
fn object_dir(field: &str, key: &str, notes: &mut Vec<String>) -> String {
    let key = key.trim_matches('/');
    let (dir, name) = match key.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", key),
    };
    if !name.is_empty() {
        notes.push(format!(
            "sub.{field}: the file name {name:?} is ignored; raftlite names its own objects \
             under {:?}",
            if dir.is_empty() {
                "the bucket's root"
            } else {
                dir
            }
        ));
    }
    dir.to_owned()
}

fn url_with_prefix(scheme: &str, bucket: &str, dir: &str) -> String {
    if dir.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}/{}", percent_encode_path(dir))
    }
}

/// Percent-encodes everything but unreserved characters and `/`, so that any directory name
/// survives the trip through a URL (Destination decodes it again).
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Field access on one JSON object that remembers which keys were used, so the rest can be
/// reported. Empty strings count as absent: an unset `$VAR` expands to one.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
    used: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Value>, prefix: &'static str) -> Fields<'a> {
        Fields {
            map,
            prefix,
            used: Vec::new(),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &'static str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            // The value is not quoted: it may be a credential.
            Some(_) => Err(format!("`{}{key}` must be a string", self.prefix)),
        }
    }

    fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Quoted booleans let `"$VAR"` stand for one; rqlite would refuse them.
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "" => Ok(None),
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(format!("`{}{key}` must be true or false", self.prefix)),
            },
            Some(_) => Err(format!("`{}{key}` must be true or false", self.prefix)),
        }
    }

    /// Notes keys this mapping does not know: rqlite ignores unknown keys too, and failing on
    /// a field of a newer rqlite version would block a migration for nothing.
    fn note_unknown(&self, notes: &mut Vec<String>) {
        for key in self.map.keys() {
            if !self.used.contains(&key.as_str()) {
                notes.push(format!("unknown field `{}{key}` ignored", self.prefix));
            }
        }
    }
}

/// Replaces `$NAME` and `${NAME}` with `env(NAME)` (unset: empty), as rqlite does with Go's
/// `os.ExpandEnv` before parsing: `NAME` is letters, digits and `_`, or one of the shell's
/// one-character names (a digit or `*#$@!?-`); a `$` followed by anything else stays.
///
/// Unlike plain text substitution, a value landing inside a JSON string is JSON-escaped, so a
/// secret containing `"` or `\` is read back exactly instead of breaking the file.
fn expand_env(text: &str, env: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '$' {
            if let Some((name, used)) = variable_name(&rest[1..]) {
                let value = env(name).unwrap_or_default();
                if in_string {
                    push_json_escaped(&mut out, &value);
                } else {
                    out.push_str(&value);
                }
                escaped = false;
                rest = &rest[1 + used..];
                continue;
            }
        }
        out.push(c);
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The variable name at the start of `after` (the text after a `$`) and how many bytes the
/// reference takes, braces included; `None` when this `$` is not a reference.
fn variable_name(after: &str) -> Option<(&str, usize)> {
    if let Some(inner) = after.strip_prefix('{') {
        let end = inner.find('}')?;
        return Some((&inner[..end], end + 2));
    }
    let first = after.chars().next()?;
    if first.is_ascii_digit() || "*#$@!?-".contains(first) {
        return Some((&after[..1], 1));
    }
    let len = after
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    (len > 0).then(|| (&after[..len], len))
}

fn push_json_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const S3_EXAMPLE: &str = r#"{
        "version": 1,
        "type": "s3",
        "interval": "5m",
        "no_compress": true,
        "timestamp": true,
        "vacuum": false,
        "sub": {
            "access_key_id": "$ACCESS_KEY_ID",
            "secret_access_key": "${SECRET_ACCESS_KEY}",
            "endpoint": "$ENDPOINT",
            "region": "$BUCKET_REGION",
            "bucket": "$BUCKET_NAME",
            "path": "backups/db.sqlite3.gz"
        }
    }"#;

    const KEY_ID: &str = "AKIAEXAMPLEKEYID";
    const SECRET: &str = "wJalr/XUtnFEMI+K7MDENG\"bPxRfi\\CYEXAMPLEKEY";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn option<'a>(auto: &'a AutoBackup, key: &str) -> Option<&'a str> {
        auto.store_options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn invalid_reason(err: AutoBackupError) -> String {
        match err {
            AutoBackupError::Invalid { reason, .. } => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn s3_example_with_env_expansion() {
        let env = env_of(&[
            ("ACCESS_KEY_ID", KEY_ID),
            ("SECRET_ACCESS_KEY", SECRET),
            ("BUCKET_REGION", "eu-west-1"),
            ("BUCKET_NAME", "my-bucket"),
        ]);
        let auto = parse(S3_EXAMPLE, env).unwrap();
        assert_eq!(auto.to, "s3://my-bucket/backups");
        assert_eq!(auto.interval, Duration::from_secs(300));
        assert_eq!(
            auto.level,
            Some(1),
            "no_compress maps to the cheapest level"
        );
        assert_eq!(option(&auto, "aws_access_key_id"), Some(KEY_ID));
        // The secret has `"` and `\`: escaped inside the JSON string, read back exactly.
        assert_eq!(option(&auto, "aws_secret_access_key"), Some(SECRET));
        assert_eq!(option(&auto, "aws_region"), Some("eu-west-1"));
        // $ENDPOINT is unset: empty, so plain AWS with rqlite's virtual-hosted style.
        assert_eq!(option(&auto, "aws_endpoint"), None);
        assert_eq!(option(&auto, "aws_allow_http"), None);
        assert_eq!(
            option(&auto, "aws_virtual_hosted_style_request"),
            Some("true")
        );
        let notes = auto.notes.join("\n");
        assert!(notes.contains("db.sqlite3.gz"), "{notes}");
        assert!(notes.contains("no_compress"), "{notes}");
        assert!(
            !notes.contains("timestamp"),
            "timestamp=true needs no note: {notes}"
        );
    }

    #[test]
    fn s3_custom_endpoint_is_path_style_and_plain_http_allowed() {
        let text = r#"{"version": 1, "type": "s3", "interval": "1h30m",
            "sub": {"endpoint": "http://minio:9000", "bucket": "b", "path": "db.gz",
                    "force_path_style": true}}"#;
        let auto = parse(text, env_of(&[])).unwrap();
        assert_eq!(
            auto.to, "s3://b",
            "a key without a directory: the bucket's root"
        );
        assert_eq!(auto.interval, Duration::from_secs(5400));
        assert_eq!(auto.level, None);
        assert_eq!(option(&auto, "aws_endpoint"), Some("http://minio:9000"));
        assert_eq!(option(&auto, "aws_allow_http"), Some("true"));
        assert_eq!(
            option(&auto, "aws_virtual_hosted_style_request"),
            Some("false")
        );
        // No keys in the file: the AWS_* environment supplies them.
        assert_eq!(option(&auto, "aws_access_key_id"), None);
        assert!(auto.notes.iter().any(|n| n.contains("timestamp")));

        // A bare host (as the AWS SDK accepts) means https; path style without being asked.
        let text = r#"{"type": "s3", "interval": "10m",
            "sub": {"endpoint": "storage.example.com", "bucket": "b", "path": "a b/c/db.gz"}}"#;
        let auto = parse(text, env_of(&[])).unwrap();
        assert_eq!(auto.to, "s3://b/a%20b/c");
        assert_eq!(
            option(&auto, "aws_endpoint"),
            Some("https://storage.example.com")
        );
        assert_eq!(option(&auto, "aws_allow_http"), None);
        assert_eq!(
            option(&auto, "aws_virtual_hosted_style_request"),
            Some("false")
        );
    }

    #[test]
    fn file_type() {
        let text = r#"{"version": 1, "type": "file", "interval": "30s", "timestamp": false,
            "vacuum": true, "sub": {"dir": "${BACKUP_DIR}/rqlite", "name": "backup.sqlite"}}"#;
        let auto = parse(text, env_of(&[("BACKUP_DIR", "/srv/backups")])).unwrap();
        assert_eq!(auto.to, "file:///srv/backups/rqlite");
        assert!(auto.store_options.is_empty());
        assert_eq!(auto.interval, Duration::from_secs(30));
        let notes = auto.notes.join("\n");
        assert!(notes.contains("backup.sqlite"), "{notes}");
        assert!(notes.contains("timestamp is false"), "{notes}");
        assert!(notes.contains("vacuum"), "{notes}");

        // `file` is accepted for the name; a relative dir is taken from the working directory.
        let text = r#"{"type": "file", "interval": "1h",
            "sub": {"dir": "rel/dir/", "file": "db.sqlite"}}"#;
        let auto = parse(text, env_of(&[])).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            auto.to,
            format!(
                "file://{}",
                percent_encode_path(&cwd.join("rel/dir").to_string_lossy())
            )
        );
        assert!(auto.notes.iter().any(|n| n.contains("db.sqlite")));
    }

    #[test]
    fn file_destination_parses() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("with space%");
        let text = format!(
            r#"{{"type": "file", "interval": "2s", "sub": {{"dir": "{}"}}}}"#,
            target.display()
        );
        let auto = parse(&text, env_of(&[])).unwrap();
        let dest =
            crate::Destination::parse_with_options(&auto.to, auto.store_options.clone()).unwrap();
        assert_eq!(dest.to_string(), format!("file://{}", target.display()));
        assert!(target.is_dir());
    }

    #[test]
    fn gcs_type() {
        let text = r#"{"version": 1, "type": "gcs", "interval": "1h", "timestamp": true,
            "sub": {"project_id": "proj", "bucket": "gbucket", "name": "rqlite/backups/db.gz",
                    "credentials_path": "/etc/gcs/key.json"}}"#;
        let auto = parse(text, env_of(&[])).unwrap();
        assert_eq!(auto.to, "gs://gbucket/rqlite/backups");
        assert_eq!(
            auto.store_options,
            vec![(
                "google_service_account".to_owned(),
                "/etc/gcs/key.json".to_owned()
            )]
        );
        let notes = auto.notes.join("\n");
        assert!(notes.contains("project_id"), "{notes}");
        assert!(notes.contains("db.gz"), "{notes}");

        let text = r#"{"type": "GCS", "interval": "1h", "sub": {"bucket": "g", "path": "x/y"}}"#;
        assert_eq!(parse(text, env_of(&[])).unwrap().to, "gs://g/x");
    }

    #[test]
    fn errors_name_the_problem() {
        let env = env_of(&[]);
        let reason = |text: &str| invalid_reason(parse(text, &env).unwrap_err());

        let r = reason(r#"{"type": "file", "sub": {"dir": "/b"}}"#);
        assert!(r.contains("no `interval`"), "{r}");
        let r = reason(r#"{"type": "file", "interval": "$UNSET", "sub": {"dir": "/b"}}"#);
        assert!(r.contains("no `interval`"), "{r}");
        let r = reason(r#"{"type": "file", "interval": "soon", "sub": {"dir": "/b"}}"#);
        assert!(r.contains("interval") && r.contains("soon"), "{r}");
        let r = reason(r#"{"type": "file", "interval": "0s", "sub": {"dir": "/b"}}"#);
        assert!(r.contains("1s"), "{r}");

        let r = reason(r#"{"type": "azure", "interval": "1h", "sub": {}}"#);
        assert!(
            r.contains("azure") && r.contains("\"s3\", \"file\" or \"gcs\""),
            "{r}"
        );
        let r = reason(r#"{"interval": "1h"}"#);
        assert!(r.contains("no `type`") && r.contains("\"gcs\""), "{r}");
        let r = reason(r#"{"version": 2, "type": "file", "interval": "1h"}"#);
        assert!(r.contains("version"), "{r}");
        let r = reason(r#"{"type": "file", "interval": "1h", "sub": {}}"#);
        assert!(r.contains("sub.dir"), "{r}");
        let r = reason(r#"{"type": "s3", "interval": "1h", "sub": {"path": "x"}}"#);
        assert!(r.contains("sub.bucket"), "{r}");
        let r = reason(r#"{"type": "s3", "interval": "1h", "sub": {"bucket": "a/b"}}"#);
        assert!(r.contains("a/b"), "{r}");
        let r = reason(
            r#"{"type": "s3", "interval": "1h", "sub": {"bucket": "b", "access_key_id": "k"}}"#,
        );
        assert!(r.contains("together"), "{r}");
        let r = reason(r#"[1, 2]"#);
        assert!(r.contains("object"), "{r}");

        let err = parse(r#"{"type": "file", "#, &env).unwrap_err();
        assert!(matches!(err, AutoBackupError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn secrets_never_shown() {
        let env = env_of(&[
            ("ACCESS_KEY_ID", KEY_ID),
            ("SECRET_ACCESS_KEY", SECRET),
            ("BUCKET_NAME", "my-bucket"),
        ]);
        let auto = parse(S3_EXAMPLE, &env).unwrap();
        let debug = format!("{auto:?}");
        assert!(
            !debug.contains(KEY_ID) && !debug.contains("wJalr"),
            "{debug}"
        );
        assert!(
            debug.contains("aws_secret_access_key=<redacted>"),
            "{debug}"
        );
        assert!(debug.contains("s3://my-bucket/backups"), "{debug}");

        // A credential of the wrong type is refused without quoting it.
        let text = r#"{"type": "s3", "interval": "1h",
            "sub": {"bucket": "b", "access_key_id": "k", "secret_access_key": 987654321}}"#;
        let err = parse(text, &env).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("sub.secret_access_key"), "{shown}");
        assert!(!shown.contains("987654321"), "{shown}");
    }

    #[test]
    fn expansion_follows_rqlite() {
        let env = env_of(&[("A", "x"), ("B_2", "y"), ("Q", "a\"b")]);
        assert_eq!(expand_env("$A-${B_2}-$B_2", &env), "x-y-y");
        assert_eq!(expand_env("$UNSET|${UNSET}|", &env), "||");
        // A `$` not followed by a name stays; one-character shell names are names.
        assert_eq!(expand_env("5$ $", &env), "5$ $");
        assert_eq!(expand_env("$1A", &env), "A");
        // Raw outside JSON strings, escaped inside them.
        assert_eq!(
            expand_env(r#"{"k": "$Q", "n": $Q}"#, &env),
            r#"{"k": "a\"b", "n": a"b}"#
        );
        // A quote escaped inside a string does not end it.
        assert_eq!(expand_env(r#""\"$Q""#, &env), r#""\"a\"b""#);
        assert_eq!(expand_env("héllo ${A}é", &env), "héllo xé");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = load(&missing).unwrap_err();
        assert!(matches!(err, AutoBackupError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.json"), "{err}");

        let path = dir.path().join("auto.json");
        std::fs::write(&path, r#"{"type": "ftp", "interval": "1h"}"#).unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("auto.json"), "{err}");
        assert!(err.to_string().contains("ftp"), "{err}");

        let target = dir.path().join("backups");
        std::fs::write(
            &path,
            format!(
                r#"{{"version": 1, "type": "file", "interval": "2s", "timestamp": true,
                    "sub": {{"dir": "{}", "name": "db.sqlite"}}}}"#,
                target.display()
            ),
        )
        .unwrap();
        let auto = load(&path).unwrap();
        assert_eq!(auto.to, format!("file://{}", target.display()));
        assert_eq!(auto.interval, Duration::from_secs(2));
    }
}
