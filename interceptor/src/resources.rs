//! Resource rules: per service, which paths are a collection of resources and which address
//! one, and where a created resource's ID is found. From these, a request is classified as a
//! create, a list, a read or a write of one resource; the rest of the service is opaque to us.
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The ID a site's instance gave a resource: JSON numbers stay numbers when written back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LocalId {
    Number(i64),
    Text(String),
}

impl LocalId {
    pub fn from_json(value: &Value) -> Option<LocalId> {
        match value {
            Value::Number(n) => n.as_i64().map(LocalId::Number),
            Value::String(s) if !s.is_empty() => Some(LocalId::Text(s.clone())),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            LocalId::Number(n) => Value::from(*n),
            LocalId::Text(s) => Value::from(s.as_str()),
        }
    }
}

impl fmt::Display for LocalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalId::Number(n) => write!(f, "{n}"),
            LocalId::Text(s) => f.write_str(s),
        }
    }
}

/// One kind of resource of a service, as written in the configuration (`[[service.resource]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRule {
    /// The collection: a POST here creates a resource, a GET lists them (`/pods`).
    pub collection: String,
    /// The path of one resource, `{id}` standing for its ID (`/pods/{id}`).
    pub item: ItemPattern,
    /// Where a created resource's ID is found: `json:FIELD` (a field of the JSON answer, also
    /// the field rewritten in answers) or `location` (the last segment of `Location`).
    pub id: IdSource,
    /// Where a list answer's items sit (`json:images`); none: the answer is the array itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<JsonField>,
    /// Where a list answer says how it goes on (`json:next`): a page number (the next page
    /// is asked for by the client, of every site) or a link (followed by cheops, to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<JsonField>,
    /// The path of a resource's binary content (`/v2/images/{id}/file`): its bodies are
    /// streamed, never kept nor logged; an upload to a replicated resource goes to every replica
    /// at once, each under its own local ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ItemPattern>,
    /// The shape of meta-IDs: `cheops` (`CHEOPS_<ulid>`, the default) or `uuid`, for clients
    /// that check that an ID is a UUID (every OpenStack service).
    #[serde(default)]
    pub meta_id: MetaIdShape,
}

/// The shape of a service's meta-IDs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaIdShape {
    #[default]
    Cheops,
    Uuid,
}

/// A field of a JSON answer, configured as `json:FIELD` (`json:a/b` for a nested one), kept as
/// a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonField(String);

impl JsonField {
    pub fn parse(text: &str) -> Result<JsonField, String> {
        json_pointer(text)
            .map(JsonField)
            .ok_or_else(|| format!("`\"{text}\"`: expected \"json:FIELD\" (e.g. \"json:images\")"))
    }

    /// The JSON pointer (`/images`).
    pub fn pointer(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for JsonField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        JsonField::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for JsonField {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("json:{}", &self.0[1..]))
    }
}

/// `/a/b` from `json:a/b` or `json:/a/b`.
fn json_pointer(text: &str) -> Option<String> {
    match text.strip_prefix("json:")? {
        field if field.starts_with('/') && field.len() > 1 => Some(field.to_owned()),
        field if !field.is_empty() && !field.starts_with('/') => Some(format!("/{field}")),
        _ => None,
    }
}

/// Where the ID of a resource is found in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// A field of the JSON object, as a JSON pointer (`json:id` is `/id`).
    Json(String),
    /// The last path segment of the `Location` header of the create answer.
    Location,
}

impl<'de> Deserialize<'de> for IdSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IdSource::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Written as it is configured, so that a configuration written out reads back the same.
impl Serialize for IdSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IdSource::Json(pointer) => serializer.serialize_str(&format!("json:{pointer}")),
            IdSource::Location => serializer.serialize_str("location"),
        }
    }
}

impl IdSource {
    fn parse(text: &str) -> Result<IdSource, String> {
        if text == "location" {
            return Ok(IdSource::Location);
        }
        match json_pointer(text) {
            Some(pointer) => Ok(IdSource::Json(pointer)),
            None => Err(format!(
                "`id = \"{text}\"`: expected \"json:FIELD\" (e.g. \"json:id\") or \"location\""
            )),
        }
    }

    /// The ID of the resource that a create answer describes.
    pub fn created_id(&self, location: Option<&str>, body: &str) -> Option<LocalId> {
        match self {
            IdSource::Location => {
                let path = location?.split(['?', '#']).next()?;
                let last = path.trim_end_matches('/').rsplit('/').next()?;
                (!last.is_empty()).then(|| LocalId::Text(last.to_owned()))
            }
            IdSource::Json(pointer) => {
                let answer: Value = serde_json::from_str(body).ok()?;
                LocalId::from_json(answer.pointer(pointer)?)
            }
        }
    }
}

/// A path with one `{id}` segment: `/pods/{id}` or `/v2/images/{id}/file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemPattern {
    segments: Vec<String>,
    id_at: usize,
}

