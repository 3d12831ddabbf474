//! Reading a function's settings from its environment: each variable once,
//! failing fast with the variable's name and what it accepts. `var` looks a
//! variable up (`std::env::var` in the function; a map in tests, so they
//! never touch the process environment).

use std::ops::RangeInclusive;

/// A setting the function can't start with; names the variable and what it
/// accepts.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("environment variable {name} is required: {what}")]
    Missing {
        name: &'static str,
        what: &'static str,
    },
    #[error("environment variable {name} is {value:?}; accepted values: {accepted}")]
    Invalid {
        name: &'static str,
        value: String,
        accepted: String,
    },
}

/// The functions' `main` returns this error, and Rust prints a returned
/// error with `Debug`: what the person starting the function must read is
/// the message.
impl std::fmt::Debug for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl SettingError {
    pub fn invalid(
        name: &'static str,
        value: impl Into<String>,
        accepted: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            name,
            value: value.into(),
            accepted: accepted.into(),
        }
    }
}

/// A variable that must be set and not empty.
pub fn required(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    what: &'static str,
) -> Result<String, SettingError> {
    var(name)
        .filter(|value| !value.is_empty())
        .ok_or(SettingError::Missing { name, what })
}

/// `true` or `false`; unset or empty is `false`.
pub fn flag(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<bool, SettingError> {
    match var(name).as_deref() {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(SettingError::invalid(name, other, "true, false")),
    }
}

/// A whole number in `range`; unset is `default`.
pub fn number(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<u64, SettingError> {
    match var(name) {
        None => Ok(default),
        Some(value) => match value.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(SettingError::invalid(
                name,
                value,
                format!("a whole number from {} to {}", range.start(), range.end()),
            )),
        },
    }
}

/// Any text; unset is `default`.
pub fn text(var: &impl Fn(&str) -> Option<String>, name: &str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_owned())
}

/// A lookup in fixed variables, for tests.
pub fn vars(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_take_their_defaults() {
        let var = vars(&[]);
        assert_eq!(flag(&var, "F"), Ok(false));
        assert_eq!(number(&var, "N", 5, 1..=20), Ok(5));
        assert_eq!(text(&var, "T", "aws"), "aws");
        assert_eq!(
            required(&var, "R", "the thing").unwrap_err().to_string(),
            "environment variable R is required: the thing"
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_accepted_values() {
        let var = vars(&[("F", "yes"), ("N", "21"), ("M", "five"), ("R", "")]);
        assert_eq!(
            flag(&var, "F").unwrap_err().to_string(),
            "environment variable F is \"yes\"; accepted values: true, false"
        );
        for name in ["N", "M"] {
            let err = number(&var, name, 5, 1..=20).unwrap_err().to_string();
            assert!(
                err.ends_with("; accepted values: a whole number from 1 to 20"),
                "{err}"
            );
        }
        assert!(matches!(
            required(&var, "R", "the thing"),
            Err(SettingError::Missing { name: "R", .. })
        ));
        let var = vars(&[("F", "true"), ("N", "20"), ("R", "x")]);
        assert_eq!(flag(&var, "F"), Ok(true));
        assert_eq!(number(&var, "N", 5, 1..=20), Ok(20));
        assert_eq!(required(&var, "R", "the thing").as_deref(), Ok("x"));
    }
}
