//! Generates the man page and shell completions for `istio-iptables` from the same clap model
//! that parses its command line (`istio_iptables::cli::command`), so they cannot drift.
//!
//! A separate binary behind the `docs` feature keeps clap_mangen and clap_complete out of the
//! binary that runs in every pod's init container (and out of its dependency set).
//!
//! ```text
//! cargo run --features docs --bin istio-iptables-docs -- all target/docs
//! istio-iptables-docs man                         # roff man page on stdout
//! istio-iptables-docs completions bash|zsh|fish   # completion script on stdout
//! istio-iptables-docs all DIR                     # all of them as files in DIR
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Command;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use istio_iptables::error::exit_code;

const BIN: &str = "istio-iptables";
const USAGE: &str = "usage: istio-iptables-docs man | completions <bash|zsh|fish> | all <DIR>";

/// Why the generator failed; printed after `istio-iptables-docs: `, exit 2.
#[derive(Debug, thiserror::Error)]
enum DocsError {
    #[error("{USAGE}")]
    Usage,
    #[error("unsupported shell {0:?}; expected bash, zsh or fish")]
    UnsupportedShell(String),
    #[error("rendering the man page: {0}")]
    Render(#[source] std::io::Error),
    #[error("creating {path}: {source}", path = path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}", path = path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// The shells we ship completions for, with the file name each one's loader looks for.
const SHELLS: [(Shell, &str); 3] =
    [(Shell::Bash, "istio-iptables.bash"), (Shell::Zsh, "_istio-iptables"), (Shell::Fish, "istio-iptables.fish")];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["man"] => man_page().and_then(|page| write_stdout(&page)),
        ["completions", shell] => match SHELLS.iter().find(|(s, _)| s.to_string() == *shell) {
            Some((shell, _)) => write_stdout(&completions(*shell)),
            None => Err(DocsError::UnsupportedShell(shell.to_string())),
        },
        ["all", dir] => write_all(Path::new(dir)),
        ["-h" | "--help"] => write_stdout(format!("{USAGE}\n").as_bytes()),
        _ => Err(DocsError::Usage),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("istio-iptables-docs: {message}");
            ExitCode::from(2)
        }
    }
}

fn man_page() -> Result<Vec<u8>, DocsError> {
    let man = clap_mangen::Man::new(man_command());
    let mut page = Vec::new();
    let render = |page: &mut Vec<u8>| -> std::io::Result<()> {
        man.render_title(page)?;
        man.render_name_section(page)?;
        man.render_synopsis_section(page)?;
        man.render_description_section(page)?;
        man.render_options_section(page)?;
        extra_sections().to_writer(page)?;
        man.render_version_section(page)
    };
    render(&mut page).map_err(DocsError::Render)?;
    Ok(page)
}

/// The parsing model, whose help texts already carry each option's default and environment
/// variables (`istio_iptables::cli::annotated_help`), with a longer description.
fn man_command() -> Command {
    istio_iptables::cli::command().long_about(DESCRIPTION)
}

const DESCRIPTION: &str = "Programs a pod's network namespace so that its TCP traffic (and optionally DNS) is \
captured by the Istio sidecar: a drop-in replacement for the istio-iptables command of Istio's pilot-agent, with \
the same flags, environment variables, rules and exit codes. A leading istio-iptables word and other positional \
arguments are ignored, so the binary can be the image entrypoint of Istio's injected istio-init container.

Environment variables are read at startup; the command line wins over them. With --dry-run the rules are printed \
on stdout and nothing is changed.";

/// Settings that only exist as environment variables (no flag).
const ENV_ONLY: &[(&str, &str)] = &[
    ("ISTIO_OUTBOUND_OWNER_GROUPS", "Groups whose outbound traffic is captured, or * (default *)."),
    ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "Groups whose outbound traffic is not captured (used when the include list is *)."),
    ("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "The IPv4 loopback range treated as local (default 127.0.0.1/32)."),
    ("ENVOY_USER", "User whose uid is the proxy uid when -u is empty (default istio-proxy; 1337 if the user is unknown). Read from /etc/passwd directly, without NSS."),
    ("DRY_RUN_FILE_PATH", "With --dry-run, also record the commands that would run into this file."),
];

const EXIT_STATUS: &[(u8, &str)] = &[
    (exit_code::OK, "Success, including nothing to do."),
    (exit_code::FAILURE, "Configuration error (bad value, no usable local IP address, unreadable resolv.conf), iptables binary detection failure, or a failed iptables/nft/route command."),
    (exit_code::VALIDATION, "--run-validation could not see its probe connection redirected before --probe-timeout."),
    (exit_code::USAGE, "Unknown flag or unparsable flag value (upstream exits with -1)."),
];

fn extra_sections() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "Every option marked [env: NAME] can be set through that variable. These settings have no flag:",
    )]);
    for (name, help) in ENV_ONLY {
        roff.control("TP", [] as [&str; 0]).text([bold(*name)]).text([roman(*help)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, help) in EXIT_STATUS {
        roff.control("TP", [] as [&str; 0]).text([bold(code.to_string())]).text([roman(*help)]);
    }
    roff
}

fn completions(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut istio_iptables::cli::command(), BIN, &mut script);
    script
}

fn write_all(dir: &Path) -> Result<(), DocsError> {
    std::fs::create_dir_all(dir).map_err(|source| DocsError::CreateDir { path: dir.to_path_buf(), source })?;
    let mut files = vec![(format!("{BIN}.1"), man_page()?)];
    files.extend(SHELLS.iter().map(|(shell, name)| (name.to_string(), completions(*shell))));
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|source| DocsError::Write { path: path.clone(), source })?;
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<(), DocsError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).and_then(|()| stdout.flush()).map_err(DocsError::Stdout)
}
