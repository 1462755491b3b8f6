//! `spec.secret.template`: the Secret's data in the shape the application expects, rendered from Jinja templates
//! by `minijinja` (no loader, no include, no file access; see `Cargo.toml`). Pure.
//!
//! Bounds: the engine's fuel caps the work one template can make it do ([`FUEL`]), the writer caps what it may
//! write, and the whole rendered data is at most [`MAX_RENDERED_BYTES`]. An error names the template's key and the
//! engine's message, built from its kind and detail (never a source excerpt: the `debug` feature is off), with
//! every secret variable's value redacted as a second line of defence, and bounded in length.

use std::{collections::BTreeMap, fmt, io};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use sha2::{Digest, Sha256};

use crate::{
    api::{DataTemplate, MergePolicy},
    clients::{SecretString, redact::redact},
};

/// The rendered data of one Secret (default keys kept by `Merge` included), at most this many bytes: a quarter of
/// the API server's 1 MiB limit of an object.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;
/// The work one template may make the engine do: one unit is one instruction or 64 bytes produced.
pub const FUEL: u64 = 100_000;
/// An error message is cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 512;

/// The variables of a WorkloadApiKey's templates (`secret` is the only secret one).
pub const WORKLOAD_API_KEY_VARS: [&str; 8] =
    ["secret", "keyId", "endpoint", "api", "role", "expiresAt", "name", "namespace"];
/// The variables of a SecureWorkloadCredential's templates (`secret` and `credentialsJson` are secret).
pub const SECURE_WORKLOAD_CREDENTIAL_VARS: [&str; 6] =
    ["key", "secret", "endpoint", "credentialsJson", "name", "namespace"];

/// The values a template may use, each marked plain or secret. `Debug` shows only the names of secret ones.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    plain: BTreeMap<&'static str, String>,
    secret: BTreeMap<&'static str, SecretString>,
}

impl Vars {
    pub fn plain(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.plain.insert(name, value.into());
        self
    }

    pub fn secret(mut self, name: &'static str, value: SecretString) -> Self {
        self.secret.insert(name, value);
        self
    }

    /// Each name with a placeholder value (its own name), for checking a template before any secret exists.
    pub fn placeholders(names: &[&'static str]) -> Self {
        names.iter().fold(Self::default(), |vars, name| vars.plain(name, *name))
    }

    fn context(&self) -> Value {
        let plain = self.plain.iter().map(|(k, v)| (*k, Value::from(v.as_str())));
        let secret = self.secret.iter().map(|(k, v)| (*k, Value::from(v.expose())));
        Value::from(plain.chain(secret).collect::<BTreeMap<&str, Value>>())
    }

    /// Every text whose appearance in a message would disclose a secret value: each value, and each as JSON
    /// escapes it (what `tojson` or a quoting message would show).
    fn secret_texts(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for value in self.secret.values() {
            let raw = value.expose();
            texts.push(raw.to_owned());
            let quoted = serde_json::to_string(raw).unwrap_or_default();
            texts.push(quoted.trim_matches('"').to_owned());
        }
        texts
    }
}

/// What a kind writes into its Secret: its default keys, and the variables its template may use. Holds secret
/// values: `Debug` shows the keys and variable names only.
#[derive(Clone, Default)]
pub struct SecretContent {
    pub data: BTreeMap<String, Vec<u8>>,
    pub vars: Vars,
}

impl fmt::Debug for SecretContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretContent")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("vars", &self.vars)
            .finish()
    }
}

/// A template that does not render: its key and what went wrong, with no secret value in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.secret.template.data[{key:?}]: {message}")]
pub struct TemplateError {
    pub key: String,
    pub message: String,
}

/// A stable digest of what a template asks for (the data, the effective merge policy and type): recorded with each
/// write, so that a changed template is noticed without reading the Secret. `None` without a template.
pub fn digest(template: Option<&DataTemplate>) -> Option<String> {
    let t = template?;
    let canonical = serde_json::json!({
        "data": t.data,
        "mergePolicy": t.merge_policy(),
        "type": t.secret_type(),
    });
    Some(format!("sha256:{}", hex::encode(Sha256::digest(canonical.to_string().as_bytes()))))
}

