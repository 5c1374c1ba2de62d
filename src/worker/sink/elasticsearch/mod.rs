//! Elasticsearch and OpenSearch, one code path: `_bulk` `create` with `_id` =
//! the document's `@id`, so a replay is a 409 (delivered) rather than a second
//! copy. Items refused for now are sent again alone; items refused for good go
//! to the dead-letter index with the error and where they came from.

pub mod bulk;
pub mod sigv4;

use std::io::Write;
use std::time::Duration;

use std::sync::RwLock;

use base64::Engine as _;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue,
};
use elasticsearch::http::transport::{SingleNodeConnectionPool, Transport, TransportBuilder};
use elasticsearch::http::{Method, StatusCode};
use serde_json::{Value, json};

use self::bulk::{Failure, Item};
use self::sigv4::Signer;
use super::{Batch, Delivered, DocOut, EncodeError, Encoded, Encoder, Sink, SinkError};
use crate::contract::config::{
    ElasticsearchCredentials, ElasticsearchOutput, IndexTemplateOutput, Target,
};
use crate::contract::{Template, UtcHour};
use crate::time::now_millis;
use crate::worker::dead_letter::{DeadLetter, KEEP_TEXT, Origin, Why};
use crate::worker::document::{Document, ID, TIMESTAMP};

/// How long a bulk request may take before it is abandoned and sent again.
const BULK_TIMEOUT: Duration = Duration::from_secs(120);
/// The error type of a document too large for the cluster alone.
const TOO_LARGE: &str = "too_large";
/// The least text a dead letter keeps before it is given up as too large.
const MIN_KEEP: usize = 256;

/// Why the sink cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file the configuration names cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is not usable.
    #[error("{0}")]
    Invalid(String),
    /// The HTTP client cannot be built.
    #[error("search client: {0}")]
    Client(String),
}

/// The Elasticsearch/OpenSearch sink.
pub struct Elasticsearch {
    /// Rebuilt when the CA file changes (see [`TrustedCa`]).
    transport: RwLock<Transport>,
    ca: Option<TrustedCa>,
    /// The base URL, without a trailing `/`, for signing.
    endpoint: String,
    signer: Option<Signer>,
    auth: Option<FileAuth>,
    encoder: BulkCreate,
    /// The pattern the index template applies to: the index template with
    /// its placeholders as `*`, or the data stream's name.
    pattern: String,
    index_template: Option<IndexTemplateOutput>,
    compress: bool,
    concurrency: usize,
}

impl Elasticsearch {
    /// A sink as configured; reads its credential and CA files.
    pub fn new(config: &ElasticsearchOutput) -> Result<Elasticsearch, SetupError> {
        let auth = config
            .auth
            .as_ref()
            .map(FileAuth::load)
            .transpose()?
            .flatten();
        let ca = match &config.ca_file {
            Some(path) => Some(TrustedCa {
                path: path.clone(),
                pem: RwLock::new(read(path)?),
                endpoint: config.endpoint.clone(),
            }),
            None => None,
        };
        let transport = transport(
            &config.endpoint,
            ca.as_ref().map(|ca| (ca.path.as_str(), ca.pem())).as_ref(),
        )?;
        let pattern = match &config.target {
            Target::Index(index) => pattern_of(index),
            Target::DataStream(ds) => ds.clone(),
        };
        Ok(Elasticsearch {
            endpoint: config.endpoint.as_str().trim_end_matches('/').to_owned(),
            signer: None,
            auth,
            pattern,
            index_template: config.index_template.clone(),
            transport: RwLock::new(transport),
            ca,
            encoder: BulkCreate {
                target: config.target.clone(),
                dead_letter: config.dead_letter_index.clone(),
            },
            compress: config.compress,
            concurrency: config.concurrency.get() as usize,
        })
    }

    /// Signs every request with AWS SigV4 (Amazon OpenSearch Service).
    pub fn signed(mut self, signer: Signer) -> Elasticsearch {
        self.signer = Some(signer);
        self
    }

