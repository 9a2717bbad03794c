//! Lists of a collection from several sites as one: where a site's items sit in its answer (the
//! answer itself, or a field of an object), how its list goes on (a page number the client asks
//! for next, or a link that cheops follows to the last page), and the merged answer, which
//! shows each replicated or cross resource once, from one site only, on every page.
use serde_json::Value;

use super::ids::MetaId;
use crate::resources::{IdSource, JsonField, ResourceRule};

/// Most pages followed at one site: a list whose `next` never ends is cut there.
pub const MOST_PAGES: usize = 1000;

/// Where a rule's list answers hold what.
#[derive(Debug, Clone, Default)]
pub struct ListShape {
    items: Option<String>,
    id: Option<String>,
    next: Option<String>,
}

impl ListShape {
    pub fn of(rule: &ResourceRule) -> ListShape {
        ListShape {
            items: rule.list.as_ref().map(|f| f.pointer().to_owned()),
            id: match &rule.id {
                IdSource::Json(pointer) => Some(pointer.clone()),
                IdSource::Location => None,
            },
            next: rule
                .next
                .as_ref()
                .map(JsonField::pointer)
                .map(str::to_owned),
        }
    }

    fn items_of<'v>(&self, answer: &'v Value) -> Option<&'v Vec<Value>> {
        match &self.items {
            Some(items) => answer.pointer(items)?.as_array(),
            None => answer.as_array(),
        }
    }

    /// The path and query of the next page when the answer continues by a link.
    pub fn link(&self, answer: &Value) -> Option<String> {
        let link = answer.pointer(self.next.as_deref()?)?.as_str()?;
        let path = match link.find("://") {
            Some(at) => &link[at + 3..][link[at + 3..].find('/')?..],
            None => link,
        };
        path.starts_with('/').then(|| path.to_owned())
    }
}

/// One site's list: its first page's answer, and the items of every page it gave.
pub struct SiteList {
    pub site: String,
    pub first: Value,
    pub items: Vec<Value>,
}

impl SiteList {
    /// A site's first page; `Err` names the site whose answer is not a list of this shape.
    pub fn new(site: &str, shape: &ListShape, body: &str) -> Result<SiteList, String> {
        let first: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let items = shape.items_of(&first).cloned().ok_or_else(|| {
            let at = shape
                .items
                .as_deref()
                .map_or(String::new(), |p| format!(" at {p}"));
            format!("site {site}'s list has no JSON array{at}")
        })?;
        Ok(SiteList {
            site: site.to_owned(),
            first,
            items,
        })
    }

    /// Adds the items of a page that followed; `Err` as in `new`.
    pub fn add_page(&mut self, shape: &ListShape, page: &Value) -> Result<(), String> {
        let items = shape
            .items_of(page)
            .ok_or_else(|| format!("site {}'s next page holds no list", self.site))?;
        self.items.extend(items.iter().cloned());
        Ok(())
    }
}

/// The lists of several sites as one answer, shaped as the first site's: every resource, and a
/// resource named by a meta-ID only from the site `owner` gives it (its leader, or where a
/// cross resource lives), so that it appears once over every page; a meta-ID that this site
/// knows nothing of is kept once. A page number to go on is the first site's that has one;
/// links were followed, so the merged answer has none.
pub fn merged(
    shape: &ListShape,
    lists: &[SiteList],
    owner: impl Fn(&MetaId) -> Option<String>,
) -> String {
    let mut merged = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for list in lists {
        for item in &list.items {
            let meta = shape
                .id
                .as_deref()
                .and_then(|pointer| item.pointer(pointer))
                .and_then(Value::as_str)
                .and_then(MetaId::parse);
            let shown = match meta {
                None => true,
                Some(meta) => match owner(&meta) {
                    Some(owner) if lists.iter().any(|l| l.site == owner) => owner == list.site,
                    _ => seen.insert(meta),
                },
            };
            if shown {
                merged.push(item.clone());
            }
        }
    }
    let Some(first) = lists.first() else {
        return Value::Array(merged).to_string();
    };
    let mut answer = first.first.clone();
    if let Some(next) = &shape.next {
        let page = lists
            .iter()
            .filter_map(|l| l.first.pointer(next))
            .find(|n| n.is_number())
            .cloned();
        set_or_remove(&mut answer, next, page);
    }
    match &shape.items {
        Some(items) => set_or_remove(&mut answer, items, Some(Value::Array(merged))),
        None => answer = Value::Array(merged),
    }
    answer.to_string()
}

