//! GitHub Actions output: one `::error` workflow command per finding (shown as an annotation on
//! the culprit line) and a markdown job summary for `$GITHUB_STEP_SUMMARY`, with paths relative
//! to the checkout ([`Paths`], shared with the JUnit report). Pure text; `run` writes it.

use crate::render::Report;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Escapes the message part of a workflow command.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value (`file=`, `title=`) of a workflow command.
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// How source paths are shown to a CI system: relative to the checkout when they lie in it.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Where a relative path in the target (`python tests/x.py`) is resolved from: mphang's
    /// working directory, which the command inherited.
    pub cwd: PathBuf,
    /// The checkout: `$GITHUB_WORKSPACE`, else GitLab's `$CI_PROJECT_DIR`, else `cwd`.
    pub workspace: PathBuf,
}

impl Paths {
    pub fn from_env() -> Paths {
        let cwd = std::env::current_dir().unwrap_or_default();
        let workspace = ["GITHUB_WORKSPACE", "CI_PROJECT_DIR"]
            .iter()
            .filter_map(std::env::var_os)
            .find(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| cwd.clone());
        Paths { cwd, workspace }
    }

    /// `file` relative to the workspace when it lies below it (annotations and JUnit need
    /// repository-relative paths), else as it is. A relative `file` is first resolved from
    /// `cwd`, so a job that `cd`s into a subdirectory still gets `sub/x.py`.
    pub fn relative(&self, file: &str) -> String {
        let path = Path::new(file);
        let absolute = if path.is_relative() {
            self.cwd.join(path)
        } else {
            path.to_path_buf()
        };
        absolute
            .strip_prefix(&self.workspace)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| file.to_string())
    }
}

/// A fresh token for `::stop-commands::TOKEN` ... `::TOKEN::`: unguessable by the target, whose
/// strings are printed in between.
pub fn stop_commands_token() -> String {
    let mut b = [0u8; 16];
    let got = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !got {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b[..16].copy_from_slice(&(t ^ u128::from(std::process::id())).to_le_bytes());
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("mphang-{hex}")
}

/// The annotation lines: `::error` per hang finding, `::warning` per warning finding, or one
/// `::error` for the timeout itself when nothing was named.
pub fn annotations(report: &Report, why: &str, paths: &Paths) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let mut props = Vec::new();
        if let Some(c) = &f.culprit {
            props.push(format!(
                "file={}",
                escape_property(&paths.relative(&c.file))
            ));
            props.push(format!("line={}", c.line));
        }
        props.push(format!(
            "title={}",
            escape_property(&format!("mphang {}", f.pattern))
        ));
        // A proven hang is an error; a suspicion (e.g. busy_loop) a warning.
        let level = match f.severity {
            crate::analysis::Severity::Hang => "error",
            crate::analysis::Severity::Warning => "warning",
        };
        let _ = writeln!(
            out,
            "::{level} {}::{}",
            props.join(","),
            escape_data(&f.summary)
        );
    }
    if report.findings.is_empty() {
        let _ = writeln!(
            out,
            "::error title={}::{}",
            escape_property("mphang timeout"),
            escape_data(&format!(
                "{why}; no hang pattern was named (see the mphang report)"
            ))
        );
    }
    out
}

/// The markdown appended to `$GITHUB_STEP_SUMMARY`.
pub fn summary(
    report: &Report,
    why: &str,
    command: &str,
    report_dir: &Path,
    paths: &Paths,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## mphang: `{}` {why}\n", command.replace('`', "'"));
    if report.findings.is_empty() {
        let _ = writeln!(md, "No hang pattern was named.\n");
    } else {
        let _ = writeln!(md, "| pattern | summary | culprit | fix |");
        let _ = writeln!(md, "|---|---|---|---|");
        for f in &report.findings {
            let culprit = f
                .culprit
                .as_ref()
                .map(|c| {
                    format!(
                        "`{}:{}` in `{}`",
                        paths.relative(&c.file),
                        c.line,
                        c.function
                    )
                })
                .unwrap_or_default();
            let cell = |s: &str| {
                s.replace('|', "\\|")
                    .replace('\n', " ")
                    .replace('<', "&lt;")
            };
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                f.pattern,
                cell(&f.summary),
                cell(&culprit),
                cell(&f.fix)
            );
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "{} processes were diagnosed, {} had already ended. Full report: `{}` and `{}` \
         (upload the directory as an artifact).\n",
        report.snapshot.processes.len(),
        report.snapshot.gone.len(),
        report_dir.join("report.txt").display(),
        report_dir.join("report.json").display(),
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape_data("50% a\nb"), "50%25 a%0Ab");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn relative_paths() {
        let paths = Paths {
            cwd: PathBuf::from("/repo/sub"),
            workspace: PathBuf::from("/repo"),
        };
        assert_eq!(paths.relative("/repo/src/x.py"), "src/x.py");
        // Relative to the workspace, not to the working directory.
        assert_eq!(paths.relative("/repo/sub/x.py"), "sub/x.py");
        assert_eq!(paths.relative("x.py"), "sub/x.py");
        assert_eq!(
            paths.relative("/usr/lib/python3.11/x.py"),
            "/usr/lib/python3.11/x.py"
        );
    }
}
