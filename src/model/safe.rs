//! Target-controlled strings made safe to print and to upload, in one place.
//!
//! Everything mphang shows comes from the target: command lines, `comm`, thread names, file and
//! socket paths, Python function and file names, native symbols. [`sanitize`] rewrites every
//! string of a [`Snapshot`] once, right after it is collected or loaded, so that every renderer
//! (text, JSON, GitHub annotations and summary, the TUI) only ever sees safe strings:
//!
//! * [`escape_control`]: control characters (C0, DEL, C1) and Unicode bidirectional overrides
//!   become visible escapes (`\n`, `\x1b`, `\u{202e}`), so no newline can start a forged line
//!   (`::error::` in a CI log) and no escape sequence reaches a terminal;
//! * [`redact_text`] and [`redact_argv`] (on by default, `--no-redact` keeps them): values of
//!   secret-looking arguments (`--password=…`, `--token …`, `AWS_SECRET_ACCESS_KEY=…`,
//!   `?access_token=…`), the password of URLs with `user:pass@`, `Bearer`/`Basic` credentials
//!   and well-known token shapes (GitHub, GitLab, Slack, AWS key ids) become `***`.
//!
//! Strings read at render time (source lines) go through [`escape_control`] too.

use super::Snapshot;
use regex::Regex;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::LazyLock;

/// What replaces a secret.
pub const REDACTED: &str = "***";

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with control characters and bidirectional overrides written as visible escapes.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// True when `name` (the text before `=` in `name=value`, or a flag like `--token`) names a
/// secret. Compared case-insensitively; short words must stand alone or after a separator.
fn secret_name(name: &str) -> bool {
    let n = name.trim_start_matches('-').to_ascii_lowercase();
    if n.is_empty() {
        return false;
    }
    const ANYWHERE: [&str; 6] = [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "credentials",
    ];
    const ALONE: [&str; 8] = [
        "pwd",
        "pass",
        "auth",
        "key",
        "apikey",
        "credential",
        "private_key",
        "sig",
    ];
    if ANYWHERE.iter().any(|w| n.ends_with(w)) {
        return true;
    }
    ALONE.iter().any(|w| {
        n.strip_suffix(w)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with(['-', '_', '.']))
    })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '&' | ';' | ',' | '\'' | '"' | ')' | ']' | '}')
}

/// `name=value` pairs whose name looks secret get their value replaced.
fn redact_assignments(s: &str) -> Cow<'_, str> {
    if !s.contains('=') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(eq) = rest.find('=') {
        let (before, after) = rest.split_at(eq);
        let name_start = before
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_name_char(c))
            .last()
            .map(|(i, _)| i)
            .unwrap_or(before.len());
        let name = &before[name_start..];
        out.push_str(before);
        out.push('=');
        let value = &after[1..];
        let end = value.find(ends_value).unwrap_or(value.len());
        if secret_name(name) && end > 0 && &value[..end] != REDACTED {
            out.push_str(REDACTED);
            changed = true;
        } else {
            out.push_str(&value[..end]);
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

static URL_PASSWORD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):([^/\s@]+)@").ok());
static BEARER: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}").ok());
static TOKEN_SHAPES: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}",
        r"|xox[abposr]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{32,})"
    ))
    .ok()
});

/// `s` with secret-looking parts replaced by [`REDACTED`].
pub fn redact_text(s: &str) -> Cow<'_, str> {
    let mut cur = redact_assignments(s);
    if let Some(re) = URL_PASSWORD.as_ref() {
        if re.is_match(&cur) {
            cur = Cow::Owned(re.replace_all(&cur, "$1:***@").into_owned());
        }
    }
    if let Some(re) = BEARER.as_ref() {
        if re.is_match(&cur) {
            cur = Cow::Owned(re.replace_all(&cur, "$1 ***").into_owned());
        }
    }
    if let Some(re) = TOKEN_SHAPES.as_ref() {
        if re.is_match(&cur) {
            cur = Cow::Owned(re.replace_all(&cur, REDACTED).into_owned());
        }
    }
    cur
}

/// A command line with secrets redacted: each argument as [`redact_text`], and the argument
/// after a bare secret flag (`--password VALUE`, `-token VALUE`).
pub fn redact_argv(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next && !a.starts_with('-') {
            out.push(REDACTED.to_string());
            hide_next = false;
            continue;
        }
        hide_next = a.starts_with('-') && !a.contains('=') && secret_name(a);
        out.push(redact_text(a).into_owned());
    }
    out
}

