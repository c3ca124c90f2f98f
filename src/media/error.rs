//! Why a media request was refused. `api/error.rs` turns these into HTTP statuses.

/// Errors of the media plane, each with the fix in its message where there is one.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// The SDP could not be parsed (`400`).
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    /// The SDP parsed but cannot be used: no media we can take, unsupported codecs (`422`).
    #[error("unusable SDP: {0}")]
    UnusableSdp(String),
    /// No such session on this node (`404`).
    #[error(
        "no session {0} on this node; it was closed or never existed, start a new one with POST"
    )]
    NoSession(String),
    /// PATCH without If-Match (`428`).
    #[error(
        "If-Match is required: send the ETag from the POST response, or \"*\" for an ICE restart"
    )]
    PreconditionRequired,
    /// PATCH with a stale entity tag (`412`).
    #[error("ETag does not match the session's current one; an ICE restart has happened since")]
    PreconditionFailed,
    /// The trickle body could not be used (`400`).
    #[error("bad sdpfrag: {0}")]
    BadSdpFrag(String),
    /// No worker can take the session (`503`).
    #[error("media workers are unavailable: {0}")]
    Unavailable(String),
}
