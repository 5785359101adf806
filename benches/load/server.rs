//! Set-up (pinning, file limits) and the servers under test: Holdfast spawned from its binary, the baseline, or servers already running.

use super::*;

/// Pinning, descriptors and threads of this run.
pub struct Setup {
    /// `taskset -c` list the servers run under, if any.
    pub server_cpus: Option<String>,
    /// CPUs the load generator is pinned to, if any.
    pub client_cpus: Option<String>,
    /// RLIMIT_NOFILE after raising: (soft, hard).
    pub nofile: (u64, u64),
    /// Worker threads of the load generator's runtime.
    pub threads: usize,
}

impl Setup {
    /// Raises RLIMIT_NOFILE to `2 * clients + 1000` (servers spawned later
    /// inherit it; each process needs about `clients + 1000`), pins
    /// this process to `CLIENT_CPUS` and notes `SERVER_CPUS`. Call first in
    /// `main`, before any thread exists, so every later thread inherits the
    /// pinning.
    pub fn new(clients: u64) -> Self {
        let nofile = raise_nofile(clients * 2 + 1000, clients + 1000);
        let server_cpus_env = env_opt("SERVER_CPUS");
        let client_cpus = env_opt("CLIENT_CPUS");
        let mut server_cpus = server_cpus_env;
        if let Some(list) = &client_cpus {
            // Children inherit this process's affinity: unless told otherwise
            // the servers keep the CPUs this process had before pinning.
            if server_cpus.is_none() {
                server_cpus = current_cpus();
            }
            pin_self(list);
        }
        let threads = env_or(
            "LOADGEN_THREADS",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        Self {
            server_cpus,
            client_cpus,
            nofile,
            threads,
        }
    }

    /// The load generator's runtime: multi-threaded, one worker per CPU it
    /// may use (LOADGEN_THREADS to change).
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads)
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// For the header and the JSON.
    pub fn describe(&self) -> Value {
        json!({
            "server_cpus": self.server_cpus,
            "client_cpus": self.client_cpus,
            "loadgen_threads": self.threads,
            "nofile_soft": self.nofile.0,
            "nofile_hard": self.nofile.1,
        })
    }
}

/// Raises RLIMIT_NOFILE towards `want`; `need` is what one process (the
/// generator, or a server, which inherits the limit) must have.
pub(crate) fn raise_nofile(want: u64, need: u64) -> (u64, u64) {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get().unwrap_or((1024, 1024));
    if soft >= want {
        return (soft, hard);
    }
    // With CAP_SYS_RESOURCE the hard limit may rise too; without it, soft
    // may rise up to hard.
    if rlimit::setrlimit(Resource::NOFILE, want, want.max(hard)).is_err() {
        let _ = rlimit::setrlimit(Resource::NOFILE, want.min(hard), hard);
    }
    let now = Resource::NOFILE.get().unwrap_or((soft, hard));
    if now.0 < need {
        eprintln!(
            "warning: RLIMIT_NOFILE is {} (hard {}) but each process needs about {need}: \
             connects will fail with EMFILE; raise `ulimit -Hn` (as root) first",
            now.0, now.1
        );
    } else if now.0 < want {
        eprintln!(
            "note: RLIMIT_NOFILE is {} (the hard limit), not {want}: enough, since the limit is per \
             process and each process needs about {need}",
            now.0
        );
    }
    now
}

pub(crate) fn parse_cpus(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad CPU list {list}"));
        let b: usize = b
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad CPU list {list}"));
        cpus.extend(a..=b);
    }
    cpus
}

pub(crate) fn current_cpus() -> Option<String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the size is its own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let cpus: Vec<String> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .map(|c| c.to_string())
            .collect();
        Some(cpus.join(","))
    }
}

pub(crate) fn pin_self(list: &str) {
    let cpus = parse_cpus(list);
    // SAFETY: as above; pid 0 is the calling thread, and every thread created
    // afterwards inherits its mask.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in &cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "CLIENT_CPUS={list}: sched_setaffinity failed: {}",
        std::io::Error::last_os_error()
    );
}

// ------------------------------------------------------------------- servers

/// Which server a target is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    /// `target/release/holdfast`, or the server at `<BENCH>_URL`.
    Holdfast,
    /// `benches/baseline`, or the server at `BASELINE_URL`.
    Baseline,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Holdfast => "holdfast",
            Kind::Baseline => "baseline",
        }
    }
}

