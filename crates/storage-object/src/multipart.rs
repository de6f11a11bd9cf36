//! The S3 multipart calls OpenDAL does not expose, made directly: uploads that stay open
//! across sessions for a resume (CreateMultipartUpload, UploadPart, ListParts,
//! ListMultipartUploads, AbortMultipartUpload) and server-side composition of an existing
//! object with new bytes (UploadPartCopy).
//!
//! Requests are signed with AWS SigV4 (`reqsign`) and sent with the same `reqwest` client
//! OpenDAL uses, so both share its connection pool and timeouts. Throttling (503 SlowDown,
//! 429) and server errors are retried with exponential backoff, a bounded number of times.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferroftp_backend::{StorageError, StorageErrorKind};
use serde::Deserialize;

use crate::error::{from_s3_status, is_retryable_status};

/// Attempts of one request before its error is reported (the first one included).
const ATTEMPTS: u32 = 4;
/// The first pause between attempts; doubled each time (100, 200, 400 ms).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// One part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// 1 to 10,000.
    pub(crate) number: u32,
    /// What CompleteMultipartUpload must quote.
    pub(crate) etag: String,
    /// Bytes.
    pub(crate) size: u64,
}

/// An open multipart upload found by [`S3Multipart::list_uploads`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpenUpload {
    /// Its full key.
    pub(crate) key: String,
    /// Its id.
    pub(crate) upload_id: String,
    /// When it was created.
    pub(crate) initiated: Option<SystemTime>,
}

/// Where the bucket is and who we are.
pub(crate) struct S3Endpoint {
    /// `http(s)://host[:port]`, without a trailing slash.
    pub(crate) endpoint: String,
    /// The signing region.
    pub(crate) region: String,
    /// The bucket (path-style addressing: `endpoint/bucket/key`).
    pub(crate) bucket: String,
    /// The access key id.
    pub(crate) access_key_id: String,
    /// The secret key.
    pub(crate) secret_access_key: String,
}

/// The direct S3 client for multipart uploads.
pub(crate) struct S3Multipart {
    client: reqwest::Client,
    bucket_url: String,
    bucket: String,
    signer: reqsign_core::Signer<reqsign_aws_v4::Credential>,
}

impl fmt::Debug for S3Multipart {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("S3Multipart")
            .field("bucket_url", &self.bucket_url)
            .finish_non_exhaustive()
    }
}

impl S3Multipart {
    pub(crate) fn new(client: reqwest::Client, endpoint: &S3Endpoint) -> Self {
        let credentials = reqsign_aws_v4::StaticCredentialProvider::new(
            &endpoint.access_key_id,
            &endpoint.secret_access_key,
        );
        let signer = reqsign_core::Signer::new(
            reqsign_core::Context::new(),
            credentials,
            reqsign_aws_v4::RequestSigner::new("s3", &endpoint.region),
        );
        Self {
            client,
            bucket_url: format!(
                "{}/{}",
                endpoint.endpoint.trim_end_matches('/'),
                encode(&endpoint.bucket, false)
            ),
            bucket: endpoint.bucket.clone(),
            signer,
        }
    }

    /// CreateMultipartUpload: a new upload for `key`, returning its id.
    pub(crate) async fn create(&self, key: &str) -> Result<String, StorageError> {
        let what = format!("starting a multipart upload of {key}");
        let body = self
            .request(
                http::Method::POST,
                key,
                &[("uploads", "")],
                &[],
                Bytes::new(),
                &what,
            )
            .await?;
        let result: InitiateResult = parse_xml(&body, &what)?;
        Ok(result.upload_id)
    }

