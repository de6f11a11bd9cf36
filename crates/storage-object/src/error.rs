//! Object-store errors to [`StorageError`]s, by meaning: the reply code follows from the
//! kind (NoSuchKey and AccessDenied 550, a full quota 552, throttling and outages 451).

use ferroftp_backend::{StorageError, StorageErrorKind};

/// An OpenDAL error, met while doing `what`.
pub(crate) fn from_opendal(error: opendal::Error, what: &str) -> StorageError {
    let kind = match error.kind() {
        opendal::ErrorKind::NotFound => StorageErrorKind::NotFound,
        opendal::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
        opendal::ErrorKind::IsADirectory => StorageErrorKind::IsADirectory,
        opendal::ErrorKind::NotADirectory => StorageErrorKind::NotADirectory,
        opendal::ErrorKind::AlreadyExists => StorageErrorKind::AlreadyExists,
        opendal::ErrorKind::RangeNotSatisfied => StorageErrorKind::InvalidRange,
        opendal::ErrorKind::Unsupported => StorageErrorKind::Unsupported,
        // Throttling, outages and timeouts: OpenDAL's retry layer has already retried them
        // with backoff; what reaches here is worth a "try again later" (451).
        _ => StorageErrorKind::Transient,
    };
    StorageError::new(kind, what.to_owned()).with_source(error)
}

/// An error of an S3 request made directly (the multipart calls), from its HTTP status and
/// the `<Code>` of its XML body.
pub(crate) fn from_s3_status(status: u16, code: &str, what: &str) -> StorageError {
    let kind = match (status, code) {
        (_, "NoSuchKey" | "NoSuchUpload" | "NoSuchBucket") | (404, _) => StorageErrorKind::NotFound,
        (_, "AccessDenied") | (403, _) => StorageErrorKind::PermissionDenied,
        (_, "InvalidRange") | (416, _) => StorageErrorKind::InvalidRange,
        (_, "EntityTooLarge") => StorageErrorKind::InsufficientSpace,
        (_, "NotImplemented") | (501, _) => StorageErrorKind::Unsupported,
        _ => StorageErrorKind::Transient,
    };
    let code = if code.is_empty() {
        "no error code"
    } else {
        code
    };
    StorageError::new(kind, format!("{what}: HTTP {status} ({code})"))
}

/// Whether a directly made S3 request is worth retrying: throttling (503 SlowDown, 429),
/// server errors, and request timeouts.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_codes_map_by_meaning() {
        let cases = [
            (404, "NoSuchKey", StorageErrorKind::NotFound),
            (404, "NoSuchUpload", StorageErrorKind::NotFound),
            (403, "AccessDenied", StorageErrorKind::PermissionDenied),
            (416, "InvalidRange", StorageErrorKind::InvalidRange),
            (503, "SlowDown", StorageErrorKind::Transient),
            (500, "InternalError", StorageErrorKind::Transient),
            (400, "EntityTooLarge", StorageErrorKind::InsufficientSpace),
        ];
        for (status, code, kind) in cases {
            assert_eq!(
                from_s3_status(status, code, "x").kind,
                kind,
                "{status} {code}"
            );
        }
        assert!(is_retryable_status(503));
        assert!(is_retryable_status(429));
        assert!(!is_retryable_status(404));
    }

    #[test]
    fn opendal_kinds_map_by_meaning() {
        let not_found = opendal::Error::new(opendal::ErrorKind::NotFound, "gone");
        assert_eq!(
            from_opendal(not_found, "x").kind,
            StorageErrorKind::NotFound
        );
        let throttled = opendal::Error::new(opendal::ErrorKind::RateLimited, "slow down");
        assert_eq!(
            from_opendal(throttled, "x").kind,
            StorageErrorKind::Transient
        );
    }
}
