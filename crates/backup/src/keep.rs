//! The retention rules an operator gives `raftlite backup prune` (`--keep-last N`, ...,
//! `--keep-within 30d`), checked and turned into a [`RetentionPolicy`].

use crate::{parse_duration, RetentionPolicy};

/// The `--keep-*` rules as given; `keep_within` still text (`48h`, `30d`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepRules {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_within: Option<String>,
}

/// Why the rules describe no usable policy.
#[derive(Debug, thiserror::Error)]
pub enum KeepRulesError {
    #[error("--keep-within: {0}")]
    KeepWithin(String),
    #[error(
        "give at least one --keep-* rule (--keep-last, --keep-hourly, --keep-daily, \
         --keep-weekly, --keep-monthly, --keep-within); prune never guesses what to delete"
    )]
    NoRule,
}

impl KeepRules {
    /// The retention policy the rules describe; refuses none at all (what `backup prune` needs:
    /// it never guesses what to delete).
    pub fn policy(&self) -> Result<RetentionPolicy, KeepRulesError> {
        let policy = self.as_given()?;
        if policy.is_empty() {
            return Err(KeepRulesError::NoRule);
        }
        Ok(policy)
    }

    /// The retention policy exactly as given, even without a rule (the server replaces "no
    /// rule at all" with its default policy itself).
    pub fn as_given(&self) -> Result<RetentionPolicy, KeepRulesError> {
        let keep_within = self
            .keep_within
            .as_deref()
            .map(|text| parse_duration(text).map_err(KeepRulesError::KeepWithin))
            .transpose()?;
        Ok(RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_within,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_a_policy_and_none_is_refused() {
        let rules = KeepRules {
            keep_daily: Some(7),
            keep_within: Some("48h".into()),
            ..KeepRules::default()
        };
        let policy = rules.policy().unwrap();
        assert_eq!(policy.keep_daily, Some(7));
        assert_eq!(
            policy.keep_within,
            Some(std::time::Duration::from_secs(48 * 3600))
        );
        let err = KeepRules::default().policy().unwrap_err();
        assert!(err.to_string().contains("at least one --keep-*"), "{err}");
        let bad = KeepRules {
            keep_within: Some("soon".into()),
            ..KeepRules::default()
        };
        assert!(bad
            .policy()
            .unwrap_err()
            .to_string()
            .starts_with("--keep-within: "));
    }
}
