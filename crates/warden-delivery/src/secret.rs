//! Secrets of destinations (HMAC keys, HEC tokens, verification tokens): only references,
//! `env:NAME` or `file:/absolute/path`, are ever accepted and stored; the value is read when
//! a batch is sent, so a rotated secret is picked up without a restart.

/// The explanation every refused secret carries (never the refused value: it may be the
/// secret someone pasted, and error messages end up in logs).
pub const SECRET_FORMS: &str = "a secret value may not be stored; reference it as env:NAME \
     (an environment variable of the Warden process) or file:/absolute/path (a file Warden \
     reads when it sends)";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(String),
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        if let Some(name) = s.strip_prefix("env:") {
            let mut b = name.bytes();
            let ok = matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
                && name.len() <= 256;
            return if ok {
                Ok(SecretRef::Env(name.to_owned()))
            } else {
                Err(format!(
                    "`env:` must be followed by an environment variable name; {SECRET_FORMS}"
                ))
            };
        }
        if let Some(path) = s.strip_prefix("file:") {
            let ok = path.starts_with('/')
                && path.len() > 1
                && path.len() <= 4096
                && !path.chars().any(char::is_control)
                && !path.split('/').any(|seg| seg == "..");
            return if ok {
                Ok(SecretRef::File(path.to_owned()))
            } else {
                Err(format!(
                    "`file:` must be followed by an absolute path without `..`; {SECRET_FORMS}"
                ))
            };
        }
        Err(format!("this is not a secret reference: {SECRET_FORMS}"))
    }

    /// Reads the value now. A file's trailing newline is not part of the secret.
    pub fn resolve(&self) -> Result<String, String> {
        let v = match self {
            SecretRef::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?,
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file {path}: {e}"))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if v.is_empty() {
            return Err(format!("secret {self} is empty"));
        }
        Ok(v)
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_references_parse_and_errors_never_repeat_the_value() {
        assert_eq!(
            SecretRef::parse("env:HOOK_SECRET"),
            Ok(SecretRef::Env("HOOK_SECRET".into()))
        );
        assert!(SecretRef::parse("file:/run/secrets/hec").is_ok());
        for bad in ["s3cr3t-value", "env:1X", "file:relative", "file:/a/../b"] {
            let e = SecretRef::parse(bad).unwrap_err();
            assert!(!e.contains(bad), "{e}");
        }
    }
}