fn walk(v: &mut Value, redact: bool) {
    match v {
        Value::String(s) => {
            let r = if redact {
                redact_text(s)
            } else {
                Cow::Borrowed(s.as_str())
            };
            if let Cow::Owned(e) = escape_control(&r) {
                *s = e;
            } else if let Cow::Owned(r) = r {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, redact)),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if redact && k == "cmdline" {
                    if let Value::Array(a) = x {
                        let argv: Vec<String> = a
                            .iter()
                            .map(|s| s.as_str().unwrap_or_default().to_string())
                            .collect();
                        *a = redact_argv(&argv).into_iter().map(Value::String).collect();
                    }
                }
                walk(x, redact);
            }
        }
        _ => {}
    }
}

/// Whether any string of the JSON document `text` could need [`escape_control`]: an escaped
/// control character (`\n`, `\u001b`, …; any `\u` counts) or a raw character that
/// [`escape_control`] rewrites. A report mphang wrote has none, so `merge` escapes only the
/// inputs this finds (one pass over the bytes instead of a rewrite of every string).
pub fn json_needs_escape(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if matches!(b.get(i + 1), Some(b'n' | b'r' | b't' | b'b' | b'f' | b'u')) {
                    return true;
                }
                i += 2;
            }
            0x7f => return true,
            c if c >= 0x80 => {
                // `i` is always at a char boundary: a multi-byte char is skipped whole.
                let Some(ch) = text.get(i..).and_then(|t| t.chars().next()) else {
                    i += 1;
                    continue;
                };
                if needs_escape(ch) {
                    return true;
                }
                i += ch.len_utf8();
            }
            _ => i += 1,
        }
    }
    false
}

/// Escapes (and, when `redact`, redacts) every string of a snapshot in its JSON form: used by
/// `--from` before the snapshot is parsed.
pub fn sanitize_value(v: &mut Value, redact: bool) {
    walk(v, redact);
}

/// Whether [`walk`] could change any string of the JSON document `text`, decided on the text
/// as a whole: every rule matches the text wherever it would match one of its strings (JSON
/// escaping only puts a backslash before `"` and `\`, and control characters make
/// [`json_needs_escape`] true), so `false` means nothing would change. It may say `true` for
/// a document nothing in which changes (a match across two strings).
pub fn could_change(text: &str, redact: bool) -> bool {
    if json_needs_escape(text) {
        return true;
    }
    if !redact {
        return false;
    }
    matches!(redact_assignments(text), Cow::Owned(_))
        || [&URL_PASSWORD, &BEARER, &TOKEN_SHAPES]
            .iter()
            .any(|re| re.as_ref().as_ref().is_some_and(|r| r.is_match(text)))
        || secret_flag_in(text)
}

/// Whether a string of the JSON text `text` starts with `-` and is a secret flag (what
/// [`redact_argv`] hides the next argument after), read in its escaped form up to its
/// closing quote.
fn secret_flag_in(text: &str) -> bool {
    text.match_indices("\"-").any(|(i, _)| {
        let rest = &text.as_bytes()[i + 1..];
        let mut end = 0;
        while end < rest.len() && rest[end] != b'"' {
            end += if rest[end] == b'\\' { 2 } else { 1 };
        }
        let arg = text
            .get(i + 1..i + 1 + end.min(rest.len()))
            .unwrap_or_default();
        !arg.contains('=') && secret_name(arg)
    })
}