/// The engine as every template uses it: an unknown variable is an error, nothing is escaped (the output is a
/// file, not HTML; `tojson` escapes where wanted), and the fuel bounds the work.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    env
}

/// Refuses writes past a budget shared by every template of one Secret.
struct Bounded<'a> {
    out: Vec<u8>,
    left: &'a mut usize,
    exceeded: bool,
}

impl io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > *self.left {
            self.exceeded = true;
            return Err(io::Error::other("rendered data too large"));
        }
        *self.left -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The Secret's data: the rendered templates (`Merge`: beside the default keys, which a template never overrides:
/// the API server refuses such a template). Fails on the first template that does not render.
pub fn render(template: &DataTemplate, content: &SecretContent) -> Result<BTreeMap<String, Vec<u8>>, TemplateError> {
    let env = environment();
    let ctx = content.vars.context();
    let mut data = match template.merge_policy() {
        MergePolicy::Merge => content.data.clone(),
        MergePolicy::Replace => BTreeMap::new(),
    };
    let kept: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    let mut left = MAX_RENDERED_BYTES.saturating_sub(kept);
    for (key, source) in &template.data {
        let fail = |message: String| TemplateError { key: key.clone(), message: safe_message(&message, &content.vars) };
        let compiled = env.template_from_named_str(key, source).map_err(|e| fail(engine_message(&e, &content.vars)))?;
        left = left.checked_sub(key.len()).ok_or_else(|| fail(too_large()))?;
        let mut out = Bounded { out: Vec::new(), left: &mut left, exceeded: false };
        let rendered = compiled.render_captured_to(ctx.clone(), &mut out);
        if out.exceeded {
            return Err(fail(too_large()));
        }
        rendered.map_err(|e| fail(engine_message(&e, &content.vars)))?;
        if data.contains_key(key) {
            return Err(fail("names a default key, which mergePolicy Merge keeps".into()));
        }
        data.insert(key.clone(), out.out);
    }
    Ok(data)
}

/// Renders every template with each of `names` standing for itself: what does not parse, names an unknown
/// variable or fails on any value is found before a vendor call makes a secret nobody could write.
pub fn check(template: &DataTemplate, names: &[&'static str]) -> Result<(), TemplateError> {
    let content = SecretContent { data: BTreeMap::new(), vars: Vars::placeholders(names) };
    render(template, &content).map(|_| ())
}

fn too_large() -> String {
    format!("the rendered Secret data would exceed {} KiB", MAX_RENDERED_BYTES / 1024)
}

/// The engine's message: its kind, detail and line (and, for an unknown variable, which ones there are). Never
/// `Display` with the alternate flag (which would add the source and values, were the `debug` feature on).
fn engine_message(e: &minijinja::Error, vars: &Vars) -> String {
    let mut message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        message.push_str(&format!(" (line {line})"));
    }
    if e.kind() == ErrorKind::UndefinedError {
        let mut names: Vec<&str> = vars.plain.keys().chain(vars.secret.keys()).copied().collect();
        names.sort_unstable();
        message.push_str(&format!("; the variables are {}", names.join(", ")));
    }
    message
}

