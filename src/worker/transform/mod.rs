//! Transforms: pure functions of one document, applied in the configured order.
//! Most return the document changed; `cloudTrail` may split one into several.

pub mod cloudtrail;
pub mod json;
pub mod lambda;
pub mod vpc_flow;

use std::borrow::Cow;

use super::document::{Document, Field, Key};
use crate::api::Transform;

/// A transform ready to run, with its settings resolved once.
#[derive(Clone, Debug)]
pub enum Compiled {
    /// See [`json`].
    Json,
    /// See [`vpc_flow`].
    VpcFlowLog(vpc_flow::Format),
    /// See [`cloudtrail`].
    CloudTrail,
    /// See [`lambda`].
    Lambda,
}

impl Compiled {
    /// Resolves a configured transform.
    pub fn new(transform: &Transform) -> Compiled {
        match transform {
            Transform::Json(_) => Compiled::Json,
            Transform::VpcFlowLog(cfg) => {
                Compiled::VpcFlowLog(vpc_flow::Format::new(&cfg.effective_fields()))
            }
            Transform::CloudTrail(_) => Compiled::CloudTrail,
            Transform::Lambda(_) => Compiled::Lambda,
        }
    }
}

/// Runs `transforms` in order over one event's document.
pub fn apply<'a>(transforms: &[Compiled], doc: Document<'a>) -> Vec<Document<'a>> {
    let mut out = Vec::with_capacity(1);
    apply_each(transforms, doc, &mut |d| {
        out.push(d);
        true
    });
    out
}

/// Runs `transforms` in order over one event's document, handing each
/// document it becomes to `out` as soon as it is made, until `out` says to
/// stop (returns false); whether it went to the end. No transform holds all
/// the documents of an event at once.
pub fn apply_each<'a>(
    transforms: &[Compiled],
    doc: Document<'a>,
    out: &mut dyn FnMut(Document<'a>) -> bool,
) -> bool {
    let Some((first, rest)) = transforms.split_first() else {
        return out(doc);
    };
    match first {
        Compiled::Json => apply_each(rest, json::apply(doc), out),
        Compiled::VpcFlowLog(format) => apply_each(rest, vpc_flow::apply(format, doc), out),
        Compiled::Lambda => apply_each(rest, lambda::apply(doc), out),
        Compiled::CloudTrail => cloudtrail::each(doc, &mut |d| apply_each(rest, d, out)),
    }
}

/// The fields `parse` finds in a text field: views into the payload where the
/// text is one, copies where a transform made the text.
pub(crate) fn parsed<'a>(
    field: Option<&Field<'a>>,
    parse: for<'t> fn(&'t str) -> Option<Document<'t>>,
) -> Option<Document<'a>> {
    match field? {
        Field::Text(Cow::Borrowed(text)) => parse(text),
        Field::Text(Cow::Owned(text)) => parse(text).map(Document::into_owned),
        _ => None,
    }
}

/// Adds `fields` to `doc` without replacing a field it has (the `@` fields and
/// what an earlier transform set stay).
pub(crate) fn merge<'a, K: Into<Key>, V: Into<Field<'a>>>(
    doc: &mut Document<'a>,
    fields: impl IntoIterator<Item = (K, V)>,
) {
    for (key, value) in fields {
        doc.insert_absent(key, value);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::api::{CloudTrailTransform, JsonTransform, LambdaTransform, VpcFlowLogTransform};

    fn all() -> Vec<Compiled> {
        [
            Transform::Lambda(LambdaTransform {}),
            Transform::Json(JsonTransform {}),
            Transform::VpcFlowLog(VpcFlowLogTransform::default()),
            Transform::CloudTrail(CloudTrailTransform {}),
        ]
        .iter()
        .map(Compiled::new)
        .collect()
    }

    /// Messages shaped like the inputs the transforms look for, and noise.
    fn message() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,80}",
            "(START|END|REPORT) RequestId: [a-z0-9-]{0,12}(\t[A-Za-z ]{1,16}: [0-9.]{0,6} (ms|MB)){0,5}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,12}Z\t[a-f0-9-]{0,8}\t[A-Z]{0,5}\t\\PC{0,20}",
            "2 [0-9]{12} eni-[a-f0-9]{4}( [0-9.-]{1,15}){4}( [0-9-]{1,6}){5} (ACCEPT|REJECT|-) (OK|NODATA)",
            "\\{\"(Records|eventTime|a)\":(\\[|\\{|\"|[0-9])\\PC{0,30}",
        ]
    }

    proptest! {
        /// Whatever the message, the transforms never panic, never lose the event
        /// and never change `@id` except to derive per-record ids from it.
        #[test]
        fn any_message_through_every_transform(message in message()) {
            let doc = json!({"@id": "49590", "@timestamp": "2026-11-25T19:44:28.711Z", "@message": message});
            let out = apply(&all(), Document::from(doc.as_object().unwrap().clone()));
            prop_assert!(!out.is_empty());
            for d in &out {
                let id = d["@id"].as_str().unwrap();
                prop_assert!(id == "49590" || id.starts_with("49590-"), "{}", id);
            }
        }
    }

    #[test]
    fn transforms_run_in_order() {
        let doc = json!({"@id": "1", "@message": "2026-11-25T19:44:28.711Z\tf1b2\tINFO\t{\"user\":\"ann\"}"});
        let transforms: Vec<Compiled> = [
            Transform::Lambda(LambdaTransform {}),
            Transform::Json(JsonTransform {}),
        ]
        .iter()
        .map(Compiled::new)
        .collect();
        let out = apply(
            &transforms,
            Document::from(doc.as_object().unwrap().clone()),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0]["user"], "ann",
            "json parsed the body lambda split off"
        );
        assert_eq!(out[0]["lambda"]["request_id"], "f1b2");
    }
}
