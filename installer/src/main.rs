//! beta9-sandbox-install [--root DIR] install|uninstall|check|status [options]

use std::{path::PathBuf, process::ExitCode};

use beta9_sandbox_install::{
    host::Host,
    install::{self, Installer, Options},
    record::Record,
    schema::Version,
};

const USAGE: &str = "usage: beta9-sandbox-install [--root DIR] COMMAND [OPTIONS]

Registers the beta9 sandbox runtime (gVisor) with this node's containerd, and removes it.

Commands:
  check       say, one line each, what the node has and lacks (runsc, kernel, cgroups, CNI)
  install     put the shim and agent on containerd's PATH, write the runtime configs if absent,
              register io.beta9.sandbox and the CRI handlers beta9 and beta9-docker in the
              schema of containerd's version, and restart containerd (systemd) or say what to restart
  uninstall   give back every file install changed, byte for byte; refuses while sandboxes run
  status      say whether the runtime is registered and which sandboxes run; exits 1 if either

Options:
  --root DIR                 the node's root (default /; a DaemonSet mounts it at /host)
  --containerd-version V     containerd's version (1.6, 1.7, 2.1 ...) instead of asking `containerd --version`
  --from DIR                 where containerd-shim-beta9-sandbox and beta9-sandbox-agent are (default: beside this program)
  --no-restart               do not restart containerd; say so
  --drain                    uninstall: stop our sandboxes (SIGKILL) instead of refusing
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("beta9-sandbox-install: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut root = PathBuf::from("/");
    let mut opts = Options::default();
    let mut command = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--root" => root = PathBuf::from(value("--root")?),
            "--containerd-version" => {
                let v = value("--containerd-version")?;
                opts.version = Some(Version::parse(&v).ok_or_else(|| {
                    anyhow::anyhow!("--containerd-version {v}: not a version such as 1.7 or 2.1")
                })?);
            }
            "--from" => opts.from = Some(PathBuf::from(value("--from")?)),
            "--no-restart" => opts.no_restart = true,
            "--drain" => opts.drain = true,
            "-h" | "--help" | "help" => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            "--version" => {
                println!("beta9-sandbox-install {}", env!("CARGO_PKG_VERSION"));
                return Ok(ExitCode::SUCCESS);
            }
            "check" | "install" | "uninstall" | "status" if command.is_none() => command = Some(a),
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let Some(command) = command else {
        anyhow::bail!("no command given\n{USAGE}")
    };
    if !root.is_dir() {
        anyhow::bail!("--root {}: not a directory", root.display());
    }
    let host = Host::new(root);
    let mut say = |line: String| println!("{line}");
    let mut i = Installer {
        host: &host,
        opts,
        say: &mut say,
    };
    match command.as_str() {
        "check" => Ok(if i.check()?.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        "install" => i.install().map(|_| ExitCode::SUCCESS),
        "uninstall" => i.uninstall().map(|_| ExitCode::SUCCESS),
        _ => {
            // For the package's prerm: removable only when neither is true.
            let rec = Record::load(&host)?;
            let running = i.sandboxes()?;
            match &rec {
                Some(r) => println!("registered: runtime io.beta9.sandbox with containerd {} (undo: beta9-sandbox-install uninstall)", r.containerd),
                None => println!("registered: no"),
            }
            println!(
                "sandboxes: {}",
                if running.is_empty() {
                    "none run".to_string()
                } else {
                    install::describe(&running)
                }
            );
            Ok(if rec.is_none() && running.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