    /// Asks the cluster for its health (`_cluster/health`, which every
    /// distribution serves), to fail early and clearly on a wrong endpoint or
    /// credentials.
    pub async fn cluster_health(&self) -> Result<String, SinkError> {
        let (status, body) = self
            .exchange(
                Method::Get,
                "/_cluster/health",
                None,
                (Vec::new(), false),
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| SinkError::new("unavailable", e))?;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        if status != StatusCode::OK {
            let category = match status.as_u16() {
                401 | 403 => "denied",
                _ => "unavailable",
            };
            return Err(SinkError::new(
                category,
                format!(
                    "_cluster/health answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
            ));
        }
        let health: Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(format!(
            "cluster {} is {}",
            health["cluster_name"].as_str().unwrap_or("?"),
            health["status"].as_str().unwrap_or("?")
        ))
    }

    /// Installs the configured index template, unless one of that name is
    /// there and may not be replaced. Returns what it did.
    pub async fn bootstrap(&self) -> Result<Option<String>, SinkError> {
        let Some(spec) = &self.index_template else {
            return Ok(None);
        };
        let path = format!("/_index_template/{}", spec.name);
        if !spec.overwrite {
            let existing = self.request(Method::Get, &path, None).await?;
            if existing.0 == 200 {
                return Ok(Some(format!(
                    "index template {} exists; left alone",
                    spec.name
                )));
            }
        }
        let mut body = index_template(
            &self.pattern,
            matches!(self.encoder.target, Target::DataStream(_)),
            spec,
        );
        if let Some(earlier) = &spec.replaces
            && let Some(theirs) = self.earlier_template(earlier, &body).await?
        {
            // Renamed without a moment uncovered: the new one first, above
            // it (two templates of one priority cannot cover the same
            // indices), then the earlier one goes, then the new one takes
            // its priority. Kept as it was, edits included, unless overwriting.
            if !spec.overwrite {
                body = theirs;
            }
            let mut above = body.clone();
            above["priority"] = json!(body["priority"].as_u64().unwrap_or(200) + 1);
            self.put_template(&path, &above).await?;
            self.delete_template(earlier).await?;
        }
        self.put_template(&path, &body).await?;
        Ok(Some(format!(
            "index template {} installed for {}",
            spec.name, self.pattern
        )))
    }

    /// The index template `name` when logsub put it for the same indices as
    /// `body` (an earlier release's name for this one); `None` for anything
    /// else of that name, which is someone else's and stays.
    async fn earlier_template(&self, name: &str, body: &Value) -> Result<Option<Value>, SinkError> {
        let path = format!("/_index_template/{name}");
        let (status, answer) = self.request(Method::Get, &path, None).await?;
        if status != 200 {
            return Ok(None);
        }
        let answer: Value = serde_json::from_slice(&answer).unwrap_or_default();
        let found = answer["index_templates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| &t["index_template"])
            .find(|t| {
                t["_meta"]["managed_by"] == "logsub"
                    && t["index_patterns"] == body["index_patterns"]
            });
        Ok(found.cloned())
    }

    async fn put_template(&self, path: &str, body: &Value) -> Result<(), SinkError> {
        let (status, answer) = self
            .request(Method::Put, path, Some(body.to_string().into_bytes()))
            .await?;
        if status != 200 {
            return Err(SinkError::new(
                "index_template",
                format!(
                    "PUT {path} answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                ),
            ));
        }
        Ok(())
    }

    async fn delete_template(&self, name: &str) -> Result<(), SinkError> {
        let path = format!("/_index_template/{name}");
        let (status, answer) = self.request(Method::Delete, &path, None).await?;
        if !matches!(status, 200 | 404) {
            return Err(SinkError::new(
                "index_template",
                format!(
                    "DELETE {path} answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                ),
            ));
        }
        Ok(())
    }

    /// A JSON request; its status and body.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), SinkError> {
        self.exchange(
            method,
            path,
            Some("application/json"),
            (body.unwrap_or_default(), false),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| SinkError::new("unavailable", e))
    }

    /// Sends a request (signed when SigV4 is configured; `gzipped` says the
    /// body is); its status and body, or why there is none.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        (body, gzipped): (Vec<u8>, bool),
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut signed: Vec<(&str, &str)> = Vec::new();
        let mut headers = HeaderMap::new();
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            signed.push(("content-type", content_type));
        }
        if gzipped {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            signed.push(("content-encoding", "gzip"));
        }
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.header());
        }
        if let Some(signer) = &self.signer {
            let url = format!("{}{path}", self.endpoint);
            for (name, value) in signer
                .headers(method_name(method), &url, &signed, &body)
                .await?
            {
                let name = elasticsearch::http::headers::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| e.to_string())?;
                let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
                headers.insert(name, value);
            }
        }
        let body = (!body.is_empty() || method != Method::Get).then_some(body);
        let transport = self
            .transport
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let sent = transport
            .send(method, path, headers, None::<&()>, body, Some(timeout))
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                // A CA Secret updated in place (a wrong CA fixed, a CA
                // rotated): the request is retried, as every failed one is,
                // trusting what the file holds now.
                if self.reload_ca() {
                    tracing::info!(endpoint = %self.endpoint, "a request failed; read the CA file again, which had changed");
                }
                return Err(with_causes(&e));
            }
        };
        let status = response.status_code().as_u16();
        // A rotated Secret: the kubelet updates the mounted files, and the
        // request is retried (as every refused one is) with what they hold now
        // (a 403 too: a key replaced by one with the rights it lacked).
        if (status == 401 || status == 403)
            && let Some(auth) = &self.auth
            && auth.reload()
        {
            tracing::info!(endpoint = %self.endpoint, "credentials refused; read them again from their files, which had changed");
        }
        let body = response.bytes().await.map_err(|e| with_causes(&e))?;
        Ok((status, body.to_vec()))
    }

    /// Sends one bulk body of `documents` documents.
    async fn bulk(&self, chunks: &[&[u8]], documents: usize) -> Result<Vec<Item>, Failure> {
        let body = if self.compress {
            let size = chunks.iter().map(|c| c.len()).sum::<usize>();
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(size / 8),
                flate2::Compression::fast(),
            );
            for chunk in chunks {
                // Writing to a Vec cannot fail.
                let _ = gz.write_all(chunk);
            }
            gz.finish().unwrap_or_default()
        } else {
            chunks.concat()
        };
        // A deadline well above what a large bulk takes on a busy cluster: a
        // server that accepts and never answers must not hold the batch (and
        // its buffer room) forever. A request timed out and sent again is
        // harmless: `create` with `_id` stores each document once.
        let (status, body) = self
            .exchange(
                Method::Post,
                "/_bulk",
                Some("application/x-ndjson"),
                (body, self.compress),
                BULK_TIMEOUT,
            )
            .await
            .map_err(|reason| Failure::Retry { status: 0, reason })?;
        bulk::classify(status, &body, documents)
    }

    /// Sends `docs` in one bulk request, or, when the cluster says the body is
    /// too large (413), in halves, down to one document: a document too
    /// large alone is refused (`too_large`), and every other one is sent.
    fn bulk_split<'a>(
        &'a self,
        docs: &'a [&'a [u8]],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<Item>, Failure>> + Send + 'a>> {
        Box::pin(async move {
            match self.bulk(docs, docs.len()).await {
                Err(Failure::TooLarge { .. }) if docs.len() > 1 => {
                    let (first, second) = docs.split_at(docs.len() / 2);
                    tracing::debug!(
                        documents = docs.len(),
                        "bulk request too large for the cluster; sending it in halves"
                    );
                    let mut items = self.bulk_split(first).await?;
                    items.extend(self.bulk_split(second).await?);
                    Ok(items)
                }
                Err(Failure::TooLarge { reason }) => {
                    let size = docs.first().map_or(0, |d| d.len());
                    Ok(vec![Item::Rejected {
                        status: 413,
                        error_type: TOO_LARGE.into(),
                        reason: format!(
                            "the document is {size} bytes with its action line, more than the cluster takes in one request: {reason}"
                        ),
                    }])
                }
                other => other,
            }
        })
    }

    /// Writes a dead letter for each document refused for good; what became
    /// of each (by its index in the batch) goes into `delivered`. A dead
    /// letter refused as too large is sent again smaller, down to a stub.
    async fn dead_letter(
        &self,
        batch: &Batch,
        rejected: &[(usize, &Item)],
        delivered: &mut Delivered,
    ) -> Result<(), SinkError> {
        let mut pending: Vec<(usize, DeadLetter)> = Vec::with_capacity(rejected.len());
        for (i, item) in rejected {
            let Item::Rejected {
                status,
                error_type,
                reason,
            } = item
            else {
                continue;
            };
            let (doc, origin) = batch.doc(*i).ok_or_else(|| {
                SinkError::new(
                    "bug",
                    format!("the cluster answered for document {i}, which the batch has not"),
                )
            })?;
            let origin = origin.map_or_else(
                || Origin {
                    shard: String::new(),
                    sequence: String::new(),
                },
                |(shard, sequence)| Origin {
                    shard: shard.to_owned(),
                    sequence: sequence.to_string(),
                },
            );
            let why = Why {
                reason: if error_type == TOO_LARGE {
                    TOO_LARGE
                } else {
                    "refused"
                },
                message: reason.clone(),
                status: Some(*status),
                error_type: Some(error_type.clone()),
            };
            let letter = DeadLetter::document(origin, doc.key, doc.source, doc.target, why);
            pending.push((*i, letter));
        }
        let now = now_millis();
        let mut keep = KEEP_TEXT;
        while !pending.is_empty() {
            let mut lines = Encoded::default();
            for (_, letter) in &pending {
                let letter = letter.to_document_within(now, keep);
                lines
                    .push(|out| self.encoder.encode_dead_letter(&letter, out))
                    .map_err(|e| SinkError::new("encode", e.0))?;
            }
            let bodies: Vec<&[u8]> = (0..lines.len()).map(|i| lines.wire(i)).collect();
            let items = self.bulk_split(&bodies).await.map_err(|f| failure(&f))?;
            let mut smaller = Vec::new();
            for ((i, letter), item) in pending.into_iter().zip(items) {
                match item {
                    Item::Created | Item::Duplicate => delivered.dead_lettered.push(i),
                    // The document goes again: refused again, dead-lettered again.
                    Item::Retry { .. } | Item::Unwritable { .. } => {
                        refuse(delivered, i, &item, "dead letters: ");
                    }
                    Item::Rejected { status: 413, .. } if keep > MIN_KEEP => {
                        smaller.push((i, letter));
                    }
                    Item::Rejected {
                        status,
                        error_type,
                        reason,
                    } => {
                        let target = if self.encoder.dead_letter.is_some() {
                            "the dead-letter index"
                        } else {
                            "the index"
                        };
                        delivered.failed.push((
                            i,
                            format!("{target} refused the dead letter too: {status} {error_type}: {reason}"),
                        ));
                    }
                }
            }
            pending = smaller;
            keep /= 8;
        }
        Ok(())
    }
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
    }
}

