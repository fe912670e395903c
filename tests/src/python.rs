//! A Python virtualenv with the pinned third-party clients of `tests/py/requirements.txt`, for
//! acceptance tests that drive our Consul-shaped API with real Consul client libraries, unmodified.
//!
//! The venv lives in `target/py-venv`, is created once with `python3 -m venv` and reused while
//! it is healthy (its stamp matches the requirements and the interpreter, and `import consul`
//! works); otherwise it is rebuilt. Several test processes may ask at once: an exclusive lock
//! on `target/py-venv.lock` lets one build it while the others wait. Every external command is
//! bounded in time ([`run_bounded`]).

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long `pip install` may take (downloads included) before it is killed.
const PIP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `python3 -m venv` (which bootstraps pip with ensurepip) may take.
const VENV_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the health probe of an existing venv may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// `tests/py`: the Python scripts and `requirements.txt`.
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py")
}

/// The venv's interpreter, creating the venv first if needed. Panics with a clear message if
/// Python, its `venv` module or pip is unavailable, or if the install fails.
pub fn python() -> PathBuf {
    venv_python(&venv())
}

/// The venv directory (`target/py-venv`), created once per test process and reused across
/// processes while healthy.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| match ensure_venv() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot set up the Python venv for the client tests: {e:#}"),
    })
    .clone()
}

fn venv_python(dir: &Path) -> PathBuf {
    dir.join("bin").join("python")
}

/// `target/` of this build: the test binary is `target/<profile>/deps/<name>`.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn ensure_venv() -> anyhow::Result<PathBuf> {
    use anyhow::{Context, bail};

    let target = target_dir();
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let lock_path = target.join("py-venv.lock");
    let lock = File::create(&lock_path).with_context(|| format!("{}", lock_path.display()))?;
    // Held until this function returns (dropping the file releases it).
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let dir = target.join("py-venv");
    let requirements = py_dir().join("requirements.txt");
    let wanted = stamp(&requirements)?;
    let stamp_path = dir.join("mesh-tests-stamp");
    if fs::read_to_string(&stamp_path).is_ok_and(|s| s == wanted) && healthy(&dir) {
        return Ok(dir);
    }
    if dir.exists() {
        eprintln!(
            "python venv {} is stale or broken: rebuilding",
            dir.display()
        );
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }

    let python3 = base_python();
    eprintln!("creating python venv {} with {python3}", dir.display());
    let out = run_bounded(
        Command::new(&python3).arg("-m").arg("venv").arg(&dir),
        VENV_TIMEOUT,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "running `{python3} -m venv`: {e} (install Python 3.10 or newer, or set \
             MESH_TEST_PYTHON to an interpreter)"
        )
    })?;
    if !out.success() {
        bail!(
            "`{python3} -m venv {}` failed ({}); on Debian/Ubuntu install the `python3-venv` \
             package (venv and ensurepip are split out of python3 there)\n{}",
            dir.display(),
            out.describe(),
            out.text()
        );
    }
    let py = venv_python(&dir);
    let out = run_bounded(
        Command::new(&py)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(["--no-input", "--timeout", "30", "--retries", "2", "-r"])
            .arg(&requirements),
        PIP_TIMEOUT,
    )
    .with_context(|| format!("running pip in {}", dir.display()))?;
    if !out.success() {
        bail!(
            "`pip install -r {}` failed ({}); PyPI must be reachable (or PIP_INDEX_URL set to a \
             mirror)\n{}",
            requirements.display(),
            out.describe(),
            out.text()
        );
    }
    if !healthy(&dir) {
        bail!(
            "the venv {} was built but `import consul` still fails",
            dir.display()
        );
    }
    fs::write(&stamp_path, wanted).with_context(|| format!("writing {}", stamp_path.display()))?;
    Ok(dir)
}

/// The interpreter the venv is made from: `$MESH_TEST_PYTHON`, else `python3` on `PATH`
/// (also what scripts that need only the standard library run with).
pub fn base_python() -> String {
    std::env::var("MESH_TEST_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// What the venv must have been built from: the requirements and the base interpreter.
fn stamp(requirements: &Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let reqs = fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    Ok(format!("python={}\n{reqs}", base_python()))
}

/// Whether the venv's interpreter runs and imports the client.
fn healthy(dir: &Path) -> bool {
    let py = venv_python(dir);
    py.exists()
        && run_bounded(
            Command::new(py).args(["-c", "import consul, requests"]),
            PROBE_TIMEOUT,
        )
        .is_ok_and(|o| o.success())
}

/// Runs `tests/py/<script>` in the venv with `addr` (`HOST:PORT`) and then `args` on its
/// command line, hermetically (no `CONSUL_HTTP_*` from the environment, no HTTP proxy for
/// loopback, no `__pycache__` in `tests/py`), killed after `timeout`.
pub fn run_client_script(
    script: &str,
    addr: std::net::SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> std::io::Result<Bounded> {
    run_bounded(
        Command::new(python())
            .arg(py_dir().join(script))
            .arg(addr.to_string())
            .args(args)
            // Hermetic: py-consul reads these, and requests honours proxy variables.
            .env_remove("CONSUL_HTTP_ADDR")
            .env_remove("CONSUL_HTTP_TOKEN")
            .env_remove("CONSUL_HTTP_SSL")
            .env_remove("CONSUL_HTTP_SSL_VERIFY")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        timeout,
    )
}

/// The outcome of [`run_bounded`].
#[derive(Debug)]
pub struct Bounded {
    /// `None` when the process was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Bounded {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// "exit status: 1", or "killed after 300s".
    pub fn describe(&self) -> String {
        match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {:.0?}", self.elapsed),
        }
    }

    /// Both outputs, labelled, for failure messages.
    pub fn text(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) and kills it if it is still running
/// after `timeout`.
#[allow(
    unsafe_code,
    reason = "kill(2) of a process group: std only kills one process"
)]
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> std::io::Result<Bounded> {
    use std::os::unix::process::CommandExt;
    let start = Instant::now();
    let mut child = cmd
        // Its own process group, so a kill at the deadline also reaches its children (which
        // would otherwise keep the pipes open and the drain threads waiting).
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Drain both pipes in threads so a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = start + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            // The group by the syscall: procps-ng 4.0's `kill -KILL -PGID` signals every
            // process (as `kill -1`), which took the whole machine's processes with it.
            if let Ok(pgid) = i32::try_from(child.id())
                && pgid > 1
            {
                // SAFETY: kill(2) on the child's own process group; no memory involved.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Bounded {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    })
}
