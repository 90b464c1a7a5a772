//! Sources between the wire (`hookyard.v1.Source`) and the model. Secrets
//! and tokens go in, never out: answers carry a hint of the secret only.

use hookyard::v1 as pb;

use super::convert::timestamp;
use crate::intake::{
    event::FieldError,
    sources::{Encoding, NameRule, Policy, RateLimit, Signature, Source, SourceStatus},
};

pub fn source_to_pb(s: &Source, rejections: std::collections::BTreeMap<String, u64>) -> pb::Source {
    let now = crate::model::now_ms();
    pb::Source {
        id: s.id.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        status: status_to_pb(s.status) as i32,
        tenant_id: s.tenant_id.clone().unwrap_or_default(),
        event_name: Some(pb::EventNameRule {
            rule: Some(match &s.policy.event_name {
                NameRule::Fixed(n) => pb::event_name_rule::Rule::Fixed(n.clone()),
                NameRule::Field(f) => pb::event_name_rule::Rule::Field(f.clone()),
                NameRule::Template(t) => pb::event_name_rule::Rule::Template(t.clone()),
            }),
        }),
        schema_json: s
            .policy
            .schema
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default(),
        signature: Some(signature_to_pb(&s.policy.signature)),
        allowed_cidrs: s
            .policy
            .allowed_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect(),
        rate_limit: s.policy.rate_limit.map(|r| pb::SourceRateLimit {
            per_second: r.per_second,
            burst: r.burst,
        }),
        allowed_origins: s.policy.allowed_origins.clone(),
        version: s.version,
        created_at: timestamp(s.created_ms),
        updated_at: timestamp(s.updated_ms),
        deleted_at: s.deleted_ms.and_then(timestamp),
        previous_token_expires_at: s
            .previous_token
            .filter(|(_, expires)| *expires > now)
            .and_then(|(_, expires)| timestamp(expires)),
        rejections: rejections.into_iter().collect(),
    }
}

fn signature_to_pb(sig: &Signature) -> pb::SourceSignature {
    let (scheme, header, encoding) = match sig {
        Signature::None => (pb::SignatureScheme::None, "", Encoding::Hex),
        Signature::StandardWebhooks { .. } => {
            (pb::SignatureScheme::StandardWebhooks, "", Encoding::Hex)
        }
        Signature::Github { .. } => (pb::SignatureScheme::Github, "", Encoding::Hex),
        Signature::Stripe { .. } => (pb::SignatureScheme::Stripe, "", Encoding::Hex),
        Signature::HmacSha256 {
            header, encoding, ..
        } => (pb::SignatureScheme::HmacSha256, header.as_str(), *encoding),
    };
    pb::SourceSignature {
        scheme: scheme as i32,
        secret: String::new(),
        secret_hint: hint(sig.secret()),
        header: header.to_string(),
        encoding: match encoding {
            Encoding::Hex => pb::SignatureEncoding::Hex,
            Encoding::Base64 => pb::SignatureEncoding::Base64,
        } as i32,
    }
}

/// `…abcd`: enough to tell secrets apart, too little to use one.
fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 16 {
        return if secret.is_empty() {
            String::new()
        } else {
            "…".into()
        };
    }
    format!("…{}", chars[chars.len() - 4..].iter().collect::<String>())
}

fn status_to_pb(status: SourceStatus) -> pb::SourceStatus {
    match status {
        SourceStatus::Active => pb::SourceStatus::Active,
        SourceStatus::Inactive => pb::SourceStatus::Inactive,
        SourceStatus::Suspended => pb::SourceStatus::Suspended,
    }
}

/// The model of a wire source, or every field that cannot be read. The
/// token fields are left for the caller to fill.
pub fn source_from_pb(p: pb::Source) -> Result<Source, Vec<FieldError>> {
    let mut errors = Vec::new();
    let status = match pb::SourceStatus::try_from(p.status) {
        Ok(pb::SourceStatus::Unspecified | pb::SourceStatus::Active) => SourceStatus::Active,
        Ok(pb::SourceStatus::Inactive) => SourceStatus::Inactive,
        Ok(pb::SourceStatus::Suspended) => SourceStatus::Suspended,
        Err(_) => {
            errors.push(FieldError::new(&["status"], "is not a known status"));
            SourceStatus::Active
        }
    };
    let event_name = match p.event_name.and_then(|r| r.rule) {
        Some(pb::event_name_rule::Rule::Fixed(n)) => NameRule::Fixed(n),
        Some(pb::event_name_rule::Rule::Field(f)) => NameRule::Field(f),
        Some(pb::event_name_rule::Rule::Template(t)) => NameRule::Template(t),
        None => {
            errors.push(FieldError::new(
                &["event_name"],
                "is required: a fixed name, a field or a template",
            ));
            NameRule::default()
        }
    };
    let schema = match p.schema_json.trim() {
        "" => None,
        text => serde_json::from_str(text)
            .map_err(|e| {
                errors.push(FieldError::new(
                    &["schema_json"],
                    format!("is not JSON: {e}"),
                ))
            })
            .ok(),
    };
    let signature = signature_from_pb(p.signature, &mut errors);
    let mut allowed_cidrs = Vec::new();
    for (i, cidr) in p.allowed_cidrs.iter().enumerate() {
        match cidr.parse() {
            Ok(net) => allowed_cidrs.push(net),
            Err(_) => errors.push(FieldError::new(
                &["allowed_cidrs", &i.to_string()],
                format!("`{cidr}` is not a CIDR such as 10.0.0.0/8"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Source {
        id: p.id,
        name: p.name,
        description: p.description,
        status,
        tenant_id: (!p.tenant_id.is_empty()).then_some(p.tenant_id),
        policy: Policy {
            event_name,
            schema,
            signature,
            allowed_cidrs,
            rate_limit: p.rate_limit.map(|r| RateLimit {
                per_second: r.per_second,
                burst: r.burst,
            }),
            allowed_origins: p.allowed_origins,
        },
        token_hash: [0; 32],
        previous_token: None,
        version: p.version,
        created_ms: 0,
        updated_ms: 0,
        deleted_ms: None,
    })
}

fn signature_from_pb(p: Option<pb::SourceSignature>, errors: &mut Vec<FieldError>) -> Signature {
    let Some(p) = p else {
        return Signature::None;
    };
    let secret = p.secret;
    match pb::SignatureScheme::try_from(p.scheme) {
        Ok(pb::SignatureScheme::None) => Signature::None,
        Ok(pb::SignatureScheme::StandardWebhooks) => Signature::StandardWebhooks { secret },
        Ok(pb::SignatureScheme::Github) => Signature::Github { secret },
        Ok(pb::SignatureScheme::Stripe) => Signature::Stripe { secret },
        Ok(pb::SignatureScheme::HmacSha256) => Signature::HmacSha256 {
            secret,
            header: p.header,
            encoding: match pb::SignatureEncoding::try_from(p.encoding) {
                Ok(pb::SignatureEncoding::Base64) => Encoding::Base64,
                _ => Encoding::Hex,
            },
        },
        Err(_) => {
            errors.push(FieldError::new(
                &["signature", "scheme"],
                "is not a known scheme",
            ));
            Signature::None
        }
    }
}
