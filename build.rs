//! Build script: turns `docs/openapi.yaml` (the one source of the API document) into the JSON
//! that `GET /v1/openapi.json` serves, so the served document can never drift from the file.
//! It maps the parsed YAML tree (yaml-rust2) to `serde_json::Value`; it never parses text itself.

use yaml_rust2::{Yaml, YamlLoader};

fn to_json(yaml: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(text) => Value::from(text.parse::<f64>().expect("a YAML real is a float")),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    // OpenAPI keys are strings; response codes (`200:`) parse as integers.
                    let key = match key {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("docs/openapi.yaml: unsupported map key {other:?}"),
                    };
                    (key, to_json(value))
                })
                .collect(),
        ),
        other => panic!("docs/openapi.yaml: unsupported YAML node {other:?}"),
    }
}

fn main() {
    println!("cargo:rerun-if-changed=docs/openapi.yaml");
    let text = std::fs::read_to_string("docs/openapi.yaml").expect("read docs/openapi.yaml");
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("docs/openapi.yaml: {e}"));
    let [doc] = &docs[..] else {
        panic!("docs/openapi.yaml must hold exactly one YAML document");
    };
    let json = serde_json::to_string(&to_json(doc)).expect("serialise the OpenAPI document");
    let out = std::path::Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("openapi.json");
    std::fs::write(out, json).expect("write openapi.json");
}
