//! One mapping of every error to the MSN error code a client gets: the store's refusals, the
//! backends' failures, and (for the local backend, whose store refusals travel through the
//! backend interface) the store's errors as backend errors. Protocol errors carry their code
//! from the parser (`crate::protocol::ParseError`).

use msngate_bridge_api::BackendError;
use tracing::warn;

use crate::protocol::ErrorCode;
use crate::store::StoreError;

/// The reason a store failure carries through the backend interface (the local backend's), so
/// it is answered as one, `501`, wherever it comes from.
const STORE_FAILURE: &str = "database error";

/// The MSN error for a failed backend action.
pub fn error_code(error: &BackendError) -> ErrorCode {
    match error {
        BackendError::BadCredentials => ErrorCode::AuthenticationFailed,
        BackendError::InvalidContact => ErrorCode::InvalidUsername,
        BackendError::NoSuchContact => ErrorCode::InvalidUser,
        BackendError::AlreadyThere => ErrorCode::AlreadyThere,
        BackendError::NotThere => ErrorCode::NotOnList,
        BackendError::Conflict => ErrorCode::AlreadyInOppositeList,
        BackendError::ListFull => ErrorCode::ListFull,
        BackendError::NotReachable => ErrorCode::NotOnline,
        BackendError::Unsupported | BackendError::Rejected(_) => ErrorCode::InvalidParameter,
        BackendError::Unreachable(_) | BackendError::Disconnected => ErrorCode::ServerUnavailable,
        BackendError::Internal(reason) if reason == STORE_FAILURE => ErrorCode::DbServer,
        BackendError::Internal(_) => ErrorCode::InternalServer,
    }
}

/// The MSN error for a store error.
pub fn store_error_code(error: &StoreError) -> ErrorCode {
    match error {
        StoreError::NoSuchAccount | StoreError::NotLinked => ErrorCode::InvalidUser,
        StoreError::AccountExists | StoreError::AlreadyThere => ErrorCode::AlreadyThere,
        StoreError::NotOnList => ErrorCode::NotOnList,
        StoreError::InOppositeList => ErrorCode::AlreadyInOppositeList,
        StoreError::ListFull => ErrorCode::ListFull,
        StoreError::AlreadyInMode => ErrorCode::AlreadyInMode,
        StoreError::ReverseListIsServerOnly => ErrorCode::InvalidParameter,
        StoreError::NoSuchGroup => ErrorCode::InvalidGroup,
        StoreError::GroupExists => ErrorCode::GroupExists,
        StoreError::TooManyGroups => ErrorCode::TooManyGroups,
        StoreError::NotInGroup => ErrorCode::NotInGroup,
        StoreError::GroupZero => ErrorCode::CannotRemoveGroupZero,
        StoreError::NewerSchema(_)
        | StoreError::Corrupt(_)
        | StoreError::Sqlite(_)
        | StoreError::Postgres(_)
        | StoreError::Unavailable(_) => {
            warn!(%error, "database error");
            ErrorCode::DbServer
        }
        StoreError::Closed => ErrorCode::ServerGoingDown,
    }
}

impl From<StoreError> for ErrorCode {
    fn from(e: StoreError) -> ErrorCode {
        store_error_code(&e)
    }
}

/// The bridges/api error for a store refusal, for a backend whose lists are the store (the
/// local backend); [`error_code`] then gives the MSN code.
pub fn store_backend_error(error: &StoreError) -> BackendError {
    match error {
        StoreError::NoSuchAccount | StoreError::NotLinked => BackendError::NoSuchContact,
        StoreError::AccountExists | StoreError::AlreadyThere => BackendError::AlreadyThere,
        StoreError::NotOnList => BackendError::NotThere,
        StoreError::InOppositeList => BackendError::Conflict,
        StoreError::ListFull => BackendError::ListFull,
        StoreError::AlreadyInMode
        | StoreError::ReverseListIsServerOnly
        | StoreError::NoSuchGroup
        | StoreError::GroupExists
        | StoreError::TooManyGroups
        | StoreError::NotInGroup
        | StoreError::GroupZero => BackendError::Unsupported,
        StoreError::Closed => BackendError::Disconnected,
        StoreError::NewerSchema(_)
        | StoreError::Corrupt(_)
        | StoreError::Sqlite(_)
        | StoreError::Postgres(_)
        | StoreError::Unavailable(_) => {
            warn!(%error, "database error");
            BackendError::Internal(STORE_FAILURE.into())
        }
    }
}
