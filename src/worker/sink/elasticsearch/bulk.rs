//! The `_bulk` API, pure: the action line of a document, and what a response
//! says about each document. The same code serves Elasticsearch and OpenSearch;
//! the tests hold real response bodies from both.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::worker::document::write_str;

/// Appends the `create` action line of a document with `_id` = `id` to `out`.
/// `create` (never `index`) makes a replay a 409 instead of a second copy, and is
/// the only operation a data stream takes.
pub fn action(index: &str, id: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"create":{"_index":"#);
    write_str(index, out);
    out.extend_from_slice(br#","_id":"#);
    write_str(id, out);
    out.extend_from_slice(b"}}\n");
}

/// What became of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Stored now (201).
    Created,
    /// Already stored by an earlier delivery (409): delivered.
    Duplicate,
    /// Refused for now (429, 5xx): send it again.
    Retry {
        /// The item's status.
        status: u16,
        /// The error type, e.g. `rejected_execution_exception`.
        error_type: String,
    },
    /// Refused because of the index, not the document (403: a write block or
    /// missing privileges; 404: no such index and none may be made): no
    /// document could be stored there now. The delivery is retried, and the
    /// status says why.
    Unwritable {
        /// The item's status.
        status: u16,
        /// The error type, e.g. `cluster_block_exception`.
        error_type: String,
        /// The error's reason.
        reason: String,
    },
    /// Refused for good (a mapping error, a bad document): dead-letter it.
    Rejected {
        /// The item's status.
        status: u16,
        /// The error type, e.g. `mapper_parsing_exception`.
        error_type: String,
        /// The error's reason.
        reason: String,
    },
}

/// A request that failed as a whole. None of them drops a document: each is
/// retried, or (too large) sent again in halves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Overloaded or unavailable (429, 5xx, an unreadable answer): retry the batch.
    Retry {
        /// The HTTP status.
        status: u16,
        /// What the server said.
        reason: String,
    },
    /// The credentials are refused (401, 403, 407): retry, and say so in the
    /// status until someone fixes them.
    Denied {
        /// The HTTP status.
        status: u16,
        /// What the server said.
        reason: String,
    },
    /// The body is over the cluster's limit (413): send it again in halves,
    /// down to one document.
    TooLarge {
        /// What the server said.
        reason: String,
    },
    /// Another whole-request answer (404, 405, a 400 about the request rather
    /// than a document: a wrong endpoint, a proxy in the way). It says nothing
    /// about the documents, so none is refused: retry, and say so in the status.
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// What the server said.
        reason: String,
    },
}

#[derive(Deserialize)]
struct Response {
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, ItemStatus>>,
}

#[derive(Deserialize)]
struct ItemStatus {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    error_type: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // present in some answers; read to be tolerated
    caused_by: Option<IgnoredAny>,
}

/// Reads the answer to a bulk request of `documents` documents.
pub fn classify(status: u16, body: &[u8], documents: usize) -> Result<Vec<Item>, Failure> {
    let reason = || summary(body);
    match status {
        200 => {}
        401 | 403 | 407 => {
            return Err(Failure::Denied {
                status,
                reason: reason(),
            });
        }
        413 => return Err(Failure::TooLarge { reason: reason() }),
        408 | 429 | 500..=599 => {
            return Err(Failure::Retry {
                status,
                reason: reason(),
            });
        }
        _ => {
            return Err(Failure::Unexpected {
                status,
                reason: reason(),
            });
        }
    }
    let response: Response = serde_json::from_slice(body).map_err(|e| Failure::Retry {
        status,
        reason: format!("unreadable bulk response: {e}"),
    })?;
    if !response.errors && response.items.len() == documents {
        return Ok(vec![Item::Created; documents]);
    }
    if response.items.len() != documents {
        return Err(Failure::Retry {
            status,
            reason: format!(
                "bulk response has {} items for {documents} documents",
                response.items.len()
            ),
        });
    }
    Ok(response
        .items
        .into_iter()
        .map(|item| {
            let Some(result) = item.into_values().next() else {
                return Item::Retry {
                    status: 0,
                    error_type: "empty_item".into(),
                };
            };
            let (error_type, reason) = result
                .error
                .map(|e| (e.error_type, e.reason.unwrap_or_default()))
                .unwrap_or_default();
            match result.status {
                200..=299 => Item::Created,
                409 => Item::Duplicate,
                s @ (408 | 429 | 500..=599) => Item::Retry {
                    status: s,
                    error_type,
                },
                s @ (401 | 403 | 404 | 405 | 407) => Item::Unwritable {
                    status: s,
                    error_type,
                    reason,
                },
                s => Item::Rejected {
                    status: s,
                    error_type,
                    reason,
                },
            }
        })
        .collect())
}

