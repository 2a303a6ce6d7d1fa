//! `--junit FILE`: the outcome as a JUnit XML report, which GitLab (`artifacts:reports:junit`),
//! Jenkins, Azure Pipelines, CircleCI and most other CI systems show natively. After a timeout
//! or stall each finding is a failed test case (its pattern as the type, its summary as the
//! message, the full finding as the body; with no finding, the timeout itself fails); a command
//! that finished in time is one passed test case. Pure text; `run` writes it.

use super::github::Paths;
use crate::render::Report;
use std::fmt::Write as _;
use std::time::Duration;

/// How the run ended, as the JUnit report tells it.
pub enum Outcome<'a> {
    /// CMD finished in time with this exit code.
    Finished(i32),
    /// `--timeout` or `--stall` fired (`why`, e.g. `timed out after 20m`); the diagnosis.
    Deadline { why: &'a str, report: &'a Report },
    /// A second SIGINT ended the tree before anything was diagnosed.
    Interrupted,
}

/// Escapes text for an XML attribute or element, dropping the characters XML 1.0 cannot hold.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// One `<testcase>`: passed when `failure` is None, else failed with (type, message, body).
fn case(
    out: &mut String,
    name: &str,
    file: Option<(&str, i32)>,
    secs: f64,
    failure: Option<(&str, &str, &str)>,
) {
    let mut attrs = format!(
        "classname=\"mphang\" name=\"{}\" time=\"{secs:.3}\"",
        xml(name)
    );
    if let Some((file, line)) = file {
        let _ = write!(attrs, " file=\"{}\" line=\"{line}\"", xml(file));
    }
    match failure {
        None => {
            let _ = writeln!(out, "    <testcase {attrs}/>");
        }
        Some((kind, message, body)) => {
            let _ = writeln!(out, "    <testcase {attrs}>");
            let _ = writeln!(
                out,
                "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                xml(kind),
                xml(message),
                xml(body)
            );
            let _ = writeln!(out, "    </testcase>");
        }
    }
}

/// The JUnit XML document for a run of `command` that took `elapsed`.
pub fn report(outcome: &Outcome, command: &str, elapsed: Duration, paths: &Paths) -> String {
    let secs = elapsed.as_secs_f64();
    let mut cases = String::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    match outcome {
        Outcome::Finished(code) => {
            tests += 1;
            case(
                &mut cases,
                &format!("`{command}` finished in time (exit {code})"),
                None,
                secs,
                None,
            );
        }
        Outcome::Interrupted => {
            tests += 1;
            skipped += 1;
            let _ = writeln!(
                cases,
                "    <testcase classname=\"mphang\" name=\"{}\" time=\"{secs:.3}\">\n      \
                 <skipped message=\"ended by a second SIGINT before a diagnosis\"/>\n    </testcase>",
                xml(&format!("`{command}`"))
            );
        }
        Outcome::Deadline { why, report } => {
            for (i, f) in report.findings.iter().enumerate() {
                tests += 1;
                failures += 1;
                let single = Report {
                    findings: vec![f.clone()],
                    ..(*report).clone()
                };
                let mut body = Vec::new();
                let _ = crate::render::text::findings(
                    &single,
                    &crate::render::text::TextOptions { color: false },
                    &mut body,
                );
                let body = String::from_utf8_lossy(&body).replacen("#1", &format!("#{}", i + 1), 1);
                let file = f
                    .culprit
                    .as_ref()
                    .map(|c| (paths.relative(&c.file), c.line));
                let name = match &file {
                    Some((file, line)) => format!("{} at {file}:{line}", f.pattern),
                    None => f.pattern.to_string(),
                };
                case(
                    &mut cases,
                    &name,
                    file.as_ref().map(|(f, l)| (f.as_str(), *l)),
                    secs,
                    Some((
                        f.pattern.as_str(),
                        &format!("`{command}` {why}: {}", f.summary),
                        &body,
                    )),
                );
            }
            if report.findings.is_empty() {
                tests += 1;
                failures += 1;
                let message = format!("`{command}` {why}; no hang pattern was named");
                case(
                    &mut cases,
                    &format!("`{command}` {why}"),
                    None,
                    secs,
                    Some((
                        "timeout",
                        &message,
                        "See report.txt for every thread's wait.",
                    )),
                );
            }
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"mphang\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{secs:.3}\">\n  \
         <testsuite name=\"mphang run\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{secs:.3}\">\n{cases}  </testsuite>\n</testsuites>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            cwd: "/repo".into(),
            workspace: "/repo".into(),
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(xml("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }

    #[test]
    fn a_finished_command_is_one_passed_case() {
        let x = report(
            &Outcome::Finished(3),
            "pytest -x",
            Duration::from_secs(2),
            &paths(),
        );
        assert!(x.contains("tests=\"1\" failures=\"0\""), "{x}");
        assert!(
            x.contains("name=\"`pytest -x` finished in time (exit 3)\""),
            "{x}"
        );
    }
}
