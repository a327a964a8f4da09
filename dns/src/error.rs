//! The crate's one error type.

/// Everything that can go wrong building a zone or serving it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured zone name is not a valid DNS name.
    #[error("invalid zone name {name:?}: {reason}")]
    InvalidZoneName {
        /// The name as configured.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A name derived from the data (service, namespace, hostname, cluster id) is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// hickory-proto could not encode an answer.
    #[error("cannot encode the answer for {name}: {reason}")]
    Encode {
        /// The owner name.
        name: String,
        /// hickory-proto's reason.
        reason: String,
    },
    /// A socket operation of the server failed.
    #[error("{context}: {source}")]
    Io {
        /// What the server was doing.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
