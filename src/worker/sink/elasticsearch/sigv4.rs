//! AWS Signature Version 4 for Amazon OpenSearch Service: managed domains
//! (`es`) and serverless collections (`aoss`), with the workers' AWS
//! credentials (IRSA, EKS Pod Identity or the default chain).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

/// Signs requests for one region and service.
pub struct Signer {
    credentials: SharedCredentialsProvider,
    region: String,
    service: &'static str,
}

impl Signer {
    /// A signer with these credentials, for `service` (`es` or `aoss`) in `region`.
    pub fn new(
        credentials: SharedCredentialsProvider,
        region: &str,
        service: &'static str,
    ) -> Signer {
        Signer {
            credentials,
            region: region.to_owned(),
            service,
        }
    }

    /// The headers that sign a request (the credentials are cached and
    /// refreshed by their provider).
    pub async fn headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| format!("AWS credentials: {e}"))?;
        sign_at(
            method,
            url,
            headers,
            body,
            &credentials,
            &self.region,
            self.service,
            SystemTime::now(),
        )
    }
}

/// The headers that sign a request at `time` (pure): `authorization`,
/// `x-amz-date`, `x-amz-content-sha256` (OpenSearch Serverless requires it)
/// and, with temporary credentials, `x-amz-security-token`.
#[allow(clippy::too_many_arguments)] // the parts of a signature, each needed
pub fn sign_at(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bulk_request_is_signed_for_the_domain_region_and_service() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session".into()),
            None,
            "test",
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let headers = sign_at(
            "POST",
            "https://search-logs.us-east-1.es.amazonaws.com/_bulk",
            &[
                ("content-type", "application/x-ndjson"),
                ("content-encoding", "gzip"),
            ],
            b"{}\n",
            &credentials,
            "us-east-1",
            "es",
            at,
        )
        .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name} in {headers:?}"))
        };
        assert_eq!(get("x-amz-date"), "20150830T123600Z");
        assert_eq!(get("x-amz-security-token"), "session");
        // The SHA-256 of the body, as OpenSearch Serverless wants it.
        assert_eq!(
            get("x-amz-content-sha256"),
            "ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356"
        );
        let authorization = get("authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/es/aws4_request, \
                 SignedHeaders=content-encoding;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
                 Signature="
            ),
            "{authorization}"
        );
        let aoss = sign_at(
            "POST",
            "https://abc.us-east-1.aoss.amazonaws.com/_bulk",
            &[],
            b"",
            &credentials,
            "us-east-1",
            "aoss",
            at,
        )
        .unwrap();
        assert!(
            aoss.iter()
                .any(|(k, v)| k == "authorization" && v.contains("/us-east-1/aoss/aws4_request"))
        );
    }
}