/// The index pattern of an index name template: each placeholder run a `*`.
fn pattern_of(index: &Template) -> String {
    let mut out = index.glob();
    // Dots between placeholders (`%Y.%m.%d`) fold into one wildcard.
    while out.contains("*.*") {
        out = out.replace("*.*", "*");
    }
    while out.contains("*-*") {
        out = out.replace("*-*", "*");
    }
    out
}

/// The body of the index template: the `@` fields mapped for search, a high
/// priority so it wins over broad built-in patterns (`logs-*-*`).
fn index_template(pattern: &str, data_stream: bool, spec: &IndexTemplateOutput) -> Value {
    let keyword = json!({"type": "keyword"});
    let mut body = json!({
        "index_patterns": [pattern],
        "priority": 200,
        "template": {
            "settings": {
                "number_of_shards": spec.shards,
                "number_of_replicas": spec.replicas,
            },
            "mappings": {"properties": {
                "@timestamp": {"type": "date"},
                "@message": {"type": "text"},
                "@id": keyword,
                "@owner": keyword,
                "@log_group": keyword,
                "@log_stream": keyword,
            }},
        },
        "_meta": {"managed_by": "logsub"},
    });
    if data_stream {
        body["data_stream"] = json!({});
    }
    body
}

/// The index of a document: the template at its `@timestamp` (UTC), or at now
/// when it has none readable.
fn render(template: &Template, doc: &Document) -> String {
    let hour = UtcHour::from_unix_millis(doc.millis(TIMESTAMP).unwrap_or_else(now_millis));
    template.render(hour, |_| String::new())
}

