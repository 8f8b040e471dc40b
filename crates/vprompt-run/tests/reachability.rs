//! Every setting of the library's training configs can be set from a run config's TOML: for each
//! field of `TrainingConfig`, `BlackBoxConfig` and `LinearProbeConfig` (walked from the configs
//! themselves, so a field added to the library is checked the day it is added), a run config
//! setting it to a value other than the default parses, and the effective config the run trains
//! with carries that value. A field not reachable fails this test, naming it.

use serde_json::{Value, json};
use vprompt_run::{MethodConfig, RunConfig, parse_config};
use vprompt_train::{BlackBoxConfig, LinearProbeConfig, TrainingConfig, ZerothOrderConfig};

const HEAD: &str = "run_dir = \"r\"\n[data]\nformat = \"fashion-mnist\"\npath = \"d\"\n";

/// A value of the same type as `value` that differs from it (objects and strings: `changed`).
fn other(key: &str, value: &Value) -> Value {
    match (key, value) {
        ("optimizer", Value::Object(o)) if o.contains_key("Sgd") => json!("NormalizedGradient"),
        ("optimizer", _) => json!({"Rgf": {
            "directions": 3, "smoothing": 0.5, "learning_rate": 0.2, "learning_rate_min": 0.01
        }}),
        ("schedule", _) => json!("Constant"),
        (_, Value::Number(n)) if n.is_u64() => json!(n.as_u64().unwrap() + 3),
        (_, Value::Number(n)) => json!(n.as_f64().unwrap() * 0.5),
        (_, Value::Bool(b)) => json!(!b),
        ("query_budget", Value::Null) => json!(1000),
        (_, Value::Null) => json!(0.25),
        (key, v) => panic!("no other value for `{key}` = {v}: teach this test one"),
    }
}

/// Parses `section` with `key = value` (and the section's required settings but `key`) into a run
/// config and returns the effective library config's JSON.
fn effective(
    section: &str,
    required: &[(&str, Value)],
    key: &str,
    value: &Value,
    effective: impl Fn(&RunConfig) -> Value,
) -> Value {
    let line = |k: &str, v: &Value| format!("{k} = {}\n", toml::Value::try_from(v).unwrap());
    let mut text = format!("{HEAD}{section}\n");
    for (k, v) in required.iter().filter(|(k, _)| *k != key) {
        text += &line(k, v);
    }
    text += &line(key, value);
    let config: RunConfig =
        parse_config(&text).unwrap_or_else(|e| panic!("`{key}` is not reachable from TOML: {e}\n{text}"));
    effective(&config)
}

fn check(
    name: &str,
    default: Value,
    section: &str,
    required: &[(&str, Value)],
    elsewhere: &[(&str, &str)],
    config: impl Fn(&RunConfig) -> Value,
) {
    let fields = default.as_object().unwrap();
    assert!(!fields.is_empty());
    for (key, value) in fields {
        if let Some((_, route)) = elsewhere.iter().find(|(k, _)| k == key) {
            eprintln!("{name}.{key}: set by {route}");
            continue;
        }
        let wanted = other(key, value);
        let got = effective(section, required, key, &wanted, &config);
        assert_eq!(
            got[key], wanted,
            "{name}.{key}: set to {wanted} in `{section}`, the run trains with {}",
            got[key]
        );
    }
}

#[test]
fn every_library_training_setting_is_reachable_from_toml() {
    check(
        "TrainingConfig",
        serde_json::to_value(TrainingConfig::paper()).unwrap(),
        "[method.VisualPrompt]",
        &[],
        &[(
            "mapping",
            "the run's `mapping` (fitted or learned ones become the trainer's)",
        )],
        |c| serde_json::to_value(c.training_config().unwrap()).unwrap(),
    );
    let spsa: ZerothOrderConfig = serde_json::from_value(json!({"SpsaGc": {
        "draws": 1, "a": 0.01, "c": 0.01, "o": 0.0, "alpha": 0.6, "gamma": 0.1, "momentum": 0.9
    }}))
    .unwrap();
    check(
        "BlackBoxConfig",
        serde_json::to_value(BlackBoxConfig::new(5, spsa.clone())).unwrap(),
        "[method.BlackBox]\nmodel = \"Local\"",
        &[("optimizer", serde_json::to_value(&spsa).unwrap())],
        &[],
        |c| match &c.method {
            MethodConfig::BlackBox(choice) => serde_json::to_value(choice.config()).unwrap(),
            m => panic!("{m:?}"),
        },
    );
    // The black-box optimiser is required: a section without one is refused by name.
    let text = format!("{HEAD}[method.BlackBox]\nmodel = \"Local\"\n");
    let err = parse_config::<RunConfig>(&text).unwrap_err().to_string();
    assert!(err.contains("optimizer"), "{err}");
    check(
        "LinearProbeConfig",
        serde_json::to_value(LinearProbeConfig::new()).unwrap(),
        "[method.LinearProbe]",
        &[],
        &[],
        |c| match &c.method {
            MethodConfig::LinearProbe(choice) => serde_json::to_value(choice.config()).unwrap(),
            m => panic!("{m:?}"),
        },
    );
}