/// One target of this run: spawn it, or use a server already running.
pub struct Plan {
    pub kind: Kind,
    /// `Some(url)`: already running there.
    pub url: Option<String>,
    /// Its pid when already running (`SERVER_PID` / `BASELINE_PID`), for RSS
    /// and CPU figures.
    pub pid: Option<u32>,
}

/// The targets, from `<BENCH>_URL`, `BASELINE_URL`, `BASELINE_ONLY` and
/// `HOLDFAST_ONLY`.
pub fn plan(bench: &str) -> Vec<Plan> {
    let url_var = format!("{}_URL", bench.to_ascii_uppercase());
    let holdfast_url = env_opt(&url_var);
    let baseline_url = env_opt("BASELINE_URL");
    let mut plans = Vec::new();
    if !env_flag("BASELINE_ONLY") {
        plans.push(Plan {
            kind: Kind::Holdfast,
            pid: holdfast_url
                .as_ref()
                .and_then(|_| env_opt("SERVER_PID")?.parse().ok()),
            url: holdfast_url.clone(),
        });
    }
    // Against a given URL the comparison needs a given baseline too.
    if !env_flag("HOLDFAST_ONLY") && (holdfast_url.is_none() || baseline_url.is_some()) {
        plans.push(Plan {
            kind: Kind::Baseline,
            pid: baseline_url
                .as_ref()
                .and_then(|_| env_opt("BASELINE_PID")?.parse().ok()),
            url: baseline_url,
        });
    }
    plans
}

/// A server under test; a spawned one is killed if still running on drop.
pub struct Server {
    pub kind: Kind,
    pub url: String,
    pub pid: Option<u32>,
    /// What it is, for the header.
    pub describe: String,
    child: Option<Child>,
    /// Holdfast's stdout and stderr.
    log: Option<PathBuf>,
    dir: Option<PathBuf>,
}

impl Server {
    /// Starts (or finds) the target and checks that a client gets `welcome`.
    ///
    /// # Errors
    /// It did not start, did not become ready, or does not serve the
    /// WebSocket endpoint (e.g. HTTP 404 on `/ws`).
    pub fn start(
        plan: &Plan,
        setup: &Setup,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Server, String> {
        let server = match (&plan.url, plan.kind) {
            (Some(url), kind) => Server {
                kind,
                url: url.clone(),
                pid: plan.pid,
                describe: format!(
                    "already running{}",
                    plan.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
                ),
                child: None,
                log: None,
                dir: None,
            },
            (None, Kind::Holdfast) => spawn_holdfast(setup)?,
            (None, Kind::Baseline) => spawn_baseline(setup)?,
        };
        rt.block_on(async {
            match tokio::time::timeout(CONNECT_TIMEOUT, connect(&server.url, 4096)).await {
                Ok(Ok(_ws)) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!(
                    "{}: no welcome within {CONNECT_TIMEOUT:?}",
                    server.url
                )),
            }
        })
        .map_err(|e| {
            if server.kind == Kind::Holdfast && e.contains("HTTP 404") {
                format!("{e}: this holdfast build does not serve /ws yet")
            } else {
                e
            }
        })?;
        Ok(server)
    }

    /// This bench started it (and may signal it).
    pub fn spawned(&self) -> bool {
        self.child.is_some()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill has no memory preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits up to `timeout` for a spawned server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops a spawned server: SIGTERM, then SIGKILL after 15 s. Reports an
    /// unclean Holdfast exit (with the tail of its log).
    pub fn stop(mut self) {
        if self.child.is_none() {
            return;
        }
        self.sigterm();
        match self.wait_exit(Duration::from_secs(15)) {
            Some(status) if self.kind == Kind::Holdfast && status.code() != Some(0) => {
                eprintln!("warning: holdfast exited with {status} after SIGTERM");
                self.print_log_tail();
            }
            Some(_) => {}
            None => eprintln!(
                "warning: {} did not exit within 15 s of SIGTERM; killing it",
                self.kind.label()
            ),
        }
    }

    /// The last lines of a spawned Holdfast's log.
    pub fn print_log_tail(&self) {
        if let Some(tail) = self.log.as_ref().and_then(log_tail) {
            eprintln!("--- holdfast log (tail) ---\n{tail}\n---");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub(crate) fn log_tail(path: &PathBuf) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(20)..].join("\n"))
}

/// `target/release` (the bench binary is `target/release/deps/<name>-<hash>`).
pub(crate) fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target/release")
        .to_path_buf()
}