/// Writes each document as a bulk `create` action and its source, one line
/// each, into the index its time names (or the data stream).
pub struct BulkCreate {
    target: Target,
    dead_letter: Option<Template>,
}

impl BulkCreate {
    fn write(index: &str, doc: &Document, out: &mut DocOut<'_>) -> Result<(), EncodeError> {
        let id = doc
            .text(ID)
            .ok_or_else(|| EncodeError("the document has no @id".into()))?;
        out.header(index, id, |line| bulk::action(index, id, line));
        let out = out.source();
        doc.write_json(out);
        out.push(b'\n');
        Ok(())
    }
}

impl Encoder for BulkCreate {
    fn encode(&self, doc: &Document, out: &mut DocOut<'_>) -> Result<(), EncodeError> {
        match &self.target {
            Target::DataStream(ds) => BulkCreate::write(ds, doc, out),
            Target::Index(template) => BulkCreate::write(&render(template, doc), doc, out),
        }
    }

    fn encode_dead_letter(
        &self,
        letter: &Document,
        out: &mut DocOut<'_>,
    ) -> Result<(), EncodeError> {
        match &self.dead_letter {
            Some(template) => BulkCreate::write(&render(template, letter), letter, out),
            None => self.encode(letter, out),
        }
    }
}

/// Sends document `i` again, and keeps why: an index that takes nothing now
/// says so before documents merely refused for now (429, 503).
fn refuse(delivered: &mut Delivered, i: usize, item: &Item, what: &str) {
    delivered.retry.push(i);
    let why = match item {
        Item::Unwritable {
            status,
            error_type,
            reason,
        } => SinkError::new(
            "unwritable",
            format!("{what}{status} {error_type}: {reason}"),
        ),
        Item::Retry { status, error_type } if delivered.refused.is_none() => {
            SinkError::new("refused_for_now", format!("{what}{status} {error_type}"))
        }
        _ => return,
    };
    if delivered
        .refused
        .as_ref()
        .is_none_or(|r| r.category != "unwritable")
    {
        delivered.refused = Some(why);
    }
}

