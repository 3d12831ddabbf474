//! Which failed reads the mapping retries, as Lambda retries them, and
//! which stop it.

use aws_sdk_kinesis::error::ProvideErrorMetadata as _;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorError;

use crate::sources::kinesis::SourceError;

/// Whether polling again can get past a failed read. Throttles reach the
/// mapping only past `read.max_retries` (the poller backs them off itself):
/// that limit is the configuration's to set, so they stop it. Of the other
/// errors, only those that say the stream, the shard or its key is gone or
/// out of the role's reach can't heal; anything else (a 500, a timeout, a
/// dropped connection, an answer the SDK could not read) may pass.
pub(super) fn heals(error: &SourceError) -> bool {
    match error {
        SourceError::Throttled { .. } => false,
        SourceError::ExpiredIterator | SourceError::NoIterator { .. } => true,
        SourceError::Other { source, .. } => !cannot_heal(source.as_ref()),
    }
}

/// Looks through the error's sources for Kinesis's answer (the SDK error's
/// source is the operation's error).
fn cannot_heal(error: &(dyn std::error::Error + 'static)) -> bool {
    let refused = |code: Option<&str>| {
        matches!(
            code,
            Some(
                "ResourceNotFoundException"
                    | "AccessDeniedException"
                    | "KMSAccessDeniedException"
                    | "KMSNotFoundException"
                    | "KMSDisabledException"
                    | "KMSInvalidStateException"
                    | "KMSOptInRequired"
            )
        )
    };
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(e) = error.downcast_ref::<GetRecordsError>() {
            return refused(e.code())
                || e.is_resource_not_found_exception()
                || e.is_access_denied_exception()
                || e.is_kms_access_denied_exception()
                || e.is_kms_not_found_exception()
                || e.is_kms_disabled_exception()
                || e.is_kms_invalid_state_exception()
                || e.is_kms_opt_in_required();
        }
        if let Some(e) = error.downcast_ref::<GetShardIteratorError>() {
            return refused(e.code())
                || e.is_resource_not_found_exception()
                || e.is_access_denied_exception();
        }
        next = error.source();
    }
    false
}