/// Where the JSON results go: `target/bench-results`.
pub fn results_dir() -> PathBuf {
    release_dir()
        .parent()
        .expect("target")
        .join("bench-results")
}

/// `target/release/holdfast` (HOLDFAST_BIN to use another), built if missing.
pub(crate) fn holdfast_binary() -> PathBuf {
    if let Some(bin) = env_opt("HOLDFAST_BIN") {
        return bin.into();
    }
    let bin = release_dir().join("holdfast");
    if !bin.exists() {
        eprintln!("building {} (missing)", bin.display());
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "holdfast-server",
                "--bin",
                "holdfast",
            ])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --release -p holdfast-server failed"
        );
    }
    bin
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `taskset -c CPUS program` when server pinning is asked for.
pub(crate) fn server_command(setup: &Setup, program: &std::path::Path) -> Command {
    match &setup.server_cpus {
        Some(cpus) => {
            // taskset execs the program: the pid stays the server's.
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    }
}

pub(crate) fn http_ready(port: u16) -> bool {
    let Ok(mut s) = StdTcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

pub(crate) fn spawn_holdfast(setup: &Setup) -> Result<Server, String> {
    spawn_holdfast_from(setup, &holdfast_binary(), &[])
}

/// Spawns `bin` (the `holdfast` binary, or an application built on it with
/// `cli::run`) on a free port, with `env` besides the bench's settings;
/// answers once it is ready.
pub fn spawn_holdfast_from(
    setup: &Setup,
    bin: &std::path::Path,
    env: &[(&str, &str)],
) -> Result<Server, String> {
    let mut with_ws_settings = true;
    loop {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("holdfast-load-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log_path = dir.join("holdfast.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut cmd = server_command(setup, bin);
        cmd.envs(env.iter().copied())
            .current_dir(&dir)
            .env("HOLDFAST__SERVER__PORT", port.to_string())
            .env("HOLDFAST__LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if with_ws_settings {
            cmd.envs(HOLDFAST_WS_ENV);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut server = Server {
            kind: Kind::Holdfast,
            url: format!("ws://127.0.0.1:{port}/ws"),
            pid: Some(child.id()),
            describe: format!("{}, pid {}", bin.display(), child.id()),
            child: Some(child),
            log: Some(log_path.clone()),
            dir: Some(dir),
        };
        let t0 = Instant::now();
        loop {
            if http_ready(port) {
                if !with_ws_settings {
                    server
                        .describe
                        .push_str(", without the HOLDFAST__WS__* settings");
                }
                return Ok(server);
            }
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let tail = log_tail(&log_path).unwrap_or_default();
                if status.code() == Some(64) && with_ws_settings {
                    eprintln!(
                        "holdfast rejected its configuration (exit 64), most likely because this build \
                         has no [ws] section yet, so the HOLDFAST__WS__* keys it is started with \
                         (max_connections, rate_per_sec, rate_burst, outbound_max_messages, \
                         outbound_max_bytes) are unknown to it:\n  {}\nretrying without them: \
                         holdfast's own default limits apply",
                        tail.trim()
                    );
                    with_ws_settings = false;
                    break;
                }
                return Err(format!(
                    "holdfast exited with {status} before ready:\n{tail}"
                ));
            }
            if t0.elapsed() > READY_TIMEOUT {
                return Err(format!("holdfast not ready within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub(crate) fn spawn_baseline(setup: &Setup) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let port = free_port();
    let child = server_command(setup, &exe)
        .env(baseline::LISTEN_ENV, format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn baseline: {e}"))?;
    let mut server = Server {
        kind: Kind::Baseline,
        url: format!("ws://127.0.0.1:{port}/ws"),
        pid: Some(child.id()),
        describe: format!(
            "tokio ({} runtime) + tokio-tungstenite (benches/baseline), pid {}",
            if baseline::current_thread() {
                "current_thread"
            } else {
                "multi_thread"
            },
            child.id()
        ),
        child: Some(child),
        log: None,
        dir: None,
    };
    let t0 = Instant::now();
    while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
            return Err(format!("baseline exited with {status} before listening"));
        }
        if t0.elapsed() > READY_TIMEOUT {
            return Err("baseline not listening within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(server)
}