fn failure(f: &Failure) -> SinkError {
    match f {
        Failure::Retry {
            status: 429,
            reason,
        } => SinkError::new("throttled", reason.clone()),
        Failure::Retry { status, reason } => {
            SinkError::new("unavailable", format!("{status}: {reason}"))
        }
        Failure::Denied { status, reason } => {
            SinkError::new("denied", format!("{status}: {reason}"))
        }
        Failure::TooLarge { reason } => SinkError::new("too_large", format!("413: {reason}")),
        Failure::Unexpected { status, reason } => SinkError::new(
            "unexpected_status",
            format!("{status} for a whole bulk request: {reason}"),
        ),
    }
}

fn read(path: &str) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(|source| SetupError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Credentials from the files of a mounted Secret, sent as an `Authorization`
/// header and read again when the cluster answers 401.
/// The HTTP client for `endpoint`, trusting the CA `(path, pem)` when given.
fn transport(endpoint: &url::Url, ca: Option<&(&str, String)>) -> Result<Transport, SetupError> {
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(endpoint.clone()))
        .timeout(Duration::from_secs(60));
    if let Some((path, pem)) = ca {
        let cert = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| SetupError::Invalid(format!("{path}: {e}")))?;
        builder = builder.cert_validation(CertificateValidation::Full(cert));
    }
    builder
        .build()
        .map_err(|e| SetupError::Client(e.to_string()))
}

/// The CA file an `https` endpoint is trusted by, and what it held when the
/// client was built.
struct TrustedCa {
    path: String,
    pem: RwLock<String>,
    /// The endpoint, as the client is built for it.
    endpoint: url::Url,
}