impl<'de> Deserialize<'de> for ItemPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ItemPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Written as it is configured, so that a configuration written out reads back the same.
impl Serialize for ItemPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("/{}", self.segments.join("/")))
    }
}

impl ItemPattern {
    pub fn parse(text: &str) -> Result<ItemPattern, String> {
        if !text.starts_with('/') {
            return Err(format!("`item = \"{text}\"` must start with '/'"));
        }
        let segments: Vec<String> = segments(text).map(str::to_owned).collect();
        let ids: Vec<usize> = (0..segments.len())
            .filter(|&i| segments[i] == "{id}")
            .collect();
        match ids[..] {
            [id_at] => Ok(ItemPattern { segments, id_at }),
            _ => Err(format!(
                "`item = \"{text}\"` must hold `{{id}}` exactly once, as a whole segment"
            )),
        }
    }

    /// The ID in `path`, if `path` addresses one resource of this pattern.
    pub fn id_in<'p>(&self, path: &'p str) -> Option<&'p str> {
        let mut id = None;
        let mut count = 0;
        for (i, segment) in segments(path).enumerate() {
            let expected = self.segments.get(i)?;
            if i == self.id_at {
                id = Some(segment);
            } else if expected != segment {
                return None;
            }
            count += 1;
        }
        (count == self.segments.len()).then_some(id?)
    }

    /// `path_and_query` with the ID replaced by `id` (the query kept as is).
    pub fn with_id(&self, path_and_query: &str, id: &str) -> String {
        let (path, query) = split_query(path_and_query);
        let mut rebuilt = String::with_capacity(path_and_query.len() + id.len());
        for (i, segment) in segments(path).enumerate() {
            rebuilt.push('/');
            rebuilt.push_str(if i == self.id_at { id } else { segment });
        }
        rebuilt.push_str(query);
        rebuilt
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.trim_matches('/').split('/').filter(|s| !s.is_empty())
}

/// `("/a/b", "?x=1")` from `"/a/b?x=1"`.
pub fn split_query(path_and_query: &str) -> (&str, &str) {
    match path_and_query.find('?') {
        Some(at) => path_and_query.split_at(at),
        None => (path_and_query, ""),
    }
}

/// What a request does, as far as the resource rules tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressed<'r> {
    /// POST on a collection.
    Create(&'r ResourceRule),
    /// GET or HEAD on a collection.
    List(&'r ResourceRule),
    /// GET or HEAD on one resource.
    Read(&'r ResourceRule, &'r str),
    /// Any other method on one resource (PUT, PATCH, DELETE, POST).
    Write(&'r ResourceRule, &'r str),
    /// Nothing the rules know about.
    Other,
}

/// Classifies `method` on `path_and_query` by the first rule that recognises it.
pub fn classify<'r>(
    rules: &'r [ResourceRule],
    method: &str,
    path_and_query: &'r str,
) -> Addressed<'r> {
    let (path, _) = split_query(path_and_query);
    let reads = method == "GET" || method == "HEAD";
    for rule in rules {
        if segments(path).eq(segments(&rule.collection)) {
            if method == "POST" {
                return Addressed::Create(rule);
            }
            if reads {
                return Addressed::List(rule);
            }
        }
        if let Some(id) = rule.item.id_in(path) {
            return if reads {
                Addressed::Read(rule, id)
            } else {
                Addressed::Write(rule, id)
            };
        }
    }
    Addressed::Other
}

/// The rule whose content path `path_and_query` is, and the ID in it.
pub fn content_of<'r>(
    rules: &'r [ResourceRule],
    path_and_query: &'r str,
) -> Option<(&'r ResourceRule, &'r str)> {
    let (path, _) = split_query(path_and_query);
    rules
        .iter()
        .find_map(|rule| Some((rule, rule.content.as_ref()?.id_in(path)?)))
}

/// Checks the rules of one service; the error names the rule, the caller names the service.
pub fn check(rules: &[ResourceRule]) -> Result<(), String> {
    for rule in rules {
        if !rule.collection.starts_with('/') {
            return Err(format!(
                "resource `collection = \"{}\"` must start with '/'",
                rule.collection
            ));
        }
        if rule.item.id_in(&rule.collection).is_some() {
            return Err(format!(
                "resource `collection = \"{}\"` also matches its `item` pattern",
                rule.collection
            ));
        }
    }
    Ok(())
}

impl ResourceRule {
    /// A rule as the configuration writes it (`"/pods"`, `"/pods/{id}"`, `"json:id"`), for code
    /// that builds configurations; fails with the sentence loading such a file would give.
    pub fn parse(collection: &str, item: &str, id: &str) -> Result<ResourceRule, String> {
        Ok(ResourceRule {
            collection: collection.to_owned(),
            item: ItemPattern::parse(item)?,
            id: IdSource::parse(id)?,
            list: None,
            next: None,
            content: None,
            meta_id: MetaIdShape::default(),
        })
    }

