//! The shim's one error type, mapped once to the ttrpc status containerd sees.

use containerd_shim::protos::ttrpc;

pub type Result<T> = std::result::Result<T, Error>;

/// What a runsc failure means for the container it was about, read once from runsc's words
/// where runsc is called (runsc.rs), never again by callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunscFailure {
    /// runsc has no state for it (removed, e.g. by an operator's `runsc delete --force`).
    Gone,
    /// Its sandbox has stopped or is stopping: an exit is on its way.
    NotRunning,
    /// Anything else: runsc refused.
    Refused,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// runsc refused; `message` is runsc's own words, `failure` what they mean.
    #[error("runsc {command} failed: {message}")]
    Runsc { command: String, message: String, failure: RunscFailure },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// The container (or its sandbox) is gone or going: its exit is, or was, published anyway.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Runsc { failure: RunscFailure::Gone | RunscFailure::NotRunning, .. })
    }

    fn code(&self) -> ttrpc::Code {
        match self {
            Error::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            Error::NotFound(_) => ttrpc::Code::NOT_FOUND,
            Error::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => ttrpc::Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => ttrpc::Code::UNIMPLEMENTED,
            Error::DeadlineExceeded(_) => ttrpc::Code::DEADLINE_EXCEEDED,
            // What clients check before they clean up, as with runc's shim.
            Error::Runsc { failure: RunscFailure::Gone, .. } => ttrpc::Code::NOT_FOUND,
            Error::Runsc { failure: RunscFailure::NotRunning, .. } => ttrpc::Code::FAILED_PRECONDITION,
            Error::Runsc { .. } | Error::Io { .. } | Error::Other(_) => ttrpc::Code::UNKNOWN,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_runsc_no_longer_knows_is_not_found_as_with_runc() {
        // What runsc says after an operator's `runsc delete --force`.
        let message = "loading container: file does not exist".to_string();
        let failure = crate::runsc::classify(&message);
        let e: ttrpc::Error = Error::Runsc { command: "kill".into(), message, failure }.into();
        let ttrpc::Error::RpcStatus(status) = e else { panic!("{e:?}") };
        assert_eq!(status.code(), ttrpc::Code::NOT_FOUND);
    }
}