impl TrustedCa {
    fn pem(&self) -> String {
        self.pem
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Elasticsearch {
    /// Reads the CA file again; whether it held another CA, and the client
    /// now trusts that one. A file that cannot be read or parsed keeps the
    /// client as it is.
    fn reload_ca(&self) -> bool {
        let Some(ca) = &self.ca else { return false };
        let fresh = match read(&ca.path) {
            Ok(fresh) if fresh != ca.pem() => fresh,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the CA file again");
                return false;
            }
        };
        match transport(&ca.endpoint, Some(&(ca.path.as_str(), fresh.clone()))) {
            Ok(rebuilt) => {
                *self
                    .transport
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = rebuilt;
                *ca.pem
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the CA file holds no usable CA");
                false
            }
        }
    }
}

/// An error with its causes: a client error's own text names only the URL,
/// while why it failed (a certificate refused, a connection reset) is in its
/// sources.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

struct FileAuth {
    source: ElasticsearchCredentials,
    header: RwLock<HeaderValue>,
}

impl FileAuth {
    /// Reads the credentials; `None` for SigV4, which signs each request.
    fn load(source: &ElasticsearchCredentials) -> Result<Option<FileAuth>, SetupError> {
        Ok(authorization(source)?.map(|header| FileAuth {
            source: source.clone(),
            header: RwLock::new(header),
        }))
    }

    fn header(&self) -> HeaderValue {
        self.header
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the files again; whether they hold other credentials now. An
    /// unreadable file keeps the credentials in use (the kubelet swaps the
    /// files atomically, so this is a Secret removed, not one half-written).
    fn reload(&self) -> bool {
        let fresh = match authorization(&self.source) {
            Ok(Some(fresh)) => fresh,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the credentials again");
                return false;
            }
        };
        let mut header = self
            .header
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *header == fresh {
            return false;
        }
        *header = fresh;
        true
    }
}

/// The `Authorization` header for credentials read from their files.
fn authorization(auth: &ElasticsearchCredentials) -> Result<Option<HeaderValue>, SetupError> {
    let value = match auth {
        ElasticsearchCredentials::Basic { secret_dir } => {
            let dir = std::path::Path::new(secret_dir);
            let file = |name: &str| read(&dir.join(name).display().to_string());
            let pair = format!(
                "{}:{}",
                file("username")?.trim(),
                file("password")?.trim_end_matches(['\n', '\r'])
            );
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        }
        ElasticsearchCredentials::ApiKey { file } => format!("ApiKey {}", read(file)?.trim()),
        // Signed per request; see `Elasticsearch::signed`.
        ElasticsearchCredentials::AwsSigV4 { .. } => return Ok(None),
    };
    let mut header = HeaderValue::from_str(&value)
        .map_err(|_| SetupError::Invalid("credentials hold characters a header cannot".into()))?;
    header.set_sensitive(true);
    Ok(Some(header))
}

impl Sink for Elasticsearch {
    type Encoder = BulkCreate;

    fn encoder(&self) -> &BulkCreate {
        &self.encoder
    }

    async fn check(&self) -> Result<String, SinkError> {
        match self.cluster_health().await {
            // Reached, trusted and signed in: an identity given only the
            // rights to write (an API key, a role without `monitor`) may not
            // read the cluster's health. Deliveries say whether it may write.
            Err(e) if e.message.starts_with("_cluster/health answered 403") => {
                Ok("reachable; this identity may not read the cluster's health".to_owned())
            }
            checked => checked,
        }
    }