/// The error's type and reason from an error body, else its start.
fn summary(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Error,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Error {
        Object {
            #[serde(rename = "type")]
            error_type: String,
            #[serde(default)]
            reason: Option<String>,
        },
        Text(String),
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body {
            error: Error::Object { error_type, reason },
        }) => match reason {
            Some(reason) => format!("{error_type}: {reason}"),
            None => error_type,
        },
        Ok(Body {
            error: Error::Text(text),
        }) => text,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            match text.char_indices().nth(200) {
                Some((end, _)) => format!("{}…", &text[..end]),
                None => text.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_lines_escape_their_strings() {
        let mut out = Vec::new();
        action("cwl-2026.11.25", "3195\"x", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"create\":{\"_index\":\"cwl-2026.11.25\",\"_id\":\"3195\\\"x\"}}\n"
        );
    }

    /// OpenSearch 2.19 and Elasticsearch 8.19 answers, as the stack's nodes gave them.
    #[test]
    fn item_outcomes() {
        let all_created = br#"{"took":7,"errors":false,"items":[{"create":{"_index":"cwl","_id":"1","_version":1,"result":"created","_shards":{"total":1,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,"status":201}},{"create":{"_index":"cwl","_id":"2","_version":1,"result":"created","_shards":{"total":1,"successful":1,"failed":0},"_seq_no":1,"_primary_term":1,"status":201}}]}"#;
        assert_eq!(classify(200, all_created, 2), Ok(vec![Item::Created; 2]));

        let mixed = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"cwl","_id":"1","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[1]: version conflict, document already exists (current version [1])","index":"cwl","shard":"0","index_uuid":"x"}}},
            {"create":{"_index":"cwl","_id":"2","status":400,"error":{"type":"document_parsing_exception","reason":"[1:25] failed to parse field [n] of type [long] in document with id '2'. Preview of field's value: 'many'","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"many\""}}}},
            {"create":{"_index":"cwl","_id":"3","status":429,"error":{"type":"rejected_execution_exception","reason":"rejected execution of coordinating operation"}}},
            {"create":{"_index":"cwl","_id":"4","status":201,"result":"created"}},
            {"create":{"_index":"cwl","_id":"5","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}
        ]}"#;
        assert_eq!(
            classify(200, mixed, 5).unwrap(),
            [
                Item::Duplicate,
                Item::Rejected {
                    status: 400,
                    error_type: "document_parsing_exception".into(),
                    reason: "[1:25] failed to parse field [n] of type [long] in document with id '2'. Preview of field's value: 'many'".into()
                },
                Item::Retry {
                    status: 429,
                    error_type: "rejected_execution_exception".into()
                },
                Item::Created,
                Item::Retry {
                    status: 503,
                    error_type: "unavailable_shards_exception".into()
                },
            ]
        );
    }

    /// Items refused because of the index (a write block, missing privileges,
    /// no such index) say nothing against the document: never dead-lettered.
    #[test]
    fn items_refused_because_of_the_index() {
        let blocked = br#"{"took":1,"errors":true,"items":[{"create":{"_index":"cwl","_id":"1","status":403,"error":{"type":"cluster_block_exception","reason":"index [cwl] blocked by: [FORBIDDEN/8/index write (api)];"}}},{"create":{"_index":"gone","_id":"2","status":404,"error":{"type":"index_not_found_exception","reason":"no such index [gone]"}}}]}"#;
        let items = classify(200, blocked, 2).unwrap();
        assert!(
            items.iter().all(|i| matches!(i, Item::Unwritable { .. })),
            "{items:?}"
        );
    }

    #[test]
    fn whole_request_failures() {
        let overloaded = br#"{"error":{"root_cause":[{"type":"rejected_execution_exception","reason":"rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=5000, max_coordinating_and_primary_bytes=4096]"}],"type":"rejected_execution_exception","reason":"rejected execution of coordinating operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=5000, max_coordinating_and_primary_bytes=4096]"},"status":429}"#;
        assert!(matches!(
            classify(429, overloaded, 3),
            Err(Failure::Retry { status: 429, reason }) if reason.starts_with("rejected_execution_exception: rejected execution")
        ));
        let malformed = br#"{"error":{"root_cause":[{"type":"illegal_argument_exception","reason":"The bulk request must be terminated by a newline [\\n]"}],"type":"illegal_argument_exception","reason":"The bulk request must be terminated by a newline [\\n]"},"status":400}"#;
        assert!(matches!(
            classify(400, malformed, 1),
            Err(Failure::Unexpected { status: 400, .. })
        ));
        for status in [404, 405] {
            assert!(matches!(
                classify(status, b"{}", 3),
                Err(Failure::Unexpected { .. })
            ));
        }
        assert!(matches!(
            classify(407, b"", 3),
            Err(Failure::Denied { status: 407, .. })
        ));
        // OpenSearch 2.19 with http.max_content_length lowered.
        let too_large = br#"{"error":{"root_cause":[{"type":"too_long_http_line_exception","reason":"An HTTP line is larger than 4096 bytes."}],"type":"too_long_http_line_exception","reason":"An HTTP line is larger than 4096 bytes."},"status":413}"#;
        assert!(matches!(
            classify(413, too_large, 3),
            Err(Failure::TooLarge { .. })
        ));
        assert!(matches!(
            classify(413, b"", 3),
            Err(Failure::TooLarge { .. })
        ));
        let denied = br#"{"error":{"type":"security_exception","reason":"missing authentication credentials for REST request [/_bulk]"},"status":401}"#;
        assert_eq!(
            classify(401, denied, 1),
            Err(Failure::Denied {
                status: 401,
                reason: "security_exception: missing authentication credentials for REST request [/_bulk]".into()
            })
        );
        assert!(matches!(
            classify(502, b"<html>Bad Gateway</html>", 1),
            Err(Failure::Retry { status: 502, reason }) if reason == "<html>Bad Gateway</html>"
        ));
        assert!(matches!(
            classify(200, b"{\"errors\":false,\"items\":[]}", 2),
            Err(Failure::Retry { .. })
        ));
        assert!(matches!(
            classify(200, b"not json", 2),
            Err(Failure::Retry { .. })
        ));
    }
}
