//! age encryption settings (for backups) and identities (for verify and restore).

use std::fmt;

use age::secrecy::{ExposeSecret, SecretString};

use crate::error::BackupError;
use crate::manifest::{sha256_hex, EncryptionInfo, EncryptionScheme};

/// How a backup is encrypted. Nodes only need public keys for [`Encryption::Recipients`], so a
/// stolen node cannot read old backups.
#[derive(Clone)]
pub enum Encryption {
    /// age X25519 recipients (`age1...`); any one of their identities decrypts.
    Recipients(Vec<age::x25519::Recipient>),
    /// age passphrase (scrypt). Meant for passphrases a human chose; prefer recipients.
    Passphrase(SecretString),
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::Recipients(r) => f
                .debug_tuple("Recipients")
                .field(&r.iter().map(|r| r.to_string()).collect::<Vec<_>>())
                .finish(),
            Encryption::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
        }
    }
}

impl Encryption {
    /// Parses X25519 recipient strings (`age1...`), as `age-keygen` prints them. Surrounding
    /// whitespace is ignored. At least one is required.
    pub fn recipients<I, S>(recipients: I) -> Result<Encryption, BackupError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for (index, r) in recipients.into_iter().enumerate() {
            let text = r.as_ref().trim();
            let recipient = text.parse::<age::x25519::Recipient>().map_err(|reason| {
                BackupError::InvalidRecipient {
                    index,
                    // A recipient is a public key; still, show only a short head of it in
                    // case someone pasted a secret key by mistake.
                    recipient: shorten(text),
                    reason: reason.to_string(),
                }
            })?;
            parsed.push(recipient);
        }
        if parsed.is_empty() {
            return Err(BackupError::InvalidOptions {
                reason: "encryption with recipients needs at least one age1... public key".into(),
            });
        }
        Ok(Encryption::Recipients(parsed))
    }

    /// A passphrase (not empty).
    pub fn passphrase(passphrase: impl Into<String>) -> Result<Encryption, BackupError> {
        let passphrase: String = passphrase.into();
        if passphrase.is_empty() {
            return Err(BackupError::InvalidOptions {
                reason: "the backup passphrase is empty".into(),
            });
        }
        Ok(Encryption::Passphrase(SecretString::from(passphrase)))
    }

    /// What the manifest records: scheme and recipient fingerprints.
    pub fn info(&self) -> EncryptionInfo {
        match self {
            Encryption::Recipients(recipients) => EncryptionInfo {
                scheme: EncryptionScheme::AgeX25519,
                recipient_fingerprints: recipients
                    .iter()
                    .map(|r| recipient_fingerprint(&r.to_string()))
                    .collect(),
            },
            Encryption::Passphrase(_) => EncryptionInfo {
                scheme: EncryptionScheme::AgeScrypt,
                recipient_fingerprints: Vec::new(),
            },
        }
    }

    /// The age encryptor (runs scrypt for a passphrase: about a second of CPU; call it on a
    /// blocking thread).
    pub(crate) fn encryptor(&self) -> Result<age::Encryptor, String> {
        match self {
            Encryption::Recipients(recipients) => {
                age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| e.to_string())
            }
            Encryption::Passphrase(p) => Ok(age::Encryptor::with_user_passphrase(p.clone())),
        }
    }
}

/// sha256 (hex) of a recipient string: what manifests record instead of keys.
pub fn recipient_fingerprint(recipient: &str) -> String {
    sha256_hex(recipient.trim())
}

/// What decrypts a backup: the contents of an age identity file, or a passphrase.
#[derive(Clone)]
pub enum Identity {
    /// X25519 secret keys (`AGE-SECRET-KEY-1...`).
    Keys(Vec<age::x25519::Identity>),
    Passphrase(SecretString),
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Keys(keys) => f
                .debug_struct("Keys")
                .field(
                    "public",
                    &keys
                        .iter()
                        .map(|k| k.to_public().to_string())
                        .collect::<Vec<_>>(),
                )
                .finish(),
            Identity::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
        }
    }
}

impl Identity {
    /// Parses an age identity file: one `AGE-SECRET-KEY-1...` per line; blank lines and `#`
    /// comments (age-keygen writes some) are skipped. Errors name the line, never its content.
    pub fn from_identity_file(contents: &str) -> Result<Identity, BackupError> {
        let mut keys = Vec::new();
        for (n, line) in contents.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.parse::<age::x25519::Identity>().map_err(|_| {
                BackupError::InvalidIdentity {
                    reason: format!(
                        "line {} is not an X25519 secret key (plugin and SSH identities are not \
                         supported)",
                        n + 1
                    ),
                }
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(BackupError::InvalidIdentity {
                reason: "no AGE-SECRET-KEY-1 line found".into(),
            });
        }
        Ok(Identity::Keys(keys))
    }

    pub fn passphrase(passphrase: impl Into<String>) -> Result<Identity, BackupError> {
        let passphrase: String = passphrase.into();
        if passphrase.is_empty() {
            return Err(BackupError::InvalidIdentity {
                reason: "the passphrase is empty".into(),
            });
        }
        Ok(Identity::Passphrase(SecretString::from(passphrase)))
    }

    /// Fingerprints of the public keys of these identities (empty for a passphrase).
    pub fn fingerprints(&self) -> Vec<String> {
        match self {
            Identity::Keys(keys) => keys
                .iter()
                .map(|k| recipient_fingerprint(&k.to_public().to_string()))
                .collect(),
            Identity::Passphrase(_) => Vec::new(),
        }
    }

    pub(crate) fn age_identities(&self) -> Vec<Box<dyn age::Identity + Send>> {
        match self {
            Identity::Keys(keys) => keys
                .iter()
                .map(|k| Box::new(k.clone()) as Box<dyn age::Identity + Send>)
                .collect(),
            Identity::Passphrase(p) => {
                let id = age::scrypt::Identity::new(SecretString::from(p.expose_secret()));
                vec![Box::new(id)]
            }
        }
    }
}

fn shorten(text: &str) -> String {
    let head: String = text.chars().take(12).collect();
    if head.len() < text.len() {
        format!("{head}...")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_redacts() {
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        let enc = Encryption::recipients([format!(" {public}\n")]).unwrap();
        let info = enc.info();
        assert_eq!(info.scheme, EncryptionScheme::AgeX25519);
        assert_eq!(
            info.recipient_fingerprints,
            vec![recipient_fingerprint(&public)]
        );

        let secret = id.to_string();
        let file = format!(
            "# created: now\n# public key: {public}\n{}\n",
            secret.expose_secret()
        );
        let identity = Identity::from_identity_file(&file).unwrap();
        assert_eq!(identity.fingerprints(), info.recipient_fingerprints);
        assert!(!format!("{identity:?}").contains(secret.expose_secret()));

        let err = Encryption::recipients([secret.expose_secret()]).unwrap_err();
        assert!(!err.to_string().contains(secret.expose_secret()), "{err}");
        assert!(matches!(
            Identity::from_identity_file("# nothing\n"),
            Err(BackupError::InvalidIdentity { .. })
        ));
        let err = Identity::from_identity_file("AGE-SECRET-KEY-1NOPE\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(Encryption::recipients(Vec::<String>::new()).is_err());
        assert!(Encryption::passphrase("").is_err());
        let p = Encryption::passphrase("correct horse").unwrap();
        assert!(!format!("{p:?}").contains("horse"));
        assert_eq!(p.info().scheme, EncryptionScheme::AgeScrypt);
    }
}
