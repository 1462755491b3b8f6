//! Removing known secret values from text a vendor (or a proxy in between) sent back, before it becomes an
//! error message that may reach a status, an Event, a log line or a metric.

/// What replaces each secret occurrence.
pub const REDACTED: &str = "<redacted>";

/// `text` with every occurrence of every non-empty value in `secrets` replaced by [`REDACTED`].
/// Overlapping or adjacent occurrences (of one value or of several) become a single `<redacted>`, so no
/// fragment of any secret is left between two replacements.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        // Every start position, overlapping ones included ("aa" in "aaa" starts at 0 and 1).
        let mut from = 0;
        while let Some(at) = text[from..].find(secret) {
            let start = from + at;
            ranges.push((start, start + secret.len()));
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        }
    }
    if ranges.is_empty() {
        return text.to_owned();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut current: Option<(usize, usize)> = None;
    for (start, end) in ranges {
        match current {
            Some((s, e)) if start <= e => current = Some((s, e.max(end))),
            Some((s, e)) => {
                out.push_str(&text[copied..s]);
                out.push_str(REDACTED);
                copied = e;
                current = Some((start, end));
            }
            None => current = Some((start, end)),
        }
    }
    if let Some((s, e)) = current {
        out.push_str(&text[copied..s]);
        out.push_str(REDACTED);
        copied = e;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence() {
        let text = "key 1:s3cr3t-value was refused; header api-secret-key=1:s3cr3t-value";
        assert_eq!(redact(text, &["1:s3cr3t-value"]), "key <redacted> was refused; header api-secret-key=<redacted>");
    }

    #[test]
    fn text_without_secrets_is_unchanged() {
        assert_eq!(redact("Bad request", &["s3cr3t", ""]), "Bad request");
        assert_eq!(redact("", &["s3cr3t"]), "");
        assert_eq!(redact("anything", &[]), "anything");
    }

    #[test]
    fn empty_values_are_ignored() {
        assert_eq!(redact("abc", &[""]), "abc");
    }

    #[test]
    fn overlapping_secrets_leave_no_fragment() {
        // Two values sharing "cdef": whichever is replaced first, no "ab" or "gh" part of them survives.
        assert_eq!(redact("x abcdefgh y", &["abcdef", "cdefgh"]), "x <redacted> y");
        assert_eq!(redact("x abcdefgh y", &["cdefgh", "abcdef"]), "x <redacted> y");
        // One value overlapping itself.
        assert_eq!(redact("-aaaa-", &["aaa"]), "-<redacted>-");
        // A value contained in another.
        assert_eq!(redact("1:topsecret and topsecret", &["1:topsecret", "topsecret"]), "<redacted> and <redacted>");
        // Adjacent occurrences merge.
        assert_eq!(redact("s3cr3ts3cr3t", &["s3cr3t"]), "<redacted>");
    }

    #[test]
    fn multibyte_text_is_handled() {
        assert_eq!(redact("é-pässwörd-é", &["pässwörd"]), "é-<redacted>-é");
        assert_eq!(redact("ééé", &["éé"]), "<redacted>");
    }
}
