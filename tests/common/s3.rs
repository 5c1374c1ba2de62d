//! The stack's S3 (SeaweedFS) as the S3 sink's tests read it.

use std::io::Read;

use serde_json::Value;

use super::stack;

/// A path-style client with the stack's credentials.
pub async fn client() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&stack().aws().await)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// One object the sink wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Its key.
    pub key: String,
    /// Its last record, from its metadata (`logsub-last`).
    pub last: Option<String>,
    /// Its `Content-Encoding`.
    pub encoding: Option<String>,
    /// Its documents, in order.
    pub docs: Vec<Value>,
}

/// Every object of `bucket`, in key order, gunzipped.
pub async fn objects(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<Object> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let listed = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        for object in listed.contents() {
            let key = object.key().expect("key").to_owned();
            let got = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("get");
            let last = got.metadata().and_then(|m| m.get("logsub-last")).cloned();
            let encoding = got.content_encoding().map(str::to_owned);
            let bytes = got.body.collect().await.expect("body").into_bytes();
            let mut text = String::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .expect("gunzip");
            let docs = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("NDJSON"))
                .collect();
            out.push(Object {
                key,
                last,
                encoding,
                docs,
            });
        }
        token = listed.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return out;
        }
    }
}
