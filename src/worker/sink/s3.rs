//! Amazon S3 and S3-compatible stores: one NDJSON object per shard batch, under
//! a key named by its first record, `<prefix><shardId>/<first>.json.gz`, with
//! its last record in the object's metadata (`x-amz-meta-logsub-last`).
//!
//! An object is written once (`If-None-Match: *`): a replay cuts its batches
//! where the objects already there end (see [`Sink::resume_cut`]) and finds
//! each written; a holder that lost its shard and a new one can never both
//! write objects from one record, and the one that finds another's object
//! where it did not expect one reads again from its checkpoint. So objects
//! never overlap.

use std::io::Write;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};

use super::{Batch, Batching, Delivered, Earlier, NdJson, ObjectMeta, Sink, SinkError, Span};
use crate::api::Compression;
use crate::aws::{AwsError, ErrorClass, classify};
use crate::contract::SequenceNumber;
use crate::contract::Template;
use crate::contract::config::S3Output;

/// Objects larger than this go up in parts.
const MULTIPART_FROM: usize = 16 << 20;
/// The size of each part but the last (S3 wants at least 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// The object metadata naming its last record.
const LAST: &str = "logsub-last";

/// How a write of an object ended.
enum Written {
    /// Stored.
    Stored,
    /// An object of that key is there already.
    Exists,
}

/// What a key holds.
enum AtKey {
    Nothing,
    /// An object logsub wrote, up to this record.
    Ours(SequenceNumber),
    /// An object without logsub's metadata.
    Foreign,
}

/// The S3 sink.
pub struct S3 {
    client: Client,
    bucket: String,
    prefix: Template,
    compression: Compression,
    region: String,
    namespace: String,
    name: String,
    kms_key_id: Option<String>,
    storage_class: Option<aws_sdk_s3::types::StorageClass>,
}

impl S3 {
    /// A sink writing to `config.bucket` through `client`, for the subscription
    /// `namespace`/`name`.
    pub fn new(client: Client, config: &S3Output, region: &str, namespace: &str, name: &str) -> S3 {
        S3 {
            client,
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            compression: config.compression,
            region: region.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kms_key_id: config.kms_key_id.clone(),
            storage_class: config
                .storage_class
                .as_deref()
                .map(aws_sdk_s3::types::StorageClass::from),
        }
    }

    /// The directory of a shard's objects for a first document.
    fn directory(&self, shard: &str, meta: &ObjectMeta) -> String {
        let prefix = render_prefix(
            &self.prefix,
            meta,
            &self.region,
            &self.namespace,
            &self.name,
        );
        format!("{prefix}{shard}/")
    }

    /// The key of the object that starts at record `first`.
    fn key_of(&self, shard: &str, first: &SequenceNumber, meta: &ObjectMeta) -> String {
        format!(
            "{}{first}{}",
            self.directory(shard, meta),
            extension(self.compression)
        )
    }

    /// The key of an object.
    pub fn key(&self, span: &Span) -> String {
        self.key_of(&span.shard, &span.first, &span.meta)
    }

    /// What is at `key`.
    async fn at_key(&self, key: &str) -> Result<AtKey, SinkError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(head
                .metadata()
                .and_then(|m| m.get(LAST))
                .and_then(|last| SequenceNumber::parse(last).ok())
                .map_or(AtKey::Foreign, AtKey::Ours)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(AtKey::Nothing),
            Err(e) => Err(failure(classify(e))),
        }
    }

    async fn put(
        &self,
        key: &str,
        last: &SequenceNumber,
        body: Vec<u8>,
    ) -> Result<Written, SinkError> {
        if body.len() >= MULTIPART_FROM {
            return self.put_in_parts(key, last, body).await;
        }
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .metadata(LAST, last.as_str())
            .content_type("application/x-ndjson")
            .body(ByteStream::from(body));
        if let Some(encoding) = content_encoding(self.compression) {
            put = put.content_encoding(encoding);
        }
        if let Some(kms) = &self.kms_key_id {
            put = put
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms);
        }
        if let Some(class) = &self.storage_class {
            put = put.storage_class(class.clone());
        }
        match put.send().await {
            Ok(_) => Ok(Written::Stored),
            Err(e) if precondition_failed(&e) => Ok(Written::Exists),
            Err(e) => Err(failure(classify(e))),
        }
    }

    /// Best effort: an upload left open is only storage, which a bucket
    /// lifecycle rule for incomplete uploads removes.
    async fn abort(&self, key: &str, upload: &str) {
        let _ = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .send()
            .await;
    }

    async fn put_in_parts(
        &self,
        key: &str,
        last: &SequenceNumber,
        body: Vec<u8>,
    ) -> Result<Written, SinkError> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .metadata(LAST, last.as_str())
            .content_type("application/x-ndjson");
        if let Some(encoding) = content_encoding(self.compression) {
            create = create.content_encoding(encoding);
        }
        if let Some(kms) = &self.kms_key_id {
            create = create
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms);
        }
        if let Some(class) = &self.storage_class {
            create = create.storage_class(class.clone());
        }
        let upload = create.send().await.map_err(|e| failure(classify(e)))?;
        let id = upload.upload_id().unwrap_or_default().to_owned();
        let mut parts = Vec::new();
        for (i, chunk) in body.chunks(PART_SIZE).enumerate() {
            let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let sent = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await;
            match sent {
                Ok(part) => parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_owned))
                        .build(),
                ),
                Err(e) => {
                    // Leave no orphaned parts behind; the whole object is retried.
                    self.abort(key, &id).await;
                    return Err(failure(classify(e)));
                }
            }
        }
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match completed {
            Ok(_) => Ok(Written::Stored),
            Err(e) if precondition_failed(&e) => {
                self.abort(key, &id).await;
                Ok(Written::Exists)
            }
            Err(e) => Err(failure(classify(e))),
        }
    }
}

