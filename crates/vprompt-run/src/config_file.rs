//! Reading typed config files: TOML straight into the config types, with every error naming the
//! file and the key path.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{ConfigError, Result, RunError, io};

/// Reads `path` into `T`. A syntax error names the file and the line; a non-finite number (`nan`,
/// `inf`), a value of the wrong type, an unknown or a missing field names its key path
/// (`training.learning_rate: must be a finite number, got nan`). `what` names the kind of file in
/// messages (`run config`).
pub fn read<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    parse(&text).map_err(|e| RunError::Parse {
        path: path.to_path_buf(),
        what,
        source: Box::new(e),
    })
}

/// Parses TOML text into `T` (see [`read`]); a syntax error has an empty key path.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let syntax = |e: toml::de::Error| ConfigError::new("", format!("not valid TOML: {e}"));
    let table: toml::Table = toml::from_str(text).map_err(syntax)?;
    check_finite(&toml::Value::Table(table), "")?;
    let deserializer = toml::Deserializer::parse(text).map_err(syntax)?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_string();
        ConfigError::new(if path == "." { String::new() } else { path }, message)
    })
}

/// Refuses non-finite floats anywhere in `value`, naming their key path: TOML has `nan` and
/// `inf`, and no setting of vprompt means them.
fn check_finite(value: &toml::Value, path: &str) -> Result<(), ConfigError> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        toml::Value::Float(f) if !f.is_finite() => Err(ConfigError::new(
            path,
            format!("must be a finite number, got {f}"),
        )),
        toml::Value::Table(table) => table.iter().try_for_each(|(k, v)| check_finite(v, &join(k))),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_finite(v, &format!("{path}[{i}]"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        rate: f64,
        #[serde(default)]
        count: usize,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    #[test]
    fn errors_name_the_key_path() {
        let err = |text: &str| parse::<Outer>(text).unwrap_err().to_string();
        assert_eq!(
            err("[inner]\nrate = nan"),
            "inner.rate: must be a finite number, got NaN"
        );
        assert!(err("[inner]\nrate = -inf").starts_with("inner.rate: must be a finite number"));
        assert!(err("[inner]\nrate = 1.0\ncount = \"x\"").starts_with("inner.count: invalid type"));
        let unknown = err("[inner]\nrate = 1.0\ncuont = 2");
        assert!(
            unknown.starts_with("inner.cuont: unknown field `cuont`"),
            "{unknown}"
        );
        assert!(err("[inner]").contains("missing field `rate`"));
        assert!(err("inner = [").contains("not valid TOML"));
        assert_eq!(parse::<Outer>("[inner]\nrate = 0.5").unwrap().inner.rate, 0.5);
    }
}

#[cfg(test)]
mod fuzz {
    use crate::config::RunConfig;
    use crate::experiment::ExperimentConfig;

    /// Mutation fuzzing of the config parser on the committed experiment configs and a run config:
    /// any text gives a config or an error naming what is wrong, never a panic (the same checks
    /// `validate` runs included). Bounded in CI; `VPROMPT_FUZZ_CASES=100000` runs longer.
    #[test]
    fn damaged_configs_give_errors_not_panics() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let mut experiments: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        experiments.sort();
        for path in experiments {
            let valid = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            vprompt_testkit::fuzz::run(&name, &valid, 200, 16 << 20, |bytes| {
                let Ok(text) = std::str::from_utf8(bytes) else {
                    return false;
                };
                super::parse::<ExperimentConfig>(text).is_ok_and(|c| c.validate().is_ok())
            });
        }
        let run = b"run_dir = \"runs/x\"\nmapping = { Iterative = { every = 1 } }\n[data]\nformat = \"folder\"\n\
                    path = \"train\"\ntest_path = \"test\"\nfew_shot = 16\n[backbone]\npreset = \"resnet50\"\n\
                    weights = \"r.pth\"\n[prompt]\nPadding = { pad = 30 }\n[method.VisualPrompt]\nrecipe = \"paper\"\nepochs = 20\n\
                    learning_rate = 40.0\nschedule = { WarmupCosine = { warmup = 1000 } }\n";
        super::parse::<RunConfig>(std::str::from_utf8(run).unwrap())
            .unwrap()
            .validate()
            .unwrap();
        vprompt_testkit::fuzz::run("run config", run, 400, 16 << 20, |bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return false;
            };
            super::parse::<RunConfig>(text).is_ok_and(|c| c.validate().is_ok())
        });
    }
}
