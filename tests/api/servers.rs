//! Real servers for the tests: redis-server, the MongoDB-wire server (SecantusDB's
//! `secantusd-py`, or the server at MONGODB_URI), nginx, and chatd processes.
//!
//! Children are started from one long-lived thread with PR_SET_PDEATHSIG, so that they die
//! with the test process even if it is killed; each is also killed when its handle drops.
//!
//! Ports: chatd binds port 0 and tells its port in its log; the others are told a free port
//! and are started on another one if theirs was taken before they could bind it.
//!
//! Over 400 lines: every kind of server the tests run, and the process handling they share
//! (logs, ports, whether a port is the child's own), in the one file the tests import.

use std::{
    fs::OpenOptions,
    io::{Read, Seek, SeekFrom},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// A port nothing listens on right now. Only for servers that cannot report the port they
/// bound: between this probe and the child's bind another process may take it, so such
/// children are started by [`start_on_free_port`], which tries again on another port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from the spawner thread (see the module comment).
pub fn spawn(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("test-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    use std::os::unix::process::CommandExt;
                    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                    unsafe {
                        command.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((command, reply))
        .expect("spawner alive");
    result.recv().expect("spawner replies")
}

/// Where test processes write their logs (kept after the run, for failures and CI artifacts).
pub fn log_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// How long a child may take to listen.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How many ports a child that cannot report its port is tried on (see [`start_on_free_port`]).
const PORT_ATTEMPTS: usize = 5;

/// Why a child is not listening.
#[derive(Debug)]
pub enum NotListening {
    /// It exited; this is what it wrote.
    Exited(String),
    TimedOut,
}

impl NotListening {
    /// The child gave up because another process holds the port.
    fn port_taken(&self) -> bool {
        matches!(self, Self::Exited(output) if output.contains("Address already in use"))
    }
}

/// A child process killed when dropped; its output goes to target/test-logs/<name>.log.
pub struct Process {
    child: Child,
    log: PathBuf,
    /// Where this run's output starts in the log (a restart appends to the earlier runs').
    log_from: u64,
}

impl Process {
    /// Starts `command` with a new log.
    pub fn start(name: &str, command: Command) -> Self {
        Self::launch(name, command, false)
    }

    /// Starts `command` again, its output after the earlier runs' in the same log.
    pub fn restart(name: &str, command: Command) -> Self {
        Self::launch(name, command, true)
    }

    fn launch(name: &str, mut command: Command, append: bool) -> Self {
        let path = log_dir().join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .unwrap();
        let log_from = log.metadata().unwrap().len();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = spawn(command).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            log: path,
            log_from,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the process to exit; true if it did within `within`.
    pub fn wait(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// What this run has written to its log so far.
    pub fn output(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut log) = std::fs::File::open(&self.log) {
            let _ = log.seek(SeekFrom::Start(self.log_from));
            let _ = log.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Waits until `found` finds what it wants in this run's output (it sees the whole output
    /// each time), or the process exits, or `within` passes.
    pub fn await_output<T>(
        &mut self,
        within: Duration,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, NotListening> {
        let deadline = Instant::now() + within;
        loop {
            // Whether it exited is asked first: the output read after is then complete.
            let exited = self.exited();
            let output = self.output();
            if let Some(wanted) = found(&output) {
                return Ok(wanted);
            }
            if exited {
                return Err(NotListening::Exited(output));
            }
            if Instant::now() >= deadline {
                return Err(NotListening::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until this process (not another one) listens on `port`.
    pub fn await_listening(&mut self, port: u16, within: Duration) -> Result<(), NotListening> {
        let pid = self.child.id();
        self.await_output(within, |_| listens(pid, port).then_some(()))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` itself holds a socket listening on `port`: the kernel's socket
/// tables name the listening socket's inode, the process's open files name their sockets'.
fn listens(pid: u32, port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    let listening: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let columns: Vec<&str> = line.split_whitespace().collect();
                    // local address, state (0A: LISTEN), inode
                    let (local, state, inode) = (columns.get(1)?, columns.get(3)?, columns.get(9)?);
                    (local.ends_with(&suffix) && *state == "0A")
                        .then(|| format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if listening.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| listening.iter().any(|s| target.as_os_str() == s.as_str()))
    })
}

/// Starts a server that listens on the port it is told and cannot report one (redis-server,
/// nginx, secantusd-py): on a free port, and on another one when the child exits at start
/// because the port was taken between the probe and its bind.
fn start_on_free_port(what: &str, mut launch: impl FnMut(u16) -> Process) -> (u16, Process) {
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let mut process = launch(port);
        match process.await_listening(port, START_WITHIN) {
            Ok(()) => return (port, process),
            Err(why) if why.port_taken() => continue,
            Err(why) => panic!("{what} did not start on port {port}: {why:?}"),
        }
    }
    panic!("{what}: every port tried ({PORT_ATTEMPTS}) was taken before it could bind it")
}

/// Starts a server again on the port its clients know (`launch` starts it and waits until it
/// listens there): if another process took the port while it was stopped (a bind-and-drop
/// probe holds one for a moment), waits a little and tries again.
fn restart_on(
    port: u16,
    what: &str,
    mut launch: impl FnMut() -> Result<Process, NotListening>,
) -> Process {
    for _ in 0..PORT_ATTEMPTS {
        match launch() {
            Ok(process) => return process,
            Err(why) if why.port_taken() => std::thread::sleep(Duration::from_millis(500)),
            Err(why) => panic!("{what} did not start again on port {port}: {why:?}"),
        }
    }
    panic!("{what}: port {port} stayed taken; it cannot come back where its clients look")
}

/// A server started here on a port it is told, with a directory of its own; it can be stopped
/// and started again on the same port (its clients know that one).
struct OwnServer {
    /// The program, as failures name it, and its logs' prefix (`<log>-<port>.log`).
    what: &'static str,
    log: &'static str,
    command: fn(u16, &Path) -> Command,
    port: u16,
    dir: TempDir,
    process: Option<Process>,
}

impl OwnServer {
    fn start(what: &'static str, log: &'static str, command: fn(u16, &Path) -> Command) -> Self {
        let dir = TempDir::new().unwrap();
        let (port, process) = start_on_free_port(what, |port| {
            Process::start(&format!("{log}-{port}"), command(port, dir.path()))
        });
        Self {
            what,
            log,
            command,
            port,
            dir,
            process: Some(process),
        }
    }

    /// Starts again on the same port and directory (after the process was taken).
    fn resume(&mut self) {
        let (port, dir, command) = (self.port, self.dir.path(), self.command);
        let name = format!("{}-{port}", self.log);
        self.process = Some(restart_on(port, self.what, || {
            let mut process = Process::restart(&name, command(port, dir));
            process
                .await_listening(port, START_WITHIN)
                .map(|()| process)
        }));
    }
}

/// A redis-server on a free port, no persistence: a restart loses everything, like a crash.
pub struct Redis {
    pub port: u16,
    server: OwnServer,
}

impl Redis {
    pub fn start() -> Self {
        let server = OwnServer::start("redis-server", "redis", redis_command);
        Self {
            port: server.port,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        self.server.process = None;
    }

    /// Starts again on the same port (after `stop`).
    pub fn resume(&mut self) {
        self.server.resume();
    }

    /// One redis-server for the whole test process; tests isolate by key prefix.
    pub fn shared() -> &'static Redis {
        static SHARED: OnceLock<Redis> = OnceLock::new();
        SHARED.get_or_init(Redis::start)
    }
}

fn redis_command(port: u16, dir: &Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    command
}

/// A MongoDB-wire server: the one at MONGODB_URI, or a `secantusd-py` started here.
pub struct Mongo {
    pub uri: String,
    local: Option<OwnServer>,
}

impl Mongo {
    /// A server this test controls (can be stopped); always a local `secantusd-py`.
    pub fn start_local() -> Self {
        let what = "secantusd-py (is SecantusDB installed? scripts/test installs it)";
        let local = OwnServer::start(what, "mongo", mongo_command);
        Self {
            uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", local.port),
            local: Some(local),
        }
    }

    /// Stops the server the way an operator would (SIGTERM), waiting for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.local.as_mut().and_then(|l| l.process.take()) {
            process.signal(libc::SIGTERM);
            process.wait(Duration::from_secs(20));
        }
    }

    /// Starts again on the same port and storage (after `stop`).
    pub fn resume(&mut self) {
        self.local.as_mut().expect("a local server").resume();
    }

    /// One server for the whole test process (MONGODB_URI if set); tests isolate by database.
    pub fn shared() -> &'static Mongo {
        static SHARED: OnceLock<Mongo> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var("MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => Mongo { uri, local: None },
            _ => Mongo::start_local(),
        })
    }
}

fn mongo_command(port: u16, dir: &Path) -> Command {
    let mut command = Command::new("secantusd-py");
    command
        .args(["--port", &port.to_string(), "--log-level", "WARNING"])
        // Durable commits, like mongod's journal: what was acknowledged survives a stop.
        .arg("--sync-on-commit")
        .arg("--storage-path")
        .arg(dir);
    command
}

/// A name no other test uses (database names, key prefixes).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A chatd node as its own process (the built binary), so tests can SIGKILL it.
pub struct ChatdNode {
    pub name: String,
    pub port: u16,
    env: Vec<(String, String)>,
    process: Option<Process>,
}

impl ChatdNode {
    /// Starts `chatd` with these CHATD__* settings (plus its name). It binds a port of the
    /// kernel's choosing (nobody else can take it first) and says which in its log.
    pub fn start(name: &str, env: &[(String, String)]) -> Self {
        let mut node = Self {
            name: name.to_owned(),
            port: 0,
            env: env.to_vec(),
            process: None,
        };
        let (process, addr) = node
            .launch(Process::start)
            .unwrap_or_else(|why| panic!("{} did not start: {why:?}", node.describe()));
        (node.port, node.process) = (addr.port(), Some(process));
        node
    }

    /// Starts the node again (after `kill` or `terminate`) on the port it had: clients and
    /// nginx know that one.
    pub fn resume(&mut self) {
        let process = restart_on(self.port, &self.describe(), || {
            let (process, addr) = self.launch(Process::restart)?;
            assert_eq!(addr.port(), self.port, "{} came back elsewhere", self.name);
            Ok(process)
        });
        self.process = Some(process);
    }

    /// Runs the binary on `self.port` (0: any) and waits for the line saying where it listens.
    fn launch(
        &self,
        start: fn(&str, Command) -> Process,
    ) -> Result<(Process, SocketAddr), NotListening> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
        command
            .env(
                "CHATD_CONFIG_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            )
            .env("CHATD__SERVER__PORT", self.port.to_string())
            .env("CHATD__SERVER__NODE_ID", &self.name)
            .env("CHATD__LOG__LEVEL", "info,chatd=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        // RUST_LOG overrides the level; the line that tells the port must still be written.
        if let Some(filter) = std::env::var("RUST_LOG").ok().filter(|f| !f.is_empty()) {
            command.env("RUST_LOG", format!("{filter},chatd::startup=info"));
        }
        let mut process = start(&format!("chatd-{}", self.name), command);
        let addr = process.await_output(START_WITHIN, |output| {
            output.lines().find_map(listening_addr)
        })?;
        Ok((process, addr))
    }

    fn describe(&self) -> String {
        format!(
            "chatd {} (see target/test-logs/chatd-{}.log)",
            self.name, self.name
        )
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the running process has logged so far.
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .map(Process::output)
            .unwrap_or_default()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// SIGKILL: no drain, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal(libc::SIGKILL);
            process.wait(Duration::from_secs(10));
        }
    }

    /// SIGTERM, then waits for the drain; true if it exited within `within`.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(mut process) = self.process.take() else {
            return true;
        };
        process.signal(libc::SIGTERM);
        process.wait(within)
    }
}

/// The address in the line a node logs once it listens (`chatd listening` with
/// `addr=127.0.0.1:PORT`), in either log format: pretty (with colours) or JSON.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        return (event["message"] == "chatd listening")
            .then(|| event["addr"].as_str()?.parse().ok())?;
    }
    let plain = strip_ansi(line);
    if !plain.contains("chatd listening") {
        return None;
    }
    plain
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))?
        .parse()
        .ok()
}

/// `text` without its terminal escape sequences (ESC [ … letter).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Settings of a cluster node on these servers.
pub fn cluster_env(
    redis: &str,
    mongo: &str,
    database: &str,
    prefix: &str,
) -> Vec<(String, String)> {
    [
        ("CHATD__STORE__KIND", "mongodb"),
        ("CHATD__STORE__MONGODB_URI", mongo),
        ("CHATD__STORE__MONGODB_DATABASE", database),
        ("CHATD__BUS__KIND", "redis"),
        ("CHATD__BUS__REDIS_URL", redis),
        ("CHATD__BUS__REDIS_PREFIX", prefix),
        // The MongoDB-wire test server queues for seconds under the load tests' bursts (about
        // 40 inserts/s on one core); the store deadline has its own tests (partition.rs).
        ("CHATD__STORE__TIMEOUT_MS", "60000"),
        // Load tests send faster than a person; the limits have their own tests.
        ("CHATD__LIMITS__FRAMES_PER_SECOND", "100000"),
        ("CHATD__LIMITS__FRAMES_BURST", "100000"),
        ("CHATD__LIMITS__SENDS_PER_SECOND", "100000"),
        ("CHATD__LIMITS__SENDS_BURST", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// nginx balancing over local nodes, from scripts/lib/nginx-local.conf.template.
pub struct Nginx {
    pub port: u16,
    _dir: TempDir,
    _process: Process,
}

impl Nginx {
    pub fn start(upstreams: &[u16]) -> Self {
        let dir = TempDir::new().unwrap();
        let launch = |port: u16| {
            let template = include_str!("../../scripts/lib/nginx-local.conf.template");
            let servers: String = upstreams
                .iter()
                .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
                .collect();
            let conf = template
                .replace("{{PREFIX}}", &dir.path().display().to_string())
                .replace("{{LISTEN}}", &port.to_string())
                .replace("{{UPSTREAMS}}", &servers);
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut command = Command::new("nginx");
            command.arg("-p").arg(dir.path()).arg("-c").arg(&conf_path);
            Process::start(&format!("nginx-{port}"), command)
        };
        let (port, process) = start_on_free_port("nginx", launch);
        Self {
            port,
            _dir: dir,
            _process: process,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

#[test]
fn the_listening_line_is_read_in_both_log_formats() {
    let pretty = "\x1b[2m2026-12-01T20:34:56.285954Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2mchatd::startup\x1b[0m\x1b[2m:\x1b[0m chatd listening \x1b[3mnode\x1b[0m\x1b[2m=\x1b[0ma \x1b[3maddr\x1b[0m\x1b[2m=\x1b[0m127.0.0.1:40981 \x1b[3mstore\x1b[0m\x1b[2m=\x1b[0mSqlite";
    let json = r#"{"timestamp":"2026-12-01T20:43:28.684962Z","level":"INFO","message":"chatd listening","node":"a","addr":"127.0.0.1:33669","target":"chatd::startup"}"#;
    assert_eq!(listening_addr(pretty), Some(([127, 0, 0, 1], 40981).into()));
    assert_eq!(listening_addr(json), Some(([127, 0, 0, 1], 33669).into()));
    for other in [
        "INFO chatd::startup: security posture addr=127.0.0.1:1",
        r#"{"message":"other","addr":"127.0.0.1:1"}"#,
        "",
    ] {
        assert_eq!(listening_addr(other), None, "{other}");
    }
}