    /// UploadPart: part `number` of `upload_id`.
    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<Part, StorageError> {
        let what = format!("uploading part {number} of {key}");
        let size = data.len() as u64;
        let number_text = number.to_string();
        let query = [
            ("partNumber", number_text.as_str()),
            ("uploadId", upload_id),
        ];
        let response = self
            .send(http::Method::PUT, key, &query, &[], data, &what)
            .await?;
        let etag = response
            .headers()
            .get(http::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                StorageError::new(StorageErrorKind::Transient, format!("{what}: no ETag"))
            })?
            .to_owned();
        Ok(Part { number, etag, size })
    }

    /// UploadPartCopy: part `number` of `upload_id` is bytes `first..=last` of the object
    /// `source_key`, copied inside the store.
    pub(crate) async fn copy_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        source_key: &str,
        range: (u64, u64),
    ) -> Result<Part, StorageError> {
        let (first, last) = range;
        let what = format!("copying bytes {first}-{last} of {source_key} as part {number}");
        let number_text = number.to_string();
        let query = [
            ("partNumber", number_text.as_str()),
            ("uploadId", upload_id),
        ];
        let source = format!(
            "/{}/{}",
            encode(&self.bucket, false),
            encode(source_key, true)
        );
        let source_range = format!("bytes={first}-{last}");
        let headers = [
            ("x-amz-copy-source", source.as_str()),
            ("x-amz-copy-source-range", source_range.as_str()),
        ];
        let body = self
            .request(
                http::Method::PUT,
                key,
                &query,
                &headers,
                Bytes::new(),
                &what,
            )
            .await?;
        let result: CopyPartResult = parse_xml(&body, &what)?;
        Ok(Part {
            number,
            etag: result.etag,
            size: last - first + 1,
        })
    }

    /// CompleteMultipartUpload: the parts, in order, become the object `key`, replacing
    /// whatever was there in one step.
    pub(crate) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> Result<(), StorageError> {
        let what = format!("completing the multipart upload of {key}");
        let mut xml = String::from("<CompleteMultipartUpload>");
        for part in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                part.number,
                escape_xml(&part.etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let body = self
            .request(
                http::Method::POST,
                key,
                &[("uploadId", upload_id)],
                &[],
                Bytes::from(xml),
                &what,
            )
            .await?;
        // S3 may answer 200 and report the failure in the body (it has already sent the
        // status when the assembly fails).
        if let Ok(error) = quick_xml::de::from_reader::<_, ErrorBody>(&body[..]) {
            return Err(from_s3_status(500, &error.code, &what));
        }
        Ok(())
    }

    /// AbortMultipartUpload: its parts are discarded. An upload already gone is not an error.
    pub(crate) async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        let what = format!("aborting the multipart upload of {key}");
        match self
            .request(
                http::Method::DELETE,
                key,
                &[("uploadId", upload_id)],
                &[],
                Bytes::new(),
                &what,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.kind == StorageErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// ListParts: every part of `upload_id`, in order.
    pub(crate) async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<Part>, StorageError> {
        let what = format!("listing the parts of {key}");
        let mut parts = Vec::new();
        let mut marker = String::new();
        // At most 10,000 parts, 1,000 a page: the bound is generous.
        for _ in 0..20 {
            let mut query = vec![("uploadId", upload_id)];
            if !marker.is_empty() {
                query.push(("part-number-marker", marker.as_str()));
            }
            let body = self
                .request(http::Method::GET, key, &query, &[], Bytes::new(), &what)
                .await?;
            let page: ListPartsResult = parse_xml(&body, &what)?;
            parts.extend(page.parts.into_iter().map(|part| Part {
                number: part.number,
                etag: part.etag,
                size: part.size,
            }));
            match (page.is_truncated, page.next_marker) {
                (true, Some(next)) if !next.is_empty() => marker = next,
                _ => break,
            }
        }
        parts.sort_by_key(|part| part.number);
        Ok(parts)
    }

    /// ListMultipartUploads: the open uploads whose keys start with `prefix`, every page.
    /// `limit` bounds how many are returned (the expiry reads them in passes).
    pub(crate) async fn list_uploads(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<OpenUpload>, StorageError> {
        let what = format!("listing the open multipart uploads under {prefix:?}");
        let mut uploads = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        while uploads.len() < limit {
            let mut query = vec![("uploads", ""), ("prefix", prefix)];
            if !key_marker.is_empty() {
                query.push(("key-marker", key_marker.as_str()));
                query.push(("upload-id-marker", id_marker.as_str()));
            }
            let body = self
                .request(http::Method::GET, "", &query, &[], Bytes::new(), &what)
                .await?;
            let page: ListUploadsResult = parse_xml(&body, &what)?;
            uploads.extend(page.uploads.into_iter().map(|upload| OpenUpload {
                key: upload.key,
                upload_id: upload.upload_id,
                initiated: upload.initiated.as_deref().and_then(parse_time),
            }));
            match (page.is_truncated, page.next_key_marker) {
                (true, Some(next)) if !next.is_empty() && next != key_marker => {
                    key_marker = next;
                    id_marker = page.next_upload_id_marker.unwrap_or_default();
                }
                _ => break,
            }
        }
        uploads.truncate(limit);
        Ok(uploads)
    }

    /// The open uploads of exactly `key`, oldest first.
    pub(crate) async fn uploads_of(&self, key: &str) -> Result<Vec<OpenUpload>, StorageError> {
        let mut uploads: Vec<OpenUpload> = self
            .list_uploads(key, 10_000)
            .await?
            .into_iter()
            .filter(|upload| upload.key == key)
            .collect();
        uploads.sort_by_key(|upload| upload.initiated);
        Ok(uploads)
    }

    async fn request(
        &self,
        method: http::Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Bytes,
        what: &str,
    ) -> Result<Bytes, StorageError> {
        let response = self.send(method, key, query, headers, body, what).await?;
        response.bytes().await.map_err(|error| {
            StorageError::new(
                StorageErrorKind::Transient,
                format!("{what}: reading the answer"),
            )
            .with_source(error)
        })
    }

    /// Sends one signed request, retrying throttling and server errors with backoff, and
    /// returns the successful response.
    async fn send(
        &self,
        method: http::Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Bytes,
        what: &str,
    ) -> Result<reqwest::Response, StorageError> {
        let url = self.url(key, query);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let request = self
                .signed(&method, &url, headers, body.clone(), what)
                .await?;
            let error = match self.client.execute(request).await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.bytes().await.unwrap_or_default();
                    let code = quick_xml::de::from_reader::<_, ErrorBody>(&text[..])
                        .map(|error| error.code)
                        .unwrap_or_default();
                    let error = from_s3_status(status, &code, what);
                    if !is_retryable_status(status) {
                        return Err(error);
                    }
                    error
                }
                Err(error) => StorageError::new(StorageErrorKind::Transient, what.to_owned())
                    .with_source(error),
            };
            if attempt >= ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(attempt, %error, "S3 request failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn signed(
        &self,
        method: &http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        what: &str,
    ) -> Result<reqwest::Request, StorageError> {
        let local = |error: &dyn fmt::Display| {
            StorageError::new(StorageErrorKind::Local, format!("{what}: {error}"))
        };
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .header(http::header::CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let (mut parts, ()) = builder
            .body(())
            .map_err(|error| local(&error))?
            .into_parts();
        self.signer
            .sign(&mut parts, None)
            .await
            .map_err(|error| local(&error))?;
        let request = http::Request::from_parts(parts, body);
        reqwest::Request::try_from(request).map_err(|error| local(&error))
    }

    fn url(&self, key: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}/{}", self.bucket_url, encode(key, true));
        let mut separator = '?';
        for (name, value) in query {
            url.push(separator);
            url.push_str(&encode(name, false));
            url.push('=');
            url.push_str(&encode(value, false));
            separator = '&';
        }
        url
    }
}

/// RFC 3986 percent-encoding as SigV4 wants it: every byte but the unreserved characters
/// (`A-Z a-z 0-9 - _ . ~`), and `/` when `keep_slash` (object keys in paths).
pub(crate) fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An RFC 3339 time as S3 writes it (`2026-12-06T05:00:00.000Z`).
fn parse_time(text: &str) -> Option<SystemTime> {
    let timestamp: opendal::raw::Timestamp = text.parse().ok()?;
    Some(timestamp.into())
}

fn parse_xml<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, StorageError> {
    quick_xml::de::from_reader(body).map_err(|error| {
        StorageError::new(
            StorageErrorKind::Transient,
            format!("{what}: unexpected answer"),
        )
        .with_source(error)
    })
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code")]
    code: String,
}

#[derive(Deserialize)]
struct InitiateResult {
    #[serde(rename = "UploadId")]
    upload_id: String,
}

#[derive(Deserialize)]
struct CopyPartResult {
    #[serde(rename = "ETag")]
    etag: String,
}

#[derive(Deserialize)]
struct ListPartsResult {
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextPartNumberMarker")]
    next_marker: Option<String>,
    #[serde(rename = "Part", default)]
    parts: Vec<ListedPart>,
}

#[derive(Deserialize)]
struct ListedPart {
    #[serde(rename = "PartNumber")]
    number: u32,
    #[serde(rename = "ETag")]
    etag: String,
    #[serde(rename = "Size")]
    size: u64,
}

#[derive(Deserialize)]
struct ListUploadsResult {
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextKeyMarker")]
    next_key_marker: Option<String>,
    #[serde(rename = "NextUploadIdMarker")]
    next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload", default)]
    uploads: Vec<ListedUpload>,
}

#[derive(Deserialize)]
struct ListedUpload {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "UploadId")]
    upload_id: String,
    #[serde(rename = "Initiated")]
    initiated: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_for_sigv4() {
        assert_eq!(encode("a/b c+%é~", true), "a/b%20c%2B%25%C3%A9~");
        assert_eq!(encode("a/b", false), "a%2Fb");
    }

    #[test]
    fn list_answers_parse() {
        let parts = br#"<?xml version="1.0" encoding="UTF-8"?>
            <ListPartsResult><Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId>
            <IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker>
            <Part><PartNumber>2</PartNumber><ETag>"e2"</ETag><Size>5</Size></Part>
            <Part><PartNumber>1</PartNumber><ETag>"e1"</ETag><Size>8388608</Size></Part>
            </ListPartsResult>"#;
        let page: ListPartsResult = parse_xml(parts, "x").unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_marker.as_deref(), Some("2"));
        assert_eq!(page.parts.len(), 2);
        assert_eq!(page.parts[1].size, 8_388_608);

        let uploads = br#"<ListMultipartUploadsResult><Bucket>b</Bucket>
            <IsTruncated>false</IsTruncated>
            <Upload><Key>t/a</Key><UploadId>1</UploadId><Initiated>2026-12-06T05:00:00.000Z</Initiated></Upload>
            </ListMultipartUploadsResult>"#;
        let page: ListUploadsResult = parse_xml(uploads, "x").unwrap();
        assert_eq!(page.uploads[0].key, "t/a");
        assert!(parse_time(page.uploads[0].initiated.as_deref().unwrap()).is_some());

        let empty = br#"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        let page: ListUploadsResult = parse_xml(empty, "x").unwrap();
        assert!(page.uploads.is_empty());
    }

    #[test]
    fn an_error_body_is_recognised() {
        let body = br#"<Error><Code>InvalidPart</Code><Message>m</Message></Error>"#;
        let error: ErrorBody = quick_xml::de::from_reader(&body[..]).unwrap();
        assert_eq!(error.code, "InvalidPart");
        let fine =
            br#"<CompleteMultipartUploadResult><ETag>"x"</ETag></CompleteMultipartUploadResult>"#;
        assert!(quick_xml::de::from_reader::<_, ErrorBody>(&fine[..]).is_err());
    }
}