/// The key prefix for an object whose first document is `meta`.
fn render_prefix(
    template: &Template,
    meta: &ObjectMeta,
    region: &str,
    namespace: &str,
    name: &str,
) -> String {
    template.render(meta.hour, |var| match var {
        "logGroup" => meta.log_group.trim_start_matches('/').to_owned(),
        "account" => meta.owner.clone(),
        "region" => region.to_owned(),
        "namespace" => namespace.to_owned(),
        "name" => name.to_owned(),
        _ => String::new(),
    })
}

fn extension(compression: Compression) -> &'static str {
    match compression {
        Compression::Gzip => ".json.gz",
        Compression::Zstd => ".json.zst",
        Compression::None => ".json",
    }
}

fn content_encoding(compression: Compression) -> Option<&'static str> {
    match compression {
        Compression::Gzip => Some("gzip"),
        Compression::Zstd => Some("zstd"),
        Compression::None => None,
    }
}

/// The object body: the documents, compressed.
fn body(batch: &Batch, compression: Compression) -> Result<Vec<u8>, std::io::Error> {
    match compression {
        Compression::None => Ok(batch.chunks().collect::<Vec<_>>().concat()),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(batch.byte_len() / 8),
                flate2::Compression::default(),
            );
            for chunk in batch.chunks() {
                gz.write_all(chunk)?;
            }
            gz.finish()
        }
        Compression::Zstd => {
            let mut zst = zstd::Encoder::new(Vec::with_capacity(batch.byte_len() / 8), 3)?;
            for chunk in batch.chunks() {
                zst.write_all(chunk)?;
            }
            zst.finish()
        }
    }
}

/// Whether S3 refused a conditional write: the object is there already.
fn precondition_failed<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> bool {
    e.as_service_error()
        .is_some_and(|e| e.code() == Some("PreconditionFailed"))
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
}

/// The last record of an object key `<dir><first>-<last>.json…` that starts
/// at `first`: the keys objects had before they were written once.
fn last_of(key: &str, directory: &str, first: &SequenceNumber) -> Option<SequenceNumber> {
    let name = key.strip_prefix(directory)?;
    let rest = name.strip_prefix(first.as_str())?.strip_prefix('-')?;
    let last = rest.split('.').next()?;
    SequenceNumber::parse(last).ok()
}

fn failure(e: AwsError) -> SinkError {
    let category = match e.class {
        ErrorClass::Throttled => "throttled",
        ErrorClass::Transient => "unavailable",
        ErrorClass::NotFound => "not_found",
        _ if e.code.contains("AccessDenied") || e.code == "Forbidden" => "denied",
        _ => "rejected",
    };
    SinkError::new(category, e.to_string())
}

impl Sink for S3 {
    type Encoder = NdJson;

    fn encoder(&self) -> &NdJson {
        &NdJson
    }