    async fn deliver(&self, batch: &Batch) -> Result<Delivered, SinkError> {
        let docs: Vec<&[u8]> = batch.docs().collect();
        let items = self.bulk_split(&docs).await.map_err(|f| failure(&f))?;
        let mut delivered = Delivered::default();
        let mut rejected = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Item::Created | Item::Duplicate => {}
                // Only these go again: the rest of the batch, and the shards
                // it came from, go on.
                Item::Retry { .. } | Item::Unwritable { .. } => refuse(&mut delivered, i, item, ""),
                Item::Rejected { .. } => rejected.push((i, item)),
            }
        }
        if !rejected.is_empty() {
            self.dead_letter(batch, &rejected, &mut delivered).await?;
        }
        Ok(delivered)
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_A: &str = "-----BEGIN CERTIFICATE-----\nMIIBhDCCASugAwIBAgIUdYXXpXFcVrxR0qWdI5JC+1BaTJ0wCgYIKoZIzj0EAwIw\nFzEVMBMGA1UEAwwMZml4dHVyZS1jYS1hMCAXDTI2MTIwNTA0MjA0OVoYDzIxMjYx\nMTExMDQyMDQ5WjAXMRUwEwYDVQQDDAxmaXh0dXJlLWNhLWEwWTATBgcqhkjOPQIB\nBggqhkjOPQMBBwNCAAQrEh+22/QzwNb62Y20GGTmOb81I70tE0fDsZUpAeNk8YK3\nmx8whqGvWG3kiRkHkkRHc5LoratZQ9ALJcQXAKiNo1MwUTAdBgNVHQ4EFgQUQK2U\nDdZfpJeXMAhnTagYNBANiTgwHwYDVR0jBBgwFoAUQK2UDdZfpJeXMAhnTagYNBAN\niTgwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBJ7+XuHvhgewcJ\n1xuwNl9HB47kJa5CSWgVawD2JckwkwIgacGBPMyQyZlw0AIUkezaofPlGMeFVIqo\nESM5bkExLJQ=\n-----END CERTIFICATE-----\n";
    const CA_B: &str = "-----BEGIN CERTIFICATE-----\nMIIBhDCCASugAwIBAgIUI5Nij7ND+UkdsSdSdKvQ4JF7mVcwCgYIKoZIzj0EAwIw\nFzEVMBMGA1UEAwwMZml4dHVyZS1jYS1iMCAXDTI2MTIwNTA0MjA0OVoYDzIxMjYx\nMTExMDQyMDQ5WjAXMRUwEwYDVQQDDAxmaXh0dXJlLWNhLWIwWTATBgcqhkjOPQIB\nBggqhkjOPQMBBwNCAATmzfXmBObXJt176XC9AXENlO4QmNvM1ZSQVI53L+f528LC\n4Zc8A6+F9SDaffuCph9K2bZZBppcCR/oK3An6Nako1MwUTAdBgNVHQ4EFgQU/1Yg\n/bPwnfW02vkpfOiA8xkj3rgwHwYDVR0jBBgwFoAU/1Yg/bPwnfW02vkpfOiA8xkj\n3rgwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBvNxDUBYfpP3nH\n/D788/1un4ilK9tqLX3344T89ZeHnQIgRPiy3C9vYDpSGs0s2kt2BVO/tAKjp3yG\nJeD6eYh8AJ4=\n-----END CERTIFICATE-----\n";

