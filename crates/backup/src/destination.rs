//! Where backups go: a URL parsed into an object store plus a prefix inside it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, RetryConfig};

use crate::error::BackupError;
use crate::BackupId;

/// A backup destination: an object store and the prefix under which
/// `<cluster-id>/backups/<set>/` live.
///
/// `Display` and `Debug` show only the scheme, bucket (or directory) and prefix: never
/// credentials, which come from the environment (or from [`Destination::parse_with_options`]),
/// not from the URL.
#[derive(Clone)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    label: String,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the store's Debug: cloud stores print their configuration, keys included.
        f.debug_tuple("Destination").field(&self.label).finish()
    }
}

impl Destination {
    /// Parses a destination URL:
    ///
    /// - `file:///absolute/dir`: a local directory (created if missing); files are fsync'd.
    /// - `s3://bucket/prefix`: S3 or an S3-compatible store (MinIO, R2, ...), configured from
    ///   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
    ///   `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `AWS_ALLOW_HTTP=true` for a plain-http endpoint,
    ///   and the other `AWS_*` keys object_store knows. Path-style requests are used unless
    ///   `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`; no extra request checksums are sent unless
    ///   `AWS_CHECKSUM_ALGORITHM` asks for them (S3-compatible stores reject some).
    /// - `gs://bucket/prefix`: Google Cloud Storage, from `GOOGLE_*` variables
    ///   (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, ...).
    /// - `az://container/prefix`: Azure Blob Storage, from `AZURE_*` variables
    ///   (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...).
    /// - `memory://`: a fresh in-process store (tests).
    ///
    /// Credentials in the URL (`s3://key:secret@bucket`) and query strings are refused.
    pub fn parse(url: &str) -> Result<Destination, BackupError> {
        Destination::parse_with_options(url, std::iter::empty::<(String, String)>())
    }

    /// Like [`Destination::parse`], with object_store configuration keys that override the
    /// environment, e.g. `("aws_endpoint", "http://127.0.0.1:9000")`, `("aws_allow_http",
    /// "true")`, `("aws_access_key_id", ...)`. Keys are those of object_store's
    /// `AmazonS3ConfigKey`, `GoogleConfigKey` and `AzureConfigKey` (case-insensitive). Values
    /// never appear in `Display` or in errors. Two keys are this crate's own, for cloud stores:
    /// `max_retries` and `retry_timeout_secs` bound how long a failing store is retried
    /// (object_store's default is up to 10 retries within 3 minutes).
    pub fn parse_with_options<I, K, V>(url: &str, options: I) -> Result<Destination, BackupError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut options: HashMap<String, String> = options
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.into()))
            .collect();
        let invalid = |reason: &str| BackupError::InvalidDestination {
            url: redact(url),
            reason: reason.to_string(),
        };
        let retry = retry_config(&mut options).map_err(|reason| invalid(&reason))?;
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials do not belong in the URL; set them in the environment \
                 (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid(
                "query strings and fragments are not supported; configure the store through \
                 the environment",
            ));
        }
        let scheme = parsed.scheme().to_ascii_lowercase();
        let bucket = parsed.host_str().unwrap_or("").to_string();
        let prefix_text = percent_decode(parsed.path().trim_matches('/'))
            .ok_or_else(|| invalid("the path is not valid UTF-8 after percent-decoding"))?;
        let need_bucket = |what: &str| -> Result<(), BackupError> {
            if bucket.is_empty() {
                Err(invalid(&format!(
                    "no {what} name (expected {scheme}://{what}/prefix)"
                )))
            } else {
                Ok(())
            }
        };
        match scheme.as_str() {
            "file" => {
                if !bucket.is_empty() && bucket != "localhost" {
                    return Err(invalid(
                        "a file URL needs an absolute path: file:///absolute/dir (three slashes)",
                    ));
                }
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| invalid("not an absolute local path"))?;
                let label = format!("file://{}", dir.display());
                std::fs::create_dir_all(&dir).map_err(|e| BackupError::InvalidDestination {
                    url: label.clone(),
                    reason: format!("cannot create the directory: {e}"),
                })?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|source| BackupError::OpenDestination {
                        dest: label.clone(),
                        source: Box::new(source),
                    })?
                    .with_fsync(true)
                    .with_automatic_cleanup(true);
                Destination::from_store(Arc::new(store), "", label)
            }
            "memory" => Destination::from_store(Arc::new(InMemory::new()), "", "memory://"),
            "s3" | "s3a" => {
                need_bucket("bucket")?;
                let label = cloud_label("s3", &bucket, &prefix_text);
                let store = build_s3(&bucket, &options, retry).map_err(|e| match e {
                    BuildError::Key(key) => invalid(&format!("unknown S3 option {key:?}")),
                    BuildError::Store(source) => BackupError::OpenDestination {
                        dest: label.clone(),
                        source: Box::new(source),
                    },
                })?;
                Destination::from_store(store, &prefix_text, label)
            }
            "gs" => {
                need_bucket("bucket")?;
                let label = cloud_label("gs", &bucket, &prefix_text);
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env();
                for (key, value) in &options {
                    let key = key
                        .parse()
                        .map_err(|_| invalid(&format!("unknown GCS option {key:?}")))?;
                    builder = builder.with_config(key, value);
                }
                let mut builder = builder.with_bucket_name(&bucket);
                if let Some(retry) = retry.clone() {
                    builder = builder.with_retry(retry);
                }
                let store = builder
                    .build()
                    .map_err(|source| BackupError::OpenDestination {
                        dest: label.clone(),
                        source: Box::new(source),
                    })?;
                Destination::from_store(Arc::new(store), &prefix_text, label)
            }
            "az" | "azure" => {
                need_bucket("container")?;
                let label = cloud_label("az", &bucket, &prefix_text);
                let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env();
                for (key, value) in &options {
                    let key = key
                        .parse()
                        .map_err(|_| invalid(&format!("unknown Azure option {key:?}")))?;
                    builder = builder.with_config(key, value);
                }
                let mut builder = builder.with_container_name(&bucket);
                if let Some(retry) = retry.clone() {
                    builder = builder.with_retry(retry);
                }
                let store = builder
                    .build()
                    .map_err(|source| BackupError::OpenDestination {
                        dest: label.clone(),
                        source: Box::new(source),
                    })?;
                Destination::from_store(Arc::new(store), &prefix_text, label)
            }
            other => Err(invalid(&format!("unsupported scheme {other:?}"))),
        }
    }

    /// Wraps an already-built store (tests, or a store wrapped for metrics/throttling).
    /// `prefix` is a `/`-separated path inside the store (may be empty); `label` is what
    /// `Display` and error messages show, so it must not contain credentials.
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        label: impl Into<String>,
    ) -> Result<Destination, BackupError> {
        let label = label.into();
        let prefix = ObjectPath::parse(prefix.trim_matches('/')).map_err(|e| {
            BackupError::InvalidDestination {
                url: label.clone(),
                reason: format!("invalid prefix: {e}"),
            }
        })?;
        Ok(Destination {
            store,
            prefix,
            label,
        })
    }

    /// The object store (for callers that need more than this crate offers, e.g. pruning).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix inside the store under which the cluster folders live.
    pub fn prefix(&self) -> &ObjectPath {
        &self.prefix
    }

    pub(crate) fn label(&self) -> String {
        self.label.clone()
    }

    fn child(&self, part: &str) -> ObjectPath {
        // `part` is validated (BackupId), so this never needs escaping.
        self.prefix.clone().join(part)
    }

    /// `<prefix>/<cluster-id>/backups`
    pub(crate) fn backups_dir(&self, cluster_id: &str) -> ObjectPath {
        self.child(cluster_id).join(crate::manifest::BACKUPS_DIR)
    }

    /// `<prefix>/<cluster-id>/archive/<timeline-id>`
    pub(crate) fn archive_dir(&self, cluster_id: &str, timeline_id: &str) -> ObjectPath {
        self.child(cluster_id)
            .join(crate::archive::ARCHIVE_DIR)
            .join(timeline_id)
    }

    /// `<prefix>/<cluster-id>/backups/<set>`
    pub(crate) fn set_dir(&self, id: &BackupId) -> ObjectPath {
        self.backups_dir(id.cluster_id()).join(id.set())
    }
}