/// `message` with every secret value redacted, cut to [`MAX_MESSAGE_CHARS`].
fn safe_message(message: &str, vars: &Vars) -> String {
    let texts = vars.secret_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let redacted = redact(message, &refs);
    match redacted.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &redacted[..at]),
        None => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "2:sEcReT\"value/with+chars";

    fn template(pairs: &[(&str, &str)], merge: Option<MergePolicy>) -> DataTemplate {
        DataTemplate {
            data: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            merge_policy: merge,
            type_: None,
        }
    }

    fn content() -> SecretContent {
        SecretContent {
            data: BTreeMap::from([
                ("api-secret-key".to_owned(), SECRET.as_bytes().to_vec()),
                ("endpoint".to_owned(), b"https://dsm.example.com/api".to_vec()),
            ]),
            vars: Vars::default()
                .secret("secret", SecretString::new(SECRET.to_owned()))
                .plain("keyId", "42")
                .plain("endpoint", "https://dsm.example.com/api")
                .plain("api", "DeepSecurity")
                .plain("role", "Auditor")
                .plain("expiresAt", "")
                .plain("name", "reporting")
                .plain("namespace", "team-a"),
        }
    }

    fn text(data: &BTreeMap<String, Vec<u8>>, key: &str) -> String {
        String::from_utf8(data[key].clone()).unwrap()
    }

    #[test]
    fn renders_every_variable() {
        let t = template(
            &[
                ("DS_API_KEY", "{{ secret }}"),
                (
                    "info",
                    "{{ keyId }} {{ endpoint }} {{ api }} {{ role }} [{{ expiresAt }}] {{ namespace }}/{{ name }}",
                ),
                ("config.json", r#"{"endpoint": {{ endpoint|tojson }}, "key": {{ secret|tojson }}}"#),
            ],
            None,
        );
        let data = render(&t, &content()).unwrap();
        assert_eq!(text(&data, "DS_API_KEY"), SECRET);
        assert_eq!(text(&data, "info"), "42 https://dsm.example.com/api DeepSecurity Auditor [] team-a/reporting");
        let json: serde_json::Value = serde_json::from_slice(&data["config.json"]).unwrap();
        assert_eq!(json["key"], SECRET, "tojson escapes the quote in the secret");
        assert_eq!(json["endpoint"], "https://dsm.example.com/api");
    }

    #[test]
    fn nothing_is_escaped_unless_asked_whatever_the_key_is_called() {
        // minijinja's default escapes by file extension (.html, .json); here the key is only a name.
        let t = template(&[("page.html", "<{{ secret }}>"), ("x.json", "{{ secret }}")], None);
        let data = render(&t, &content()).unwrap();
        assert_eq!(text(&data, "page.html"), format!("<{SECRET}>"));
        assert_eq!(text(&data, "x.json"), SECRET);
    }

    #[test]
    fn replace_keeps_only_templated_keys_and_merge_keeps_the_defaults() {
        let replace = render(&template(&[("K", "{{ secret }}")], None), &content()).unwrap();
        assert_eq!(replace.keys().collect::<Vec<_>>(), ["K"]);
        let explicit = render(&template(&[("K", "{{ secret }}")], Some(MergePolicy::Replace)), &content()).unwrap();
        assert_eq!(explicit, replace);
        let merge = render(&template(&[("K", "{{ secret }}")], Some(MergePolicy::Merge)), &content()).unwrap();
        assert_eq!(merge.keys().collect::<Vec<_>>(), ["K", "api-secret-key", "endpoint"]);
        assert_eq!(merge["api-secret-key"], SECRET.as_bytes());
        let clash = render(&template(&[("endpoint", "x")], Some(MergePolicy::Merge)), &content()).unwrap_err();
        assert_eq!(clash.key, "endpoint");
    }

    #[test]
    fn unknown_variables_and_bad_syntax_name_the_key() {
        let e = render(&template(&[("a", "ok"), ("b", "{{ secrett }}")], None), &content()).unwrap_err();
        assert_eq!(e.key, "b");
        assert!(e.message.contains("undefined"), "{e}");
        assert!(
            e.message.ends_with("the variables are api, endpoint, expiresAt, keyId, name, namespace, role, secret")
        );
        let e = render(&template(&[("c", "{{ secret ")], None), &content()).unwrap_err();
        assert_eq!(e.key, "c");
        assert!(e.message.contains("syntax error"), "{e}");
        assert!(e.to_string().starts_with("spec.secret.template.data[\"c\"]: "), "{e}");
    }

    #[test]
    fn no_file_is_ever_read() {
        for source in [r#"{% include "/etc/passwd" %}"#, r#"{% extends "base" %}"#, r#"{% import "m" as m %}"#] {
            let e = render(&template(&[("k", source)], None), &content()).unwrap_err();
            assert!(!e.message.contains("root:"), "{e}");
        }
    }

    #[test]
    fn the_rendered_size_is_bounded() {
        // Within the fuel, but past the size: the writer stops it.
        let big = "{% for i in range(3000) %}{{ secret }}{{ secret }}{{ secret }}{{ secret }}{% endfor %}";
        let e = render(&template(&[("k", big)], None), &content()).unwrap_err();
        assert_eq!(e.message, "the rendered Secret data would exceed 256 KiB");
        // The budget is for the whole Secret, not per key.
        let chunk = "{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}"; // 100,000 bytes each
        let three = template(&[("a", chunk), ("b", chunk), ("c", chunk)], None);
        let e = render(&three, &content()).unwrap_err();
        assert_eq!(e.key, "c");
        let two = template(&[("a", chunk), ("b", chunk)], None);
        assert_eq!(render(&two, &content()).unwrap()["b"].len(), 100_000);
    }

    #[test]
    fn fuel_bounds_the_work() {
        let spin = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}";
        let e = render(&template(&[("k", spin)], None), &content()).unwrap_err();
        assert!(e.message.to_lowercase().contains("fuel"), "{e}");
    }

    #[test]
    fn no_secret_value_in_an_error_even_when_the_template_echoes_it() {
        let vars = content();
        for source in [
            "{{ secret | int }}",
            "{{ secret.foo.bar }}",
            "{{ secret() }}",
            "{{ secret ~ 1 + 1 }}",
            "{{ range(secret) }}",
            "{{ secret | replace(secret) }}",
            "{{ secret[secret] }}",
            "{% if secret is undefined_test %}{% endif %}",
            "{{ fail(secret) }}",
            "{{ secret | tojson | int }}",
            "{{ {secret: 1}[1] }}",
        ] {
            let e = render(&template(&[("k", source)], None), &vars).unwrap_err();
            let shown = e.to_string();
            assert!(!shown.contains(SECRET), "{source}: {shown}");
            assert!(!shown.contains("sEcReT"), "{source}: {shown}");
        }
    }

    #[test]
    fn messages_are_redacted_and_bounded() {
        let vars = content().vars;
        let echoed = format!("invalid operation: cannot use {SECRET:?} or {SECRET} here");
        let safe = safe_message(&echoed, &vars);
        assert!(!safe.contains("sEcReT"), "{safe}");
        assert!(safe.contains("<redacted>"), "{safe}");
        let long = "x".repeat(5000);
        assert_eq!(safe_message(&long, &vars).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn check_finds_errors_before_any_secret_exists() {
        let vars = WORKLOAD_API_KEY_VARS;
        assert!(check(&template(&[("k", "{{ secret }}:{{ keyId }}:{{ expiresAt }}")], None), &vars).is_ok());
        assert_eq!(check(&template(&[("k", "{{ key }}")], None), &vars).unwrap_err().key, "k");
        let swc = SECURE_WORKLOAD_CREDENTIAL_VARS;
        assert!(check(&template(&[("k", "{{ key }}{{ credentialsJson }}")], None), &swc).is_ok());
        assert!(check(&template(&[("k", "{{ keyId }}")], None), &swc).is_err());
    }

    #[test]
    fn the_digest_follows_what_the_template_asks_for() {
        let t = template(&[("k", "{{ secret }}")], None);
        assert_eq!(digest(None), None);
        let d = digest(Some(&t)).unwrap();
        assert!(d.starts_with("sha256:"));
        let explicit = template(&[("k", "{{ secret }}")], Some(MergePolicy::Replace));
        assert_eq!(digest(Some(&explicit)).unwrap(), d, "an explicit default is the same template");
        let typed = DataTemplate { type_: Some("Opaque".into()), ..t.clone() };
        assert_eq!(digest(Some(&typed)).unwrap(), d);
        let merge = template(&[("k", "{{ secret }}")], Some(MergePolicy::Merge));
        assert_ne!(digest(Some(&merge)).unwrap(), d);
        let other_type = DataTemplate { type_: Some("kubernetes.io/basic-auth".into()), ..t.clone() };
        assert_ne!(digest(Some(&other_type)).unwrap(), d);
        assert_ne!(digest(Some(&template(&[("k", "{{ secret }} ")], None))).unwrap(), d);
    }

    #[test]
    fn debug_shows_no_value() {
        let shown = format!("{:?}", content());
        assert!(!shown.contains("sEcReT"), "{shown}");
        assert!(shown.contains("api-secret-key"), "{shown}");
    }
}