    /// A CA file changed in place is trusted from the next failed request
    /// on; one that no longer parses keeps the CA in use.
    #[test]
    fn a_changed_ca_file_is_read_again_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("logsub-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.crt");
        std::fs::write(&file, CA_A).unwrap();
        let config: ElasticsearchOutput = serde_json::from_value(json!({
            "endpoint": "https://127.0.0.1:9", "index": "i", "caFile": file.display().to_string(),
        }))
        .unwrap();
        let sink = Elasticsearch::new(&config).unwrap();
        assert!(!sink.reload_ca(), "unchanged");
        std::fs::write(&file, CA_B).unwrap();
        assert!(sink.reload_ca(), "changed");
        assert_eq!(sink.ca.as_ref().unwrap().pem(), CA_B);
        assert!(!sink.reload_ca(), "read once");
        std::fs::write(&file, "not a certificate").unwrap();
        assert!(!sink.reload_ca(), "broken");
        assert_eq!(sink.ca.as_ref().unwrap().pem(), CA_B, "kept");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Why a request failed is in the error's sources; a source that only
    /// repeats the text before it is said once.
    #[test]
    fn an_error_is_told_with_its_causes() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let certificate = Layer("invalid peer certificate: UnknownIssuer", None);
        let connect = Layer("client error (Connect)", Some(Box::new(certificate)));
        let request = Layer("error sending request", Some(Box::new(connect)));
        let outer = Layer("error sending request", Some(Box::new(request)));
        assert_eq!(
            with_causes(&outer),
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn credentials_are_read_again_only_when_their_files_changed() {
        let dir = std::env::temp_dir().join(format!("logsub-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("username"), "writer\n").unwrap();
        std::fs::write(dir.join("password"), "first secret\n").unwrap();
        let source = ElasticsearchCredentials::Basic {
            secret_dir: dir.display().to_string(),
        };
        let auth = FileAuth::load(&source).unwrap().expect("basic auth");
        // base64("writer:first secret")
        assert_eq!(auth.header(), "Basic d3JpdGVyOmZpcnN0IHNlY3JldA==");
        assert!(auth.header().is_sensitive(), "kept out of debug output");
        assert!(!auth.reload(), "unchanged files");
        std::fs::write(dir.join("password"), "second").unwrap();
        assert!(auth.reload(), "a rotated password");
        assert_eq!(auth.header(), "Basic d3JpdGVyOnNlY29uZA==");
        std::fs::remove_file(dir.join("password")).unwrap();
        assert!(!auth.reload(), "a missing file keeps what is in use");
        assert_eq!(auth.header(), "Basic d3JpdGVyOnNlY29uZA==");
        std::fs::remove_dir_all(&dir).unwrap();

        let key = std::env::temp_dir().join(format!("logsub-key-{}", std::process::id()));
        std::fs::write(
            &key,
            "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==\n",
        )
        .unwrap();
        let source = ElasticsearchCredentials::ApiKey {
            file: key.display().to_string(),
        };
        assert_eq!(
            FileAuth::load(&source).unwrap().unwrap().header(),
            "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
        );
        std::fs::remove_file(&key).unwrap();
    }

    #[test]
    fn index_names_follow_the_document_time() {
        let template = Template::parse("cwl-%Y.%m.%d", &[]).unwrap();
        let mut doc = Document::new();
        doc.insert(TIMESTAMP, json!("2019-06-19T00:18:31Z"));
        assert_eq!(render(&template, &doc), "cwl-2019.06.19");
        doc.insert(TIMESTAMP, json!("not a time"));
        let today = template.render(UtcHour::from_unix_millis(now_millis()), |_| String::new());
        assert_eq!(render(&template, &doc), today, "no readable time: now");
    }

    #[test]
    fn index_templates_cover_every_index_of_the_pattern() {
        let pattern = |index| pattern_of(&Template::parse(index, &[]).unwrap());
        assert_eq!(pattern("cwl-%Y.%m.%d"), "cwl-*");
        assert_eq!(pattern("logs-%Y-%m"), "logs-*");
        assert_eq!(pattern("flow"), "flow");
        assert_eq!(pattern("a%%b-%H"), "a%b-*");
        let spec = IndexTemplateOutput {
            replaces: None,
            name: "logsub-ns-flow".into(),
            shards: 2,
            replicas: 0,
            overwrite: false,
        };
        let body = index_template("cwl-*", false, &spec);
        assert_eq!(body["index_patterns"], json!(["cwl-*"]));
        assert_eq!(body["template"]["settings"]["number_of_shards"], 2);
        assert_eq!(
            body["template"]["mappings"]["properties"]["@timestamp"]["type"],
            "date"
        );
        assert!(body.get("data_stream").is_none());
        assert_eq!(
            index_template("logs-a-b", true, &spec)["data_stream"],
            json!({})
        );
    }

    /// A document's index and source travel beside its bulk lines; its
    /// dead letter goes where dead letters go.
    #[test]
    fn encoded_documents_keep_their_index_and_source() {
        let encoder = BulkCreate {
            target: Target::Index(Template::parse("cwl-%Y.%m.%d", &[]).unwrap()),
            dead_letter: Some(Template::parse("dead-%Y", &[]).unwrap()),
        };
        let mut doc = Document::new();
        doc.insert(ID, json!("3195"));
        doc.insert(TIMESTAMP, json!("2019-06-19T08:00:00.000Z"));
        let mut out = Encoded::default();
        out.push(|out| encoder.encode(&doc, out)).unwrap();
        out.push(|out| encoder.encode_dead_letter(&doc, out))
            .unwrap();
        let source = br#"{"@id":"3195","@timestamp":"2019-06-19T08:00:00.000Z"}"#;
        let first = out.doc(0);
        assert_eq!(
            (first.target, first.source),
            (Some("cwl-2019.06.19"), &source[..])
        );
        assert!(
            first
                .wire
                .starts_with(br#"{"create":{"_index":"cwl-2019.06.19","_id":"3195"}}"#)
        );
        assert_eq!(first.key, Some("3195"));
        assert_eq!(out.doc(1).target, Some("dead-2019"));
        let mut no_id = Document::new();
        no_id.insert(TIMESTAMP, json!("2019-06-19T08:00:00.000Z"));
        assert!(out.push(|out| encoder.encode(&no_id, out)).is_err());
        assert_eq!(out.len(), 2);
    }
}