enum BuildError {
    Key(String),
    Store(object_store::Error),
}

/// Takes this crate's own keys out of `options`: `max_retries` (a count) and
/// `retry_timeout_secs` (seconds, fractions allowed) bound how long a request to a failing
/// store is retried (object_store's default: 10 retries within 3 minutes).
fn retry_config(options: &mut HashMap<String, String>) -> Result<Option<RetryConfig>, String> {
    let max_retries = options.remove("max_retries");
    let timeout = options.remove("retry_timeout_secs");
    if max_retries.is_none() && timeout.is_none() {
        return Ok(None);
    }
    let mut retry = RetryConfig::default();
    if let Some(n) = max_retries {
        retry.max_retries = n
            .trim()
            .parse()
            .map_err(|_| format!("max_retries {n:?} is not a count"))?;
    }
    if let Some(t) = timeout {
        let secs: f64 = t
            .trim()
            .parse()
            .map_err(|_| format!("retry_timeout_secs {t:?} is not a number of seconds"))?;
        retry.retry_timeout = Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("retry_timeout_secs {t:?} is out of range"))?;
        // Back off in proportion, so a short timeout still leaves room for the retries.
        retry.backoff.init_backoff = retry.backoff.init_backoff.min(retry.retry_timeout / 20);
        retry.backoff.max_backoff = retry.backoff.max_backoff.min(retry.retry_timeout / 4);
    }
    Ok(Some(retry))
}

