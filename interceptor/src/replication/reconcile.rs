//! At a replica, an operation that was sent to the instance but whose result was never
//! recorded: the daemon died in between (or its store failed). Whether it took effect is asked
//! of the instance itself, by reading what it holds, so that the operation is applied once and
//! not again. What no read can tell is in docs/reliability.md.
use serde_json::Value;

use super::{
    call::{Answer, Call},
    exchange::Sites,
    ids::{metas_to_locals, LocalId},
    instance::{Instance, Refusal},
};
use crate::resources::{IdSource, ResourceRule};

/// Whether `item` holds every field of `fields` with the same value: what a create or an
/// update with `fields` left there.
fn holds(item: &Value, fields: &Value) -> bool {
    match fields.as_object() {
        Some(fields) => fields
            .iter()
            .all(|(name, value)| item.get(name) == Some(value)),
        None => false,
    }
}

/// The body as the instance got it (meta-IDs turned into local IDs), as JSON.
fn sent_body<S: Sites>(here: &Instance<'_, S>, call: &Call) -> Option<Value> {
    let body = metas_to_locals(&call.body, |meta| here.local_id_here(meta))
        .unwrap_or_else(|| call.body.clone());
    serde_json::from_str(&body).ok()
}

fn get(call: &Call, target: String) -> Call {
    Call {
        service: call.service.clone(),
        method: "GET".into(),
        target,
        headers: Vec::new(),
        body: String::new(),
    }
}

/// The resource a create `call` (POST on `rule`'s collection) made at this site's instance
/// before the crash, if it made one: by the ID the client chose, else the newest resource of
/// the collection that holds the create's fields and that no meta-ID names yet.
pub async fn created<S: Sites>(
    here: &Instance<'_, S>,
    rule: &ResourceRule,
    call: &Call,
) -> Result<Option<(Answer, LocalId)>, Refusal> {
    let IdSource::Json(pointer) = &rule.id else {
        // A `Location` ID is only known from the create's answer: nothing to look for.
        return Ok(None);
    };
    let Some(fields) = sent_body(here, call) else {
        return Ok(None);
    };
    if let Some(chosen) = fields.pointer(pointer).and_then(LocalId::from_json) {
        let target = rule.item.with_id(&call.target, &chosen.to_string());
        let answer = here.send_to_instance(get(call, target)).await?;
        return Ok(answer.is_success().then_some((answer, chosen)));
    }
    let listed = here
        .send_to_instance(get(call, call.target.clone()))
        .await?;
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&listed.body) else {
        return Ok(None);
    };
    for item in items.into_iter().rev() {
        let Some(id) = item.pointer(pointer).and_then(LocalId::from_json) else {
            continue;
        };
        if !holds(&item, &fields) {
            continue;
        }
        // A store that cannot tell whether the ID is named stops here: sending the create
        // again could make it twice.
        let named = here
            .store
            .meta_of(&call.service, here.site, &id)
            .map_err(|cause| Refusal::Store {
                site: here.site.to_owned(),
                store: here.store.path().to_owned(),
                cause: Box::new(cause),
            })?;
        if named.is_none() {
            let answer = Answer::new(201, "application/json", item.to_string());
            return Ok(Some((answer, id)));
        }
    }
    Ok(None)
}

/// Whether a write `call` (its target this site's local path) took effect at the instance: a
/// delete when the resource is gone, an update when the resource holds its fields. The answer
/// to give then.
pub async fn written<S: Sites>(
    here: &Instance<'_, S>,
    call: &Call,
) -> Result<Option<Answer>, Refusal> {
    let read = here
        .send_to_instance(get(call, call.target.clone()))
        .await?;
    Ok(match call.method.as_str() {
        "DELETE" if read.status == 404 => Some(Answer::new(200, "application/json", "{}".into())),
        "PUT" | "PATCH" if read.is_success() => {
            let item: Value = serde_json::from_str(&read.body).unwrap_or(Value::Null);
            sent_body(here, call)
                .is_some_and(|fields| holds(&item, &fields))
                .then_some(read)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::holds;

    #[test]
    fn an_item_holds_the_fields_it_was_given_whatever_else_it_has() {
        let item = json!({"id": 3, "name": "a", "size": 2});
        assert!(holds(&item, &json!({"name": "a"})));
        assert!(holds(&item, &json!({})));
        assert!(!holds(&item, &json!({"name": "b"})));
        assert!(!holds(&item, &json!({"colour": "red"})));
        assert!(!holds(&item, &json!("name")), "no object: nothing to tell");
    }
}
