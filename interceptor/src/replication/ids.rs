//! The two names of a replicated or cross resource: its meta-ID, the same at every site, and
//! the local ID that each site's instance gave it. Rewriting between them in request paths,
//! request bodies (meta-IDs become local IDs) and answers (the ID field becomes the meta-ID).
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::resources::LocalId;
use crate::resources::MetaIdShape;

/// The same at every site, of the shape the service's rule says: `CHEOPS_` and a ULID (unique
/// without coordination, sorted by creation time) or a random UUID (v4: 122 random bits, so
/// that clients that check IDs take it; no site's instance gives one it already holds, since
/// each of its own IDs is as random).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MetaId(String);

const META_PREFIX: &str = "CHEOPS_";

impl MetaId {
    pub fn generate(shape: MetaIdShape) -> MetaId {
        match shape {
            MetaIdShape::Cheops => MetaId(format!("{META_PREFIX}{}", ulid::Ulid::generate())),
            MetaIdShape::Uuid => MetaId(uuid::Uuid::new_v4().hyphenated().to_string()),
        }
    }

    /// `text` as a meta-ID, if it has a meta-ID's shape. A UUID may as well be a local ID:
    /// only the store tells whether it names a replicated or cross resource.
    pub fn parse(text: &str) -> Option<MetaId> {
        let shaped = match text.strip_prefix(META_PREFIX) {
            Some(ulid) => ulid::Ulid::from_string(ulid).is_ok(),
            None => text.len() == 36 && uuid::Uuid::try_parse(text).is_ok(),
        };
        shaped.then(|| MetaId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MetaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Replaces every string of a JSON body that is a meta-ID known here by this site's local ID;
/// meta-IDs cannot be mistaken for anything else, so they are replaced wherever they appear.
/// `None` when the body is not JSON or holds no known meta-ID (then it is sent as it came).
pub fn metas_to_locals(body: &str, local: impl Fn(&MetaId) -> Option<LocalId>) -> Option<String> {
    fn walk(value: &mut Value, local: &dyn Fn(&MetaId) -> Option<LocalId>) -> bool {
        match value {
            Value::String(s) => match MetaId::parse(s).and_then(|meta| local(&meta)) {
                Some(id) => {
                    *value = id.to_json();
                    true
                }
                None => false,
            },
            Value::Array(items) => items.iter_mut().fold(false, |c, v| walk(v, local) | c),
            Value::Object(fields) => fields.values_mut().fold(false, |c, v| walk(v, local) | c),
            _ => false,
        }
    }
    let mut value: Value = serde_json::from_str(body).ok()?;
    walk(&mut value, &local).then(|| value.to_string())
}

/// Replaces, in an answer that is one resource or a list of them (an array, or one at `items`
/// in an object), the ID field of each resource that has a meta-ID by that meta-ID. Only the ID
/// field: a local ID such as `3` is no name anywhere else. `None` when nothing was replaced.
pub fn locals_to_metas(
    body: &str,
    items: Option<&str>,
    pointer: &str,
    meta: impl Fn(&LocalId) -> Option<MetaId>,
) -> Option<String> {
    let mut value: Value = serde_json::from_str(body).ok()?;
    let replace = |resource: &mut Value| {
        let Some(field) = resource.pointer_mut(pointer) else {
            return false;
        };
        match LocalId::from_json(field).and_then(|id| meta(&id)) {
            Some(meta) => {
                *field = Value::from(meta.as_str());
                true
            }
            None => false,
        }
    };
    let listed = match items {
        Some(items) if value.pointer(items).is_some_and(Value::is_array) => {
            value.pointer_mut(items)
        }
        _ => Some(&mut value),
    };
    let replaced = match listed {
        Some(Value::Array(items)) => items.iter_mut().fold(false, |c, v| replace(v) | c),
        Some(resource) => replace(resource),
        None => false,
    };
    replaced.then(|| value.to_string())
}

/// `target` with each query value that is a meta-ID known here replaced by the local ID;
/// `None` when nothing was replaced.
pub fn metas_in_query(target: &str, local: impl Fn(&MetaId) -> Option<LocalId>) -> Option<String> {
    let (path, query) = target.split_once('?')?;
    let mut replaced = false;
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => match MetaId::parse(value).and_then(|meta| local(&meta)) {
                Some(id) => {
                    replaced = true;
                    format!("{key}={id}")
                }
                None => pair.to_owned(),
            },
            None => pair.to_owned(),
        })
        .collect();
    replaced.then(|| format!("{path}?{}", pairs.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_ids_are_recognised_and_nothing_else_is() {
        let meta = MetaId::generate(MetaIdShape::Cheops);
        assert_eq!(MetaId::parse(meta.as_str()), Some(meta.clone()));
        assert!(meta.as_str().starts_with("CHEOPS_"));
        assert_eq!(MetaId::parse("CHEOPS_nope"), None);
        assert_eq!(MetaId::parse("42"), None);
        let uuid = MetaId::generate(MetaIdShape::Uuid);
        assert!(uuid::Uuid::try_parse(uuid.as_str()).is_ok(), "{uuid}");
        assert_eq!(MetaId::parse(uuid.as_str()), Some(uuid.clone()));
        assert_eq!(MetaId::parse(&uuid.as_str().replace('-', "")), None);
        assert!(MetaId::generate(MetaIdShape::Cheops) != meta);
    }

    #[test]
    fn meta_ids_in_bodies_become_this_sites_local_ids_with_their_json_type() {
        let a = MetaId::generate(MetaIdShape::Cheops);
        let b = MetaId::generate(MetaIdShape::Cheops);
        let unknown = MetaId::generate(MetaIdShape::Cheops);
        let body = format!(r#"{{"name":"x","image":"{a}","tags":["{b}","{unknown}"],"n":3}}"#);
        let rewritten = metas_to_locals(&body, |m| {
            (m == &a)
                .then_some(LocalId::Number(7))
                .or_else(|| (m == &b).then(|| LocalId::Text("k2".into())))
        })
        .unwrap();
        let value: Value = serde_json::from_str(&rewritten).unwrap();
        assert_eq!(value["image"], 7);
        assert_eq!(value["tags"][0], "k2");
        assert_eq!(value["tags"][1], unknown.as_str());
        assert_eq!(value["n"], 3);
        assert_eq!(metas_to_locals(r#"{"n":3}"#, |_| None), None);
        assert_eq!(metas_to_locals("plain text", |_| None), None);
    }

    #[test]
    fn only_the_id_field_of_answers_becomes_a_meta_id() {
        let meta = MetaId::generate(MetaIdShape::Cheops);
        let known = |id: &LocalId| (id == &LocalId::Number(3)).then(|| meta.clone());
        let one = locals_to_metas(r#"{"id":3,"size":3}"#, None, "/id", known).unwrap();
        let one: Value = serde_json::from_str(&one).unwrap();
        assert_eq!(one["id"], meta.as_str());
        assert_eq!(one["size"], 3);
        let list = locals_to_metas(r#"[{"id":3},{"id":4}]"#, None, "/id", known).unwrap();
        let list: Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list[0]["id"], meta.as_str());
        assert_eq!(list[1]["id"], 4);
        assert_eq!(locals_to_metas(r#"[{"id":4}]"#, None, "/id", known), None);
        let inside = r#"{"images":[{"id":3},{"id":4}],"next":"/v2/images?marker=4"}"#;
        let inside = locals_to_metas(inside, Some("/images"), "/id", known).unwrap();
        let inside: Value = serde_json::from_str(&inside).unwrap();
        assert_eq!(inside["images"][0]["id"], meta.as_str());
        assert_eq!(inside["next"], "/v2/images?marker=4");
    }

    #[test]
    fn meta_ids_in_the_query_become_local_ids() {
        let meta = MetaId::generate(MetaIdShape::Uuid);
        let local = |m: &MetaId| (m == &meta).then(|| LocalId::Text("l-1".into()));
        let target = format!("/v2/images?limit=2&marker={meta}");
        assert_eq!(
            metas_in_query(&target, local).unwrap(),
            "/v2/images?limit=2&marker=l-1"
        );
        assert_eq!(metas_in_query("/v2/images?limit=2", local), None);
    }
}
