//! `mphang report <pid> | --from FILE`: one-shot diagnosis, text or JSON; exit 0/1/2.

use crate::cli::ReportArgs;
use crate::collect::select::{self, Selector};
use crate::collect::{self, CollectOptions};
use crate::error::{Error, Result};
use crate::model::{Pid, Snapshot};
use crate::render::{self, Report};
use std::io::Write;

pub fn run(args: &ReportArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    let trace = |phase: &str| {
        if std::env::var_os("MPHANG_TRACE").is_some() {
            eprintln!(
                "{:>7.1} ms {phase}",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    };
    let opts = CollectOptions {
        looks: args.sample.samples,
        interval: args.sample.interval,
        native: !args.sample.nonblocking,
        redact: !args.no_redact,
        ..CollectOptions::default()
    };
    let selector = match (&args.job_env, &args.cgroup) {
        (Some(spec), _) => Some(Selector::env(spec)?),
        (None, Some(path)) => Some(Selector::Cgroup(path.clone())),
        (None, None) => None,
    };
    let snap = match (&args.from, args.pid, selector) {
        (Some(path), _, _) => load_sanitized(path, !args.no_redact)?,
        (None, Some(pid), _) => {
            collect::check_root(Pid(pid))?;
            super::confirm::broad_root(pid, args.yes, args.sample.nonblocking)?;
            super::collect_settled(Pid(pid), &opts)?
        }
        (None, None, Some(sel)) => {
            let roots = select::roots(&sel)?;
            for r in &roots {
                super::confirm::broad_root(r.0, args.yes, args.sample.nonblocking)?;
            }
            let opts = CollectOptions {
                extra_roots: roots[1..].to_vec(),
                ..opts
            };
            super::collect_settled(roots[0], &opts)?
        }
        (None, None, None) => return Err(Error::Usage("name a pid or --from FILE".into())),
    };
    if let Some(path) = &args.save {
        save(path, &snap)?;
    }
    trace("snapshot");
    let mut report = Report::analyze(snap);
    trace("analysis");
    emit(&mut report, args.json)?;
    trace("rendered");
    Ok(if report.hang {
        super::EXIT_HANG
    } else {
        super::EXIT_OK
    })
}

/// Prints a report to stdout, text through anstream (colors as `--color` and the terminal
/// decide); a closed pipe (`| head`) is not an error.
pub fn emit(report: &mut Report, json: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let r = if json {
        // Buffered: stdout is line-buffered, and a pretty JSON report has a line per field.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        render::json::write_in_place(report, &mut out).and_then(|()| out.flush())
    } else {
        let mut out = anstream::AutoStream::auto(stdout.lock());
        let opts = render::text::TextOptions { color: true };
        render::text::render(report, &opts, &mut out).and_then(|()| out.flush())
    };
    super::quiet_pipe(r)
}

/// The largest `--from` file read: 256 MiB, or `MPHANG_MAX_INPUT_MB`.
pub fn max_input_bytes() -> u64 {
    std::env::var("MPHANG_MAX_INPUT_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(256)
        .saturating_mul(1 << 20)
}

/// Reads a `--from` file: a regular file of at most [`max_input_bytes`]. Opened non-blocking
/// (a FIFO would otherwise block the open), checked on the open descriptor (no race with a
/// rename), and read through a bounded reader (a file that grows, or reports size 0 like
/// `/proc` files, cannot make it read more).
pub(crate) fn read_input(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let refused = |why: String| Error::InputRefused {
        path: path.to_path_buf(),
        why,
    };
    let read_err = |e| Error::ReadInput {
        path: path.to_path_buf(),
        source: e,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = f.metadata().map_err(read_err)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(refused(format!("it is {kind}, not a regular file")));
    }
    let limit = max_input_bytes();
    if meta.len() > limit {
        return Err(refused(format!(
            "it is {} MiB, more than the {} MiB limit",
            meta.len() >> 20,
            limit >> 20
        )));
    }
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(refused(format!(
            "it holds more than the {} MiB limit",
            limit >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|_| Error::BadSnapshot {
        path: path.to_path_buf(),
        message: "not UTF-8 text".into(),
    })
}

/// Reads a snapshot saved by `--save` or a `--json` report, with every string escaped and, when
/// `redact`, secrets redacted (`model::safe`), in one pass over the parsed JSON.
pub fn load_sanitized(path: &std::path::Path, redact: bool) -> Result<Snapshot> {
    let text = read_input(path)?;
    // The usual file has nothing to escape or redact: read it typed, without a JSON tree
    // (a tenth of the memory).
    if !crate::model::safe::could_change(&text, redact) {
        if let Some(snap) = render::lenient::parse_typed(&text) {
            return Ok(snap);
        }
    }
    render::json::parse_snapshot_with(&text, |v| crate::model::safe::sanitize_value(v, redact))
        .map_err(|message| Error::BadSnapshot {
            path: path.to_path_buf(),
            message,
        })
}

/// Reads a snapshot saved by `--save` or a `--json` report.
pub fn load(path: &std::path::Path) -> Result<Snapshot> {
    let text = read_input(path)?;
    render::json::parse_snapshot(&text).map_err(|message| Error::BadSnapshot {
        path: path.to_path_buf(),
        message,
    })
}

/// Writes the raw snapshot (`mphang/snapshot/v1`), readable by its owner only.
pub fn save(path: &std::path::Path, snap: &Snapshot) -> Result<()> {
    let text = serde_json::to_string_pretty(snap).map_err(|e| Error::Io {
        context: "serializing the snapshot".into(),
        source: std::io::Error::other(e),
    })?;
    write_private(path, (text + "\n").as_bytes()).map_err(|e| Error::WriteOutput {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Writes `bytes` to `path` with mode 0600 (also when the file already existed with a wider
/// mode): reports name processes, paths and command lines.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    if f.metadata()?.is_file() {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)
}
