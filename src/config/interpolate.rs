//! `${VAR}` interpolation from the environment, applied to every string value of the file.
//!
//! Interpolation runs on parsed TOML values rather than on the raw text, so a secret that
//! contains quotes or newlines cannot change the structure of the file.

use thiserror::Error;

/// A reference to the environment that could not be resolved.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${NAME}` where NAME is not set and no default was given.
    #[error("environment variable {name} is not set (use ${{{name}:-default}} for a fallback)")]
    Unset { name: String },
    /// `${` without a closing brace, or an empty or invalid name. The value itself is not
    /// shown (it may be a secret that happens to contain `${`): the key names it, this says
    /// where in it.
    #[error(
        "malformed ${{...}} reference at character {at} of the value: {why} (write $$ for a literal $)"
    )]
    Malformed { at: usize, why: &'static str },
}

/// Replaces `${NAME}` and `${NAME:-default}` with values from `lookup`; `$$` is a literal `$`.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let at = text.len() - rest.len() + pos + 1;
            let end = body.find('}').ok_or(InterpolateError::Malformed {
                at,
                why: "missing closing '}'",
            })?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(InterpolateError::Malformed {
                    at,
                    why: "variable names are letters, digits and '_'",
                });
            }
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(InterpolateError::Unset {
                        name: name.to_string(),
                    });
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Interpolates every string in a TOML tree; the error names the dotted key path.
pub fn interpolate_tree(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, InterpolateError)> {
    match value {
        toml::Value::String(s) => {
            *s = interpolate(s, lookup).map_err(|e| (path.join("."), e))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                let result = interpolate_tree(item, path, lookup);
                path.pop();
                path.push(last);
                result?;
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                path.push(key.clone());
                let result = interpolate_tree(item, path, lookup);
                path.pop();
                result?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_references_defaults_and_escapes() {
        assert_eq!(interpolate("x${A}y", &env).unwrap(), "xalphay");
        assert_eq!(interpolate("${MISSING:-d}", &env).unwrap(), "d");
        assert_eq!(interpolate("${EMPTY:-d}", &env).unwrap(), "");
        assert_eq!(interpolate("$$A and $x", &env).unwrap(), "$A and $x");
    }

    #[test]
    fn unset_and_malformed_are_errors() {
        assert_eq!(
            interpolate("${NOPE}", &env),
            Err(InterpolateError::Unset {
                name: "NOPE".into()
            })
        );
        assert!(matches!(
            interpolate("${A", &env),
            Err(InterpolateError::Malformed { .. })
        ));
        assert!(matches!(
            interpolate("${1A}", &env),
            Err(InterpolateError::Malformed { .. })
        ));
    }

    #[test]
    fn tree_errors_name_the_key_path() {
        let mut v: toml::Value = toml::from_str("[[d]]\nx = \"${NOPE}\"").unwrap();
        let err = interpolate_tree(&mut v, &mut Vec::new(), &env).unwrap_err();
        assert_eq!(err.0, "d[0].x");
    }
}

#[cfg(test)]
mod secrecy {
    use super::*;

    #[test]
    fn a_malformed_reference_does_not_print_the_value() {
        let secret = "pa55${word-with-dash}";
        let e = interpolate(secret, &|_| None).unwrap_err().to_string();
        assert!(!e.contains("pa55") && !e.contains("word"), "{e}");
        assert!(e.contains("character 5"), "{e}");
    }
}
