//! The JSON Schemas in docs/schema/ (for editors) accept what Hookyard
//! accepts: the defaults, the example config and every example flow; and
//! refuse a misspelt key, as the daemon does.

use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{ROOT}/{path}"))
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path} is YAML: {e}"))
}

fn json(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{ROOT}/{path}"))
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is JSON: {e}"))
}

fn validator(path: &str) -> jsonschema::Validator {
    let registry = jsonschema::Registry::new()
        .add(
            "https://hookyard.dev/schema/flow.schema.json",
            json("docs/schema/flow.schema.json"),
        )
        .and_then(|r| r.prepare())
        .expect("a registry");
    jsonschema::options()
        .with_registry(&registry)
        .build(&json(path))
        .unwrap_or_else(|e| panic!("{path} is a schema: {e}"))
}

fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_config_schema_accepts_the_defaults_and_the_example_and_refuses_a_typo() {
    let schema = validator("docs/schema/hookyard.schema.json");
    for path in ["server/src/config/defaults.yaml", "examples/hookyard.yaml"] {
        let found = errors(&schema, &yaml(path));
        assert!(found.is_empty(), "{path}: {found:?}");
    }
    let mut typo = yaml("examples/hookyard.yaml");
    typo["delivery"]["max_inflight"] = Value::from(4);
    assert!(
        !errors(&schema, &typo).is_empty(),
        "a misspelt key is refused"
    );
}

#[test]
fn the_flow_schema_accepts_every_example_flow_and_refuses_a_typo() {
    let schema = validator("docs/schema/flow.schema.json");
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{ROOT}/examples/flows")).expect("examples/flows") {
        let path = entry.expect("an entry").path();
        let name = format!(
            "examples/flows/{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        );
        let found = errors(&schema, &yaml(&name));
        assert!(found.is_empty(), "{name}: {found:?}");
        checked += 1;
    }
    assert!(checked >= 5, "{checked} example flows");
    let mut typo = yaml("examples/flows/onboarding.yaml");
    typo["steps"][0]["htp"] = Value::Null;
    assert!(
        !errors(&schema, &typo).is_empty(),
        "a misspelt step key is refused"
    );
}