/// Sets the field at `pointer` (its parent exists), or removes it when `value` is `None`.
fn set_or_remove(answer: &mut Value, pointer: &str, value: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let parent = if parent.is_empty() {
        Some(answer)
    } else {
        answer.pointer_mut(parent)
    };
    if let Some(Value::Object(fields)) = parent {
        match value {
            Some(value) => fields.insert(key.to_owned(), value),
            None => fields.remove(key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::MetaIdShape;

    fn rule(list: Option<&str>, next: Option<&str>) -> ListShape {
        let rule = ResourceRule::parse("/v2/images", "/v2/images/{id}", "json:id").unwrap();
        let rule = match list {
            Some(list) => rule.listed_at(list, next).unwrap(),
            None => rule,
        };
        ListShape::of(&rule)
    }

    fn list(site: &str, shape: &ListShape, body: String) -> SiteList {
        SiteList::new(site, shape, &body).unwrap()
    }

    #[test]
    fn a_replicated_resource_is_shown_by_its_owner_only_and_an_unknown_one_once() {
        let shape = rule(None, None);
        let (led_by_s2, unknown) = (
            MetaId::generate(MetaIdShape::Uuid),
            MetaId::generate(MetaIdShape::Cheops),
        );
        let one = list(
            "S1",
            &shape,
            format!(r#"[{{"id":"{led_by_s2}","at":1}},{{"id":"{unknown}"}},{{"id":1}}]"#),
        );
        let two = list(
            "S2",
            &shape,
            format!(r#"[{{"id":1}},{{"id":"{led_by_s2}","at":2}},{{"id":"{unknown}"}}]"#),
        );
        let owner = |m: &MetaId| (m == &led_by_s2).then(|| "S2".to_owned());
        let merged: Value = serde_json::from_str(&merged(&shape, &[one, two], owner)).unwrap();
        let merged = merged.as_array().unwrap();
        assert_eq!(merged.len(), 4, "{merged:?}");
        let shown: Vec<&Value> = merged
            .iter()
            .filter(|i| i["id"] == led_by_s2.as_str())
            .collect();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0]["at"], 2);
    }

    #[test]
    fn lists_inside_objects_keep_their_shape_and_page_numbers() {
        let shape = rule(Some("json:data"), Some("json:next"));
        let one = list(
            "S1",
            &shape,
            r#"{"data":[{"id":"a"}],"next":null,"first":1}"#.into(),
        );
        let two = list(
            "S2",
            &shape,
            r#"{"data":[{"id":"b"}],"next":2,"first":1}"#.into(),
        );
        let merged: Value = serde_json::from_str(&merged(&shape, &[one, two], |_| None)).unwrap();
        assert_eq!(merged["data"].as_array().unwrap().len(), 2);
        assert_eq!(merged["next"], 2);
        assert_eq!(merged["first"], 1);
        let bad = SiteList::new("S3", &shape, r#"{"items":[]}"#)
            .err()
            .unwrap();
        assert_eq!(bad, "site S3's list has no JSON array at /data");
    }

    #[test]
    fn links_are_followed_so_the_merged_answer_has_none() {
        let shape = rule(Some("json:images"), Some("json:next"));
        let page: Value =
            serde_json::from_str(r#"{"images":[],"next":"/v2/images?marker=x&limit=2"}"#).unwrap();
        assert_eq!(shape.link(&page).unwrap(), "/v2/images?marker=x&limit=2");
        let absolute: Value =
            serde_json::from_str(r#"{"next":"http://198.18.0.1:9292/v2/images?marker=y"}"#)
                .unwrap();
        assert_eq!(shape.link(&absolute).unwrap(), "/v2/images?marker=y");
        let mut one = list("S1", &shape, page.to_string());
        one.add_page(&shape, &serde_json::json!({"images":[{"id":"z"}]}))
            .unwrap();
        let merged: Value = serde_json::from_str(&merged(&shape, &[one], |_| None)).unwrap();
        assert_eq!(merged["images"][0]["id"], "z");
        assert!(merged.get("next").is_none(), "{merged}");
    }
}