    async fn deliver(&self, batch: &Batch) -> Result<Delivered, SinkError> {
        let span = batch
            .span()
            .ok_or_else(|| SinkError::new("bug", "an S3 batch without its records"))?;
        if let Some(key) = &span.written {
            tracing::debug!(%key, "object written before from the same records; not again");
            return Ok(Delivered::default());
        }
        let key = self.key(span);
        let body =
            body(batch, self.compression).map_err(|e| SinkError::new("encode", e.to_string()))?;
        match self.put(&key, &span.last, body).await? {
            Written::Stored => {
                tracing::debug!(%key, documents = batch.len(), "object written");
                Ok(Delivered::default())
            }
            Written::Exists => match self.at_key(&key).await? {
                // A replay of an object written before: the same records, cut
                // where the earlier object ended.
                AtKey::Ours(last) if last == span.last => {
                    tracing::debug!(%key, "object written before; the replay ends where it did");
                    Ok(Delivered::default())
                }
                AtKey::Ours(_) => Ok(Delivered {
                    superseded: Some(format!(
                        "another holder of the shard wrote {key} meanwhile, to another record than {}",
                        span.last
                    )),
                    ..Delivered::default()
                }),
                // Gone since: write it again.
                AtKey::Nothing => Err(SinkError::new(
                    "unavailable",
                    format!("{key} was there, then was not"),
                )),
                // Neither replaced nor taken for ours: someone must move it.
                AtKey::Foreign => Err(SinkError::new(
                    "conflict",
                    format!(
                        "{key} holds an object logsub did not write (no {LAST} metadata); \
                         move it away and delivery goes on"
                    ),
                )),
            },
        }
    }

    fn concurrency(&self) -> usize {
        // Objects of different shards at once; each shard has one in flight.
        8
    }

    fn batching(&self) -> Batching {
        Batching::PerShard
    }

    async fn resume_cut(
        &self,
        shard: &str,
        first: &SequenceNumber,
        meta: &ObjectMeta,
    ) -> Result<Option<Earlier>, SinkError> {
        let key = self.key_of(shard, first, meta);
        if let AtKey::Ours(last) = self.at_key(&key).await? {
            return Ok(Some(Earlier { last, key }));
        }
        // Objects written before keys named the first record only.
        let directory = self.directory(shard, meta);
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{directory}{first}-"))
            .send()
            .await
            .map_err(|e| failure(classify(e)))?;
        Ok(listed
            .contents()
            .iter()
            .filter_map(|o| {
                let key = o.key()?;
                let last = last_of(key, &directory, first)?;
                Some(Earlier {
                    last,
                    key: key.to_owned(),
                })
            })
            .max_by(|a, b| a.last.cmp(&b.last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::UtcHour;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            hour: UtcHour::from_unix_millis(1_795_635_868_711),
            log_group: "/aws/cloudtrail/org".into(),
            owner: "123456789012".into(),
        }
    }

    #[test]
    fn keys_name_their_partition_shard_and_records() {
        let template = Template::parse(
            "{logGroup}/year=%Y/month=%m/day=%d/hour=%H/",
            S3Output::PREFIX_VARS,
        )
        .unwrap();
        assert_eq!(
            render_prefix(&template, &meta(), "us-east-1", "ns", "trail"),
            "aws/cloudtrail/org/year=2026/month=11/day=25/hour=19/"
        );
        let template = Template::parse(
            "{account}/{region}/{namespace}-{name}/",
            S3Output::PREFIX_VARS,
        )
        .unwrap();
        assert_eq!(
            render_prefix(&template, &meta(), "eu-west-1", "ns", "trail"),
            "123456789012/eu-west-1/ns-trail/"
        );
    }

    #[test]
    fn the_last_record_is_read_back_from_a_key() {
        let first = SequenceNumber::parse("49590").unwrap();
        let dir = "logs/shardId-000000000001/";
        assert_eq!(
            last_of("logs/shardId-000000000001/49590-49612.json.gz", dir, &first),
            Some(SequenceNumber::parse("49612").unwrap())
        );
        assert_eq!(
            last_of("logs/shardId-000000000001/49590-x.json", dir, &first),
            None
        );
        assert_eq!(
            last_of("logs/shardId-000000000001/495901-2.json", dir, &first),
            None
        );
        assert_eq!(last_of("other/49590-49612.json", dir, &first), None);
    }

    #[test]
    fn bodies_decompress_to_the_documents() {
        use std::io::Read;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut encoded = super::super::Encoded::default();
        for line in ["{\"a\":1}\n", "{\"b\":2}\n"] {
            encoded
                .push(|out| {
                    out.source().extend_from_slice(line.as_bytes());
                    Ok::<(), ()>(())
                })
                .unwrap();
        }
        let span = Span {
            shard: "s".into(),
            first: SequenceNumber::parse("1").unwrap(),
            last: SequenceNumber::parse("2").unwrap(),
            meta: meta(),
            written: None,
        };
        let ack = super::super::batch::Ack {
            to: tx,
            shard: "s".into(),
            sequence: SequenceNumber::parse("1").unwrap(),
        };
        let batch = Batch::of(super::super::Part::object(encoded, span, Some(ack)));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body(&batch, Compression::Gzip).unwrap()[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");
        let zst = body(&batch, Compression::Zstd).unwrap();
        assert_eq!(zstd::decode_all(&zst[..]).unwrap(), text.as_bytes());
        assert_eq!(body(&batch, Compression::None).unwrap(), text.as_bytes());
    }
}
