//! Turning a trigger into a run to create: the inputs are checked against
//! the flow's declaration (every failing field listed), the correlation key
//! is rendered, and what the run's templates will see as `event` or
//! `trigger` is captured. The run itself is created by the writer, which
//! applies the concurrency policy in the same transaction.

use serde_json::{json, Map, Value};

use super::{
    compiled::{render_inputs, CompiledFlow, SubscriptionInputs},
    inputs, template,
};
use crate::model::{run::NewRun, FieldError, NewEvent};

/// How a run was started.
pub enum Trigger {
    Api,
    Admin,
    /// `POST /hooks/{flow}/{key}`: the body and headers, as `trigger`.
    Webhook {
        body: Value,
        headers: Map<String, Value>,
    },
}

/// A run from given inputs (API, Admin, webhook), or every problem with them.
pub fn from_inputs(
    flow: &CompiledFlow,
    given: Map<String, Value>,
    trigger: Trigger,
) -> Result<NewRun, Vec<FieldError>> {
    let (kind, data, allow_unknown, given) = match trigger {
        Trigger::Api => ("api", json!({}), false, given),
        Trigger::Admin => ("admin", json!({}), false, given),
        Trigger::Webhook { body, headers } => {
            let data = json!({"body": body, "headers": headers});
            let given = if flow.webhook_inputs.is_empty() {
                given
            } else {
                let ctx = template::value(&json!({ "trigger": data }));
                render_inputs(&flow.templates, &flow.webhook_inputs, &ctx)
                    .map_err(|e| vec![FieldError::new(&[], e)])?
            };
            ("webhook", data, true, given)
        }
    };
    let inputs = inputs::validate(&flow.def.inputs, given, allow_unknown)?;
    let key = correlation_key(flow, &inputs).map_err(|e| vec![FieldError::new(&[], e)])?;
    Ok(NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        flow_id: flow.def.id.clone(),
        flow_version: flow.version,
        key,
        inputs: Value::Object(inputs).to_string(),
        trigger: kind.to_string(),
        trigger_data: data.to_string(),
        concurrency: flow.def.concurrency,
        failed: None,
    })
}

/// A run for an event routed to the flow by a subscription. Inputs that do
/// not render or validate make a FAILED run that says why, since the event
/// itself was fine and is accepted.
pub fn from_event(
    flow: &CompiledFlow,
    sub_inputs: &SubscriptionInputs,
    event: &NewEvent,
) -> NewRun {
    let event_json = event_json(event);
    let ctx = template::value(&json!({ "event": event_json }));
    let checked = sub_inputs
        .render(&ctx)
        .map_err(|e| format!("the subscription's inputs did not render: {e}"))
        .and_then(|given| {
            inputs::validate(&flow.def.inputs, given, false).map_err(|errors| {
                format!(
                    "the inputs from event {} are not valid: {}",
                    event.id,
                    errors
                        .iter()
                        .map(|e| format!("{}: {}", e.dotted("inputs"), e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
        });
    let (inputs, key, failed) = match checked.and_then(|inputs| {
        let key = correlation_key(flow, &inputs)?;
        Ok((inputs, key))
    }) {
        Ok((inputs, key)) => (inputs, key, None),
        Err(error) => (Map::new(), None, Some(error)),
    };
    NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        flow_id: flow.def.id.clone(),
        flow_version: flow.version,
        key,
        inputs: Value::Object(inputs).to_string(),
        trigger: format!("event:{}", event.id),
        trigger_data: event_json.to_string(),
        concurrency: flow.def.concurrency,
        failed,
    }
}

fn correlation_key(
    flow: &CompiledFlow,
    inputs: &Map<String, Value>,
) -> Result<Option<String>, String> {
    let Some(t) = flow.correlate_by else {
        return Ok(None);
    };
    let ctx = template::value(&json!({ "inputs": inputs }));
    let key = flow
        .templates
        .render(t, &ctx)
        .map_err(|e| format!("correlate_by did not render: {e}"))?;
    let key = key.trim();
    Ok((!key.is_empty()).then(|| key.to_string()))
}

/// Inputs sent as JSON bytes (gRPC); empty means none.
pub fn inputs_from_bytes(bytes: &[u8]) -> Result<Map<String, Value>, crate::intake::ApiError> {
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(crate::intake::ApiError::InvalidInputs(vec![
            FieldError::new(&[], "must be a JSON object"),
        ])),
        Err(e) => Err(crate::intake::ApiError::Malformed {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        }),
    }
}

/// What templates see as `event`.
pub fn event_json(event: &NewEvent) -> Value {
    json!({
        "id": event.id,
        "name": event.name,
        "source": event.source,
        "tenant_id": event.tenant_id,
        "time_ms": event.time_ms,
        "time": crate::timestamp::format_rfc3339_millis(event.time_ms),
        "payload": serde_json::from_str::<Value>(&event.payload).unwrap_or(Value::Null),
        "attributes": event.attributes,
    })
}
