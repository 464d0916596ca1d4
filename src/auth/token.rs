//! Reading the OIDC token (file, GCP metadata server, command) and the claims pail may log.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::AuthError;
use super::gcp::fetch_identity_token;
use crate::config::{Secret, TokenSource};

/// How long a token command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The claims of a JWT that say whose it is — safe to log, unlike the token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub azp: Option<String>,
    pub exp: Option<i64>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Aud>::deserialize(d)? {
        None => Vec::new(),
        Some(Aud::One(a)) => vec![a],
        Some(Aud::Many(a)) => a,
    })
}

impl Claims {
    /// The claims of `token` when it is a JWT; `None` for anything else.
    pub fn of(token: &str) -> Option<Self> {
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl fmt::Display for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let none = "-";
        write!(
            f,
            "iss={} aud={} exp={}",
            self.iss.as_deref().unwrap_or(none),
            if self.aud.is_empty() {
                none.to_string()
            } else {
                self.aud.join(",")
            },
            self.exp
                .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
                .map_or(none.to_string(), |t| t.to_rfc3339())
        )
    }
}

/// Reads the token now (files and commands are read again at every refresh).
pub async fn read_token(source: &TokenSource) -> Result<Secret, AuthError> {
    let token = match source {
        TokenSource::File(path) => {
            tokio::fs::read_to_string(path)
                .await
                .map_err(|e| AuthError::TokenFile {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
        }
        TokenSource::Gcp { audience, host } => fetch_identity_token(host, audience).await?,
        TokenSource::Command(argv) => run_command(argv).await?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        let (what, path) = match source {
            TokenSource::File(p) => ("file", p.display().to_string()),
            TokenSource::Gcp { host, .. } => ("metadata server", host.clone()),
            TokenSource::Command(argv) => ("command", argv.first().cloned().unwrap_or_default()),
        };
        return Err(AuthError::TokenFile {
            path,
            message: format!("the {what} gave an empty token"),
        });
    }
    if let Some(claims) = Claims::of(&token) {
        tracing::debug!(iss = ?claims.iss, sub = ?claims.sub, aud = ?claims.aud, azp = ?claims.azp,
            exp = ?claims.exp, "web identity token read");
    }
    Ok(Secret::new(token))
}

async fn run_command(argv: &[String]) -> Result<String, AuthError> {
    let program = argv.first().cloned().unwrap_or_default();
    let err = |message: String| AuthError::TokenCommand {
        program: program.clone(),
        message,
    };
    let child = tokio::process::Command::new(&program)
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child)
        .await
        .map_err(|_| err(format!("no answer within {COMMAND_TIMEOUT:?}")))?
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        // stderr names the problem; stdout might hold a partial token, so it is not shown.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr: String = stderr.trim().chars().take(300).collect();
        return Err(err(format!("exited with {}: {stderr}", out.status)));
    }
    String::from_utf8(out.stdout).map_err(|_| err("printed a token that is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    #[test]
    fn claims_are_read_without_the_signature_and_print_without_the_token() {
        let token = jwt(
            r#"{"iss":"https://accounts.google.com","sub":"1234","aud":"pail","azp":"55","exp":1800000000}"#,
        );
        let c = Claims::of(&token).unwrap();
        assert_eq!(c.sub.as_deref(), Some("1234"));
        assert_eq!(c.aud, vec!["pail".to_string()]);
        let shown = c.to_string();
        assert!(
            shown.contains("iss=https://accounts.google.com aud=pail exp=2027-01-15"),
            "{shown}"
        );
        assert!(!shown.contains(&token));
        let many = Claims::of(&jwt(r#"{"aud":["a","b"]}"#)).unwrap();
        assert_eq!(many.aud, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(Claims::of("not a jwt"), None);
        assert_eq!(Claims::of("a.%%%.c"), None);
    }

    #[tokio::test]
    async fn a_failing_command_names_its_stderr_and_an_empty_token_is_refused() {
        let argv = |s: &[&str]| TokenSource::Command(s.iter().map(|a| a.to_string()).collect());
        let e = read_token(&argv(&[
            "sh",
            "-c",
            "echo partial-token; echo 'not logged in' >&2; exit 3",
        ]))
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not logged in") && !e.contains("partial-token"),
            "{e}"
        );
        let e = read_token(&argv(&["true"])).await.unwrap_err().to_string();
        assert!(e.contains("empty token"), "{e}");
        let t = read_token(&argv(&["echo", " tok "])).await.unwrap();
        assert_eq!(t.expose(), "tok");
    }
}