    /// The same rule for lists whose items sit at `list` and go on at `next` (`"json:data"`,
    /// `Some("json:next")`).
    pub fn listed_at(mut self, list: &str, next: Option<&str>) -> Result<ResourceRule, String> {
        self.list = Some(JsonField::parse(list)?);
        self.next = next.map(JsonField::parse).transpose()?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> ResourceRule {
        ResourceRule::parse("/pods", "/pods/{id}", "json:id").unwrap()
    }

    #[test]
    fn list_rules_read_and_write_back_as_configured() {
        let text = "collection = \"/v2/images\"\nitem = \"/v2/images/{id}\"\nid = \"json:id\"\n\
                    list = \"json:images\"\nnext = \"json:links/next\"\nmeta_id = \"uuid\"\n";
        let rule: ResourceRule = toml::from_str(text).unwrap();
        assert_eq!(rule.list.as_ref().unwrap().pointer(), "/images");
        assert_eq!(rule.next.as_ref().unwrap().pointer(), "/links/next");
        assert_eq!(rule.meta_id, MetaIdShape::Uuid);
        let again: ResourceRule = toml::from_str(&toml::to_string(&rule).unwrap()).unwrap();
        assert_eq!(again, rule);
        let plain = pods();
        assert_eq!((plain.list, plain.meta_id), (None, MetaIdShape::Cheops));
        let bad = toml::from_str::<ResourceRule>(&text.replace("json:images", "images"));
        assert!(bad.unwrap_err().to_string().contains("json:FIELD"));
    }

    #[test]
    fn requests_are_classified_by_method_and_path() {
        let rules = [pods()];
        assert_eq!(
            classify(&rules, "POST", "/pods"),
            Addressed::Create(&rules[0])
        );
        assert_eq!(
            classify(&rules, "GET", "/pods/?limit=3"),
            Addressed::List(&rules[0])
        );
        assert_eq!(
            classify(&rules, "GET", "/pods/7"),
            Addressed::Read(&rules[0], "7")
        );
        assert_eq!(
            classify(&rules, "DELETE", "/pods/a1"),
            Addressed::Write(&rules[0], "a1")
        );
        assert_eq!(classify(&rules, "PUT", "/pods"), Addressed::Other);
        assert_eq!(classify(&rules, "GET", "/pods/7/logs"), Addressed::Other);
        assert_eq!(classify(&rules, "GET", "/images/7"), Addressed::Other);
    }

    #[test]
    fn content_paths_are_found_by_the_rule_that_names_them() {
        let mut images = ResourceRule::parse("/v2/images", "/v2/images/{id}", "json:id").unwrap();
        images.content = Some(ItemPattern::parse("/v2/images/{id}/file").unwrap());
        let rules = [pods(), images];
        let (rule, id) = content_of(&rules, "/v2/images/abc/file?x").unwrap();
        assert_eq!((rule.collection.as_str(), id), ("/v2/images", "abc"));
        assert_eq!(content_of(&rules, "/v2/images/abc"), None);
        assert_eq!(
            classify(&rules, "PUT", "/v2/images/abc/file"),
            Addressed::Other
        );
    }

    #[test]
    fn the_id_is_found_and_replaced_inside_longer_patterns() {
        let file = ItemPattern::parse("/v2/images/{id}/file").unwrap();
        assert_eq!(file.id_in("/v2/images/abc/file"), Some("abc"));
        assert_eq!(file.id_in("/v2/images/abc"), None);
        assert_eq!(
            file.with_id("/v2/images/abc/file?x=1", "CHEOPS_1"),
            "/v2/images/CHEOPS_1/file?x=1"
        );
    }

    #[test]
    fn created_ids_come_from_a_json_field_or_the_location() {
        let json = IdSource::parse("json:metadata/uid").unwrap();
        assert_eq!(
            json.created_id(None, r#"{"metadata":{"uid":"u-1"}}"#),
            Some(LocalId::Text("u-1".into()))
        );
        assert_eq!(
            IdSource::parse("json:id")
                .unwrap()
                .created_id(None, r#"{"id":12}"#),
            Some(LocalId::Number(12))
        );
        assert_eq!(json.created_id(None, "not json"), None);
        assert_eq!(
            IdSource::Location.created_id(Some("http://x/pods/9?y"), ""),
            Some(LocalId::Text("9".into()))
        );
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!(IdSource::parse("body").unwrap_err().contains("json:FIELD"));
        assert!(ItemPattern::parse("/pods/{id}/{id}")
            .unwrap_err()
            .contains("exactly once"));
        assert!(ItemPattern::parse("pods/{id}")
            .unwrap_err()
            .contains("start with"));
        let mut rule = pods();
        rule.collection = "/pods/{id}".into();
        assert!(check(&[rule]).unwrap_err().contains("matches its `item`"));
    }
}