/// Escapes (and, when `redact`, redacts) every string of `snap`. Idempotent. A snapshot with
/// nothing to change (the usual case: one pass over its JSON text) is left as it is; else
/// every string is rewritten through its JSON form.
pub fn sanitize(snap: &mut Snapshot, redact: bool) {
    if serde_json::to_string(&*snap).is_ok_and(|text| !could_change(&text, redact)) {
        return;
    }
    let Ok(mut v) = serde_json::to_value(&*snap) else {
        return;
    };
    walk(&mut v, redact);
    if let Ok(s) = serde_json::from_value(v) {
        *snap = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        redact_argv(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn json_text_that_could_hold_control_characters_is_found() {
        let clean = serde_json::json!({"cmdline": ["python3", "naïve ✓", "a\\\\nb"]});
        assert!(!json_needs_escape(
            &serde_json::to_string_pretty(&clean).expect("json")
        ));
        for bad in ["a\nb", "\x1b[31m", "x\u{202e}y", "\u{7f}", "\u{85}"] {
            let v = serde_json::json!({ "comm": bad });
            assert!(json_needs_escape(&v.to_string()), "{bad:?}");
        }
    }

    /// The whole-text test never misses a string that [`walk`] would change.
    #[test]
    fn the_whole_text_test_sees_every_string_walk_changes() {
        let strings = [
            "--password=hunter2",
            "--token",
            "-x\"password",
            "AWS_SECRET_ACCESS_KEY=abc",
            "https://bob:s3\"cret@example.com/r.git",
            "Authorization: Bearer abcdefghijkl",
            "x?access_token=zz&a=1",
            "ghp_abcdefghijklmnopqrstuvwxyz",
            "a\nb",
            "\x1b[31m",
            "x\u{202e}y",
        ];
        for s in strings {
            let doc = serde_json::json!({ "cmdline": ["app", s, "value"], "path": s });
            let mut walked = doc.clone();
            walk(&mut walked, true);
            assert_ne!(walked, doc, "{s:?}: walk changes it");
            assert!(could_change(&doc.to_string(), true), "{s:?}");
        }
        let clean = serde_json::json!({
            "cmdline": ["python3", "-m", "pytest", "--tb=short", "naïve ✓"],
            "path": "/tmp/a b/c\"d\\e", "fn": "tokenize", "n": 3
        });
        let mut walked = clean.clone();
        walk(&mut walked, true);
        assert_eq!(walked, clean);
        assert!(!could_change(&clean.to_string(), true));
        assert!(!could_change(&doc_with_secret().to_string(), false));
    }

    fn doc_with_secret() -> Value {
        serde_json::json!({ "cmdline": ["app", "--password=x"] })
    }

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(escape_control("plain"), "plain");
        assert_eq!(
            escape_control("a\nb\r\tc\x1b[31md\x7f"),
            "a\\nb\\r\\tc\\x1b[31md\\x7f"
        );
        assert_eq!(escape_control("x\u{202e}y\u{85}"), "x\\u{202e}y\\u{85}");
        assert_eq!(escape_control("naïve ✓"), "naïve ✓");
    }

    #[test]
    fn secret_arguments_are_redacted() {
        assert_eq!(
            argv(&["app", "--password=hunter2", "--user=bob"]),
            ["app", "--password=***", "--user=bob"]
        );
        assert_eq!(
            argv(&["app", "--token", "abc123", "--verbose"]),
            ["app", "--token", "***", "--verbose"]
        );
        assert_eq!(
            argv(&[
                "env",
                "AWS_SECRET_ACCESS_KEY=abc",
                "OPENAI_API_KEY=sk",
                "HOME=/root"
            ]),
            [
                "env",
                "AWS_SECRET_ACCESS_KEY=***",
                "OPENAI_API_KEY=***",
                "HOME=/root"
            ]
        );
        assert_eq!(
            argv(&["git", "clone", "https://bob:s3cret@example.com/r.git"]),
            ["git", "clone", "https://bob:***@example.com/r.git"]
        );
        assert_eq!(
            argv(&[
                "curl",
                "-H",
                "Authorization: Bearer abcdefghijkl",
                "x?access_token=zz&a=1"
            ]),
            [
                "curl",
                "-H",
                "Authorization: Bearer ***",
                "x?access_token=***&a=1"
            ]
        );
        assert_eq!(
            argv(&["push", "ghp_0123456789abcdefghijABCDEFGHIJ012345"]),
            ["push", "***"]
        );
        // Not secrets.
        assert_eq!(
            argv(&[
                "x",
                "--max-tokens=5",
                "--password-file=/etc/p",
                "monkey=1",
                "--author=me"
            ]),
            [
                "x",
                "--max-tokens=5",
                "--password-file=/etc/p",
                "monkey=1",
                "--author=me"
            ]
        );
        assert_eq!(
            argv(&["x", "--token", "--next"]),
            ["x", "--token", "--next"]
        );
        // Idempotent.
        assert_eq!(argv(&["--password=***"]), ["--password=***"]);
    }

    #[test]
    fn sanitize_reaches_every_string() {
        let mut v = serde_json::json!({
            "cmdline": ["py", "--secret", "s", "a\nb"],
            "nested": [{"name": "\u{1b}]0;title\u{7}"}],
            "path": "/tmp/k?token=x",
        });
        sanitize_value(&mut v, true);
        assert_eq!(
            v["cmdline"],
            serde_json::json!(["py", "--secret", "***", "a\\nb"])
        );
        assert_eq!(v["nested"][0]["name"], "\\x1b]0;title\\x07");
        assert_eq!(v["path"], "/tmp/k?token=***");
        let mut keep = serde_json::json!({"cmdline": ["--password=p\n"]});
        sanitize_value(&mut keep, false);
        assert_eq!(keep["cmdline"][0], "--password=p\\n");
    }
}
