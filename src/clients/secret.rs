use std::fmt;

/// Secret material (API secrets, passwords, session cookies). `Debug` and `Display` print
/// `[redacted]`; the value is reached only through [`SecretString::expose`], so every use is visible.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

// Deliberately no Serialize: secret material leaves the process only through explicit `expose()`.
impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = SecretString::new("2:hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "SecretString([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "2:hunter2-very-secret");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            secret: SecretString,
        }
        assert!(!format!("{:?}", Holder { secret: s }).contains("hunter2"));
    }
}
