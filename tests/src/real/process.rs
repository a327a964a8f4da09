//! The processes of the real tier: each started with its output in a log file, named for the
//! one line that reports it, and stopped with SIGTERM (then SIGKILL) when the tier stops.

use std::{
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use tokio::process::{Child, Command};

/// One running program of the tier.
#[derive(Debug)]
pub struct Process {
    /// What it is, e.g. `cluster-a's kube-apiserver`.
    pub name: String,
    /// Its standard output and error.
    pub log: PathBuf,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    child: Child,
}

impl Process {
    /// Starts `program args…`, its output appended to `log`.
    pub fn start(
        name: impl Into<String>,
        program: &Path,
        args: Vec<OsString>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(name, program, args, Vec::new(), log)
    }

    /// [`Self::start`] with these environment variables added.
    pub fn start_with_env(
        name: impl Into<String>,
        program: &Path,
        args: Vec<OsString>,
        env: Vec<(OsString, OsString)>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let name = name.into();
        let child = spawn(program, &args, &env, &log).with_context(|| format!("starting {name}"))?;
        let process = Self {
            name,
            log,
            program: program.to_path_buf(),
            args,
            env,
            child,
        };
        process.write_pid()?;
        Ok(process)
    }

    /// Where its process id is kept while it runs, for tests that signal it: beside its log,
    /// `<component>.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.log.with_extension("pid")
    }

    fn write_pid(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("started without a process id")?;
        std::fs::write(self.pid_file(), format!("{pid}\n"))?;
        Ok(())
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fails with the line that names it and its log if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.exited()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("{} exited ({status}): see {}", self.name, self.log.display()),
        }
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends `signal` (a name `kill` knows: STOP, CONT, KILL, TERM).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {} ({}) failed", pid, self.name);
        Ok(())
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`. Resumes it first if it was frozen.
    pub async fn stop(&mut self, grace: Duration) {
        if self.pid().is_none() {
            return;
        }
        let _ = self.signal("CONT");
        let _ = self.signal("TERM");
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// Stops it (if it still runs) and starts it again with the same command line and log.
    pub async fn restart(&mut self, grace: Duration) -> anyhow::Result<()> {
        self.stop(grace).await;
        self.child = spawn(&self.program, &self.args, &self.env, &self.log)
            .with_context(|| format!("restarting {}", self.name))?;
        self.write_pid()
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (log {})", self.name, self.log.display())
    }
}

fn spawn(
    program: &Path,
    args: &[OsString],
    env: &[(OsString, OsString)],
    log: &Path,
) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    Ok(Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()?)
}

/// A free port on 127.0.0.1, for TCP and UDP (DNS servers take both), below Linux's ephemeral
/// range (32768–60999): a port there can be taken, between this check and the server's bind, by
/// any outgoing connection on the machine (kubectl's, mcsd's watches); below it only by another
/// listener.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Start at a spot that differs between processes, then walk the range.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let seed = std::process::id();
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(7, Ordering::Relaxed);
        let port = LOW + (seed.wrapping_add(step) % u32::from(SPAN)) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port on 127.0.0.1 between {LOW} and {}", LOW + SPAN)
}
