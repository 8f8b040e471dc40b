//! Typed configs: [`config!`](crate::config!) and [`ConfigError`].

use std::fmt;

/// A setting that is missing, malformed or out of range: the key path (`training.learning_rate`,
/// `prompt.Padding.pad`) and the reason (`must be finite and > 0, got nan`).
///
/// Library configs name their own fields (`learning_rate`); whoever embeds them in a larger config
/// prefixes the section with [`within`](Self::within), so the user reads the path of their file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path from the config's root; empty for the config as a whole.
    pub path: String,
    /// What is wrong, and what is expected.
    pub reason: String,
}

impl ConfigError {
    /// The setting at `path` is wrong because of `reason`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same error inside section `section` (`learning_rate` -> `training.learning_rate`).
    pub fn within(mut self, section: &str) -> Self {
        self.path = match (section.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => section.to_string(),
            (false, false) => format!("{section}.{}", self.path),
        };
        self
    }

    /// Checks that `value` is finite and `> 0`.
    pub fn positive(path: &str, value: f64) -> Result<(), Self> {
        if value.is_finite() && value > 0.0 {
            Ok(())
        } else {
            Err(Self::new(path, format!("must be finite and > 0, got {value}")))
        }
    }

    /// Checks that `value` is finite and `>= 0`.
    pub fn non_negative(path: &str, value: f64) -> Result<(), Self> {
        if value.is_finite() && value >= 0.0 {
            Ok(())
        } else {
            Err(Self::new(path, format!("must be finite and >= 0, got {value}")))
        }
    }

    /// Checks that a count is at least 1.
    pub fn at_least_one(path: &str, value: impl Into<u64>) -> Result<(), Self> {
        let value = value.into();
        if value >= 1 {
            Ok(())
        } else {
            Err(Self::new(path, format!("must be at least 1, got {value}")))
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The leaf settings where two serialised configs differ, as `key.path: old -> new` in key
/// order: how a run directory says why it holds another run.
pub fn key_path_differences(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_differences(old, new, String::new(), &mut out);
    out
}

fn collect_differences(old: &serde_json::Value, new: &serde_json::Value, at: String, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                collect_differences(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    path,
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{at}: {a} -> {b}")),
        _ => {}
    }
}

/// Declares a typed config struct: the required fields, then the fields with defaults.
///
/// ```
/// vprompt_core::config! {
///     /// A frame around the image.
///     pub struct FrameConfig {
///         /// Frame width in pixels.
///         pub pad: usize,
///     }
///     defaults {
///         /// Image channels.
///         pub channels: usize = 3,
///         /// Seed of the initial values.
///         pub seed: u64 = 0,
///     }
/// }
///
/// let config = FrameConfig::new(30).with_seed(7);
/// assert_eq!((config.pad, config.channels, config.seed), (30, 3, 7));
/// // Omitted fields take their defaults; unknown fields are refused.
/// let parsed: FrameConfig = toml::from_str("pad = 30\nseed = 7").unwrap();
/// assert_eq!(parsed, config);
/// assert!(toml::from_str::<FrameConfig>("pad = 30\npadd = 4").is_err());
/// assert!(toml::from_str::<FrameConfig>("seed = 7").is_err(), "`pad` is required");
/// ```
///
/// It generates the struct (`Clone`, `Debug`, `PartialEq`, serde), `new(required..)` with every
/// other field at its default, a `with_<field>` builder per defaulted field, a `Deserialize` that
/// fills omitted defaulted fields and refuses unknown ones, and Burn's `Config` trait. The crate
/// using it needs `serde` and `vprompt-core` as dependencies.
#[macro_export]
macro_rules! config {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$rmeta:meta])* $rvis:vis $rfield:ident : $rty:ty ),* $(,)?
        }
        defaults {
            $( $(#[$dmeta:meta])* $dvis:vis $dfield:ident : $dty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, $crate::__private::serde::Serialize)]
        #[serde(crate = "vprompt_core::__private::serde")]
        $vis struct $name {
            $( $(#[$rmeta])* $rvis $rfield: $rty, )*
            $(
                $(#[$dmeta])*
                #[doc = concat!("\n\nDefault: `", stringify!($default), "`.")]
                $dvis $dfield: $dty,
            )*
        }

        impl $name {
            /// The config with these required fields and every other field at its default.
            #[allow(clippy::new_without_default)]
            pub fn new($($rfield: $rty),*) -> Self {
                Self {
                    $( $rfield, )*
                    $( $dfield: $default, )*
                }
            }

            $crate::__private::paste! {
                $(
                    #[doc = concat!("With another `", stringify!($dfield), "`.")]
                    pub fn [<with_ $dfield>](mut self, $dfield: $dty) -> Self {
                        self.$dfield = $dfield;
                        self
                    }
                )*
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D>(deserializer: D) -> ::std::result::Result<Self, D::Error>
            where
                D: $crate::__private::serde::Deserializer<'de>,
            {
                // The same fields, the defaulted ones optional: what a file may leave out.
                #[derive($crate::__private::serde::Deserialize)]
                #[serde(crate = "vprompt_core::__private::serde", deny_unknown_fields)]
                struct Fields {
                    $( $rfield: $rty, )*
                    $( #[serde(default)] $dfield: ::std::option::Option<$dty>, )*
                }
                let fields = Fields::deserialize(deserializer)?;
                Ok(Self {
                    $( $rfield: fields.$rfield, )*
                    $( $dfield: fields.$dfield.unwrap_or_else(|| $default), )*
                })
            }
        }

        impl $crate::__private::burn::config::Config for $name {}
    };
}

#[cfg(test)]
mod differences_tests {
    #[test]
    fn differences_name_each_changed_leaf_by_its_key_path() {
        let old = serde_json::json!({"data": {"path": "a", "seed": 0}, "prompt": {"Padding": {"pad": 30}}});
        let new =
            serde_json::json!({"data": {"path": "a", "seed": 1}, "prompt": {"Padding": {"pad": 20}}, "x": 2});
        assert_eq!(
            super::key_path_differences(&old, &new),
            [
                "data.seed: 0 -> 1",
                "prompt.Padding.pad: 30 -> 20",
                "x: null -> 2"
            ]
        );
        assert!(super::key_path_differences(&old, &old).is_empty());
    }
}