fn build_s3(
    bucket: &str,
    options: &HashMap<String, String>,
    retry: Option<RetryConfig>,
) -> Result<Arc<dyn ObjectStore>, BuildError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let mut builder = AmazonS3Builder::from_env();
    for (key, value) in options {
        let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| BuildError::Key(key.clone()))?;
        builder = builder.with_config(parsed, value);
    }
    // The URL's bucket wins over `AWS_BUCKET` / an `aws_bucket` option.
    builder = builder.with_bucket_name(bucket);
    if let Some(retry) = retry {
        builder = builder.with_retry(retry);
    }
    // With a custom endpoint (MinIO, R2, Ceph, ...) use path-style requests unless the operator
    // asked for virtual-hosted style explicitly: most S3-compatible servers expect path style.
    let endpoint_given = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some();
    let style_given = std::env::var_os("AWS_VIRTUAL_HOSTED_STYLE_REQUEST").is_some()
        || options.contains_key("aws_virtual_hosted_style_request")
        || options.contains_key("virtual_hosted_style_request");
    if endpoint_given && !style_given {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    // object_store sends no flexible checksums (x-amz-checksum-*) unless a checksum algorithm
    // is configured, so S3-compatible stores that reject the AWS SDKs' default CRC checksums
    // (rqlite #2699) are fine; we deliberately leave it unset.
    let store = builder.build().map_err(BuildError::Store)?;
    Ok(Arc::new(store))
}

/// `scheme://bucket/prefix`, or `scheme://bucket` for an empty prefix.
fn cloud_label(scheme: &str, bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}/{prefix}")
    }
}

/// The URL with anything that could be a secret removed: userinfo, query and fragment.
pub(crate) fn redact(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    match url.find("://") {
        Some(scheme_end) => {
            let rest = &url[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{}://<redacted>@{}", &url[..scheme_end], &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes_and_hides_secrets() {
        let d = Destination::parse("memory://").unwrap();
        assert_eq!(d.to_string(), "memory://");

        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b");
        let d = Destination::parse(&format!("file://{}", target.display())).unwrap();
        assert!(target.is_dir());
        assert_eq!(d.to_string(), format!("file://{}", target.display()));

        let d = Destination::parse_with_options(
            "s3://bucket/some/prefix/",
            [
                ("aws_endpoint", "http://127.0.0.1:9"),
                ("aws_access_key_id", "AKIDSECRETID"),
                ("aws_secret_access_key", "supersecretvalue"),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
            ],
        )
        .unwrap();
        assert_eq!(d.to_string(), "s3://bucket/some/prefix");
        let root =
            Destination::parse_with_options("s3://bucket/", [("aws_region", "eu-west-1")]).unwrap();
        assert_eq!(root.to_string(), "s3://bucket");
        assert!(root.prefix().is_root());
        assert_eq!(d.prefix().as_ref(), "some/prefix");
        let debug = format!("{d:?}");
        assert!(
            !debug.contains("supersecret") && !debug.contains("AKIDSECRET"),
            "{debug}"
        );

        let err = Destination::parse("s3://AKID:hunter2@bucket/x").unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains("hunter2") && !msg.contains("AKID"), "{msg}");
        assert!(msg.contains("environment"), "{msg}");

        let err = Destination::parse("s3://bucket/x?secret=abc").unwrap_err();
        assert!(!err.to_string().contains("abc"), "{err}");

        let err = Destination::parse("ftp://host/x").unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
        let err = Destination::parse("file://relative/dir").unwrap_err();
        assert!(err.to_string().contains("three slashes"), "{err}");
        let err = Destination::parse("s3:///nobucket").unwrap_err();
        assert!(err.to_string().contains("no bucket"), "{err}");
        let err = Destination::parse_with_options("s3://b/p", [("nonsense_key", "1")]).unwrap_err();
        assert!(err.to_string().contains("unknown S3 option"), "{err}");
        Destination::parse_with_options(
            "s3://b/p",
            [("max_retries", "1"), ("retry_timeout_secs", "0.5")],
        )
        .unwrap();
        let err =
            Destination::parse_with_options("s3://b/p", [("max_retries", "many")]).unwrap_err();
        assert!(err.to_string().contains("max_retries"), "{err}");

        // Google and Azure build offline from options (credentials are used per request).
        let d = Destination::parse_with_options(
            "gs://bucket/gp",
            [("google_bearer_token", "ya29.secret-bearer-token")],
        )
        .unwrap();
        assert_eq!(d.to_string(), "gs://bucket/gp");
        assert!(!format!("{d:?}").contains("secret-bearer"));
        let d = Destination::parse_with_options(
            "az://container/ap",
            [
                ("azure_storage_account_name", "acct"),
                ("azure_storage_account_key", "c2VjcmV0LWF6dXJlLWtleQ=="),
            ],
        )
        .unwrap();
        assert_eq!(d.to_string(), "az://container/ap");
        assert!(!format!("{d:?}").contains("c2VjcmV0"));
        let err = Destination::parse_with_options("gs://b/p", [("nonsense", "1")]).unwrap_err();
        assert!(err.to_string().contains("unknown GCS option"), "{err}");
    }

    #[test]
    fn redacts() {
        assert_eq!(redact("s3://k:s@bucket/p?x=1"), "s3://<redacted>@bucket/p");
        assert_eq!(redact("s3://bucket/p@x"), "s3://bucket/p@x");
        assert_eq!(redact("nonsense"), "nonsense");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("a%2").as_deref(), Some("a%2"));
        assert_eq!(percent_decode("%zz"), None);
    }
}
