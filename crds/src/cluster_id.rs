//! A validated cluster id.

use std::{fmt, str::FromStr};

/// Why a string is not a valid cluster id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterIdError {
    /// The id is the empty string.
    #[error("a cluster id must not be empty")]
    Empty,
    /// The id is longer than one DNS label.
    #[error("cluster id {id:?} is {len} characters long; a cluster id is at most 63 characters")]
    TooLong {
        /// The rejected id.
        id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The id has a character that is not a lowercase letter, a digit or `-`.
    #[error(
        "cluster id {id:?} contains {found:?}; a cluster id is one DNS label: lowercase letters, digits and '-' only{hint}"
    )]
    BadCharacter {
        /// The rejected id.
        id: String,
        /// The first character that is not allowed.
        found: char,
        /// Extra advice for the common mistakes (capitals, dots).
        hint: &'static str,
    },
    /// The id starts or ends with `-`.
    #[error("cluster id {id:?} must start and end with a lowercase letter or a digit")]
    BadEdge {
        /// The rejected id.
        id: String,
    },
}

/// The id of a cluster in a ClusterSet: a lowercase RFC 1123 DNS label of at most 63 characters.
///
/// KEP-2149 allows a DNS subdomain, but the id is also used as a label value
/// (`multicluster.kubernetes.io/source-cluster`), as `ServiceImport.status.clusters[].cluster` and as
/// one label of `<hostname>.<clusterid>.<svc>.<ns>.svc.clusterset.local`; only a single DNS label
/// works everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(String);

impl ClusterId {
    /// Validates `id`.
    pub fn new(id: impl Into<String>) -> Result<Self, ClusterIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ClusterIdError::Empty);
        }
        if id.len() > 63 {
            let len = id.len();
            return Err(ClusterIdError::TooLong { id, len });
        }
        if let Some(found) = id
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            let hint = if found.is_ascii_uppercase() {
                " (use lowercase)"
            } else if found == '.' {
                " (a dotted name is a DNS subdomain, not a label)"
            } else {
                ""
            };
            return Err(ClusterIdError::BadCharacter { id, found, hint });
        }
        if id.starts_with('-') || id.ends_with('-') {
            return Err(ClusterIdError::BadEdge { id });
        }
        Ok(Self(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClusterId {
    type Err = ClusterIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ClusterId {
    type Error = ClusterIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ClusterId> for String {
    fn from(id: ClusterId) -> Self {
        id.0
    }
}

impl AsRef<str> for ClusterId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ClusterId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ClusterId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(id: &str) -> String {
        ClusterId::new(id).unwrap_err().to_string()
    }

    #[test]
    fn accepts_lowercase_labels() {
        for id in [
            "a",
            "cluster-a",
            "0",
            "east-1",
            &"x".repeat(63),
            "4f2c1d3e-9b7a-4c1e-8f00-123456789abc",
        ] {
            assert_eq!(ClusterId::new(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn rejects_empty_with_a_message() {
        assert_eq!(err(""), "a cluster id must not be empty");
    }

    #[test]
    fn rejects_capitals_and_says_use_lowercase() {
        let msg = err("Cluster-A");
        assert!(msg.contains("'C'") && msg.contains("use lowercase"), "{msg}");
    }

    #[test]
    fn rejects_64_characters_and_says_the_limit() {
        let msg = err(&"a".repeat(64));
        assert!(
            msg.contains("64 characters") && msg.contains("at most 63"),
            "{msg}"
        );
    }

    #[test]
    fn rejects_dotted_ids_as_subdomains() {
        let msg = err("a.b");
        assert!(msg.contains("'.'") && msg.contains("not a label"), "{msg}");
    }

    #[test]
    fn rejects_leading_and_trailing_dash() {
        assert!(err("-a").contains("must start and end with a lowercase letter or a digit"));
        assert!(err("a-").contains("must start and end"));
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<ClusterId>("\"ok-1\"").is_ok());
        let e = serde_json::from_str::<ClusterId>("\"Not_OK\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("use lowercase"), "{e}");
    }
}
