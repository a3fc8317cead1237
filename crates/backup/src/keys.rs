//! The keys of backups as an operator gives them on the command line: age recipients or a
//! passphrase to encrypt with, an age identity file or a passphrase to decrypt with. A
//! passphrase is never given itself, only the NAME of the environment variable that holds it
//! (`--passphrase-env VAR`), so it appears in no process list or shell history.

use std::path::{Path, PathBuf};

use crate::{BackupError, Encryption, Identity};

/// Why the keys the operator named cannot be used. The messages never echo a passphrase.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "give either --recipient (age public keys) or --passphrase-env, not both: a backup is \
         encrypted one way"
    )]
    RecipientsAndPassphrase,
    #[error("cannot read the age identity file {}", path.display())]
    ReadIdentityFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the age identity file {}: {reason}", path.display())]
    BadIdentityFile {
        path: PathBuf,
        reason: Box<BackupError>,
    },
    #[error("{shown} is empty; put the passphrase in it")]
    EmptyPassphrase { shown: String },
    #[error(
        "{shown} is not set; --passphrase-env takes the NAME of a variable holding the \
         passphrase (e.g. `export RAFTLITE_BACKUP_PASSPHRASE=...` and \
         `--passphrase-env RAFTLITE_BACKUP_PASSPHRASE`)"
    )]
    PassphraseUnset { shown: String },
    #[error("{shown} does not hold valid UTF-8; age passphrases are text")]
    PassphraseNotUnicode { shown: String },
    /// The engine refused the key; its message is complete (no source chain repeated).
    #[error("{0}")]
    Engine(Box<BackupError>),
}

/// `--recipient`s or `--passphrase-env`, never both; `None` for neither.
pub fn encryption_from(
    recipients: &[String],
    passphrase_env: Option<&str>,
) -> Result<Option<Encryption>, KeyError> {
    match (recipients.is_empty(), passphrase_env) {
        (true, None) => Ok(None),
        (false, Some(_)) => Err(KeyError::RecipientsAndPassphrase),
        (false, None) => Encryption::recipients(recipients)
            .map(Some)
            .map_err(|e| KeyError::Engine(Box::new(e))),
        (true, Some(var)) => {
            let passphrase = passphrase_from_env(var)?;
            Encryption::passphrase(passphrase)
                .map(Some)
                .map_err(|e| KeyError::Engine(Box::new(e)))
        }
    }
}

/// What opens encrypted backups: an age identity file, or a passphrase from the environment
/// variable `passphrase_env`; `None` for neither.
pub fn identity_from(
    identity_file: Option<&Path>,
    passphrase_env: Option<&str>,
) -> Result<Option<Identity>, KeyError> {
    match (identity_file, passphrase_env) {
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| KeyError::ReadIdentityFile {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(Some(Identity::from_identity_file(&text).map_err(
                |reason| KeyError::BadIdentityFile {
                    path: path.to_path_buf(),
                    reason: Box::new(reason),
                },
            )?))
        }
        (None, Some(var)) => Ok(Some(
            Identity::passphrase(passphrase_from_env(var)?)
                .map_err(|e| KeyError::Engine(Box::new(e)))?,
        )),
        (None, None) => Ok(None),
    }
}

/// The passphrase held by the environment variable NAMED `var`.
pub fn passphrase_from_env(var: &str) -> Result<String, KeyError> {
    // Someone may pass the passphrase itself instead of a variable's name: only echo names that
    // look like conventional variable names.
    let shown = if !var.is_empty()
        && var
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        format!("the environment variable {var}")
    } else {
        "the environment variable named by --passphrase-env".to_string()
    };
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        Ok(_) => Err(KeyError::EmptyPassphrase { shown }),
        Err(std::env::VarError::NotPresent) => Err(KeyError::PassphraseUnset { shown }),
        Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::PassphraseNotUnicode { shown }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_choices() {
        assert!(encryption_from(&[], None).unwrap().is_none());
        let err = encryption_from(&["age1x".to_string()], Some("X")).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        // A passphrase passed instead of a variable name is not echoed.
        let err = encryption_from(&[], Some("my secret words")).unwrap_err();
        assert!(!err.to_string().contains("my secret"), "{err}");
        let err = encryption_from(&[], Some("RAFTLITE_TEST_SURELY_UNSET_VAR")).unwrap_err();
        assert!(
            err.to_string()
                .contains("RAFTLITE_TEST_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
    }
}
