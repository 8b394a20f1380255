//! Real servers for the tests: redis-server, the MongoDB-wire server (SecantusDB's
//! `secantusd-py`, or the server at MONGODB_URI), nginx, and chatd processes.
//!
//! Children are started from one long-lived thread with PR_SET_PDEATHSIG, so that they die
//! with the test process even if it is killed; each is also killed when its handle drops.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    time::{Duration, Instant},
};

use tempfile::TempDir;

pub fn free_port() -> u16 {
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

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Where test processes write their logs (kept after the run, for failures and CI artifacts).
pub fn log_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn log_file(name: &str) -> std::fs::File {
    std::fs::File::create(log_dir().join(format!("{name}.log"))).unwrap()
}

/// A child process killed when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    pub fn start(name: &str, mut command: Command) -> Self {
        let log = log_file(name);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = spawn(command).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child }
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
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A redis-server on a free port, no persistence: a restart loses everything, like a crash.
pub struct Redis {
    pub port: u16,
    dir: TempDir,
    process: Option<Process>,
}

impl Redis {
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: TempDir::new().unwrap(),
            process: None,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts again on the same port (after `stop`).
    pub fn resume(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        self.process = Some(Process::start(&format!("redis-{}", self.port), command));
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "redis-server did not start"
        );
    }

    /// One redis-server for the whole test process; tests isolate by key prefix.
    pub fn shared() -> &'static Redis {
        static SHARED: OnceLock<Redis> = OnceLock::new();
        SHARED.get_or_init(Redis::start)
    }
}

/// A MongoDB-wire server: the one at MONGODB_URI, or a `secantusd-py` started here.
pub struct Mongo {
    pub uri: String,
    local: Option<LocalMongo>,
}

struct LocalMongo {
    port: u16,
    dir: TempDir,
    process: Option<Process>,
}

impl Mongo {
    /// A server this test controls (can be stopped); always a local `secantusd-py`.
    pub fn start_local() -> Self {
        let port = free_port();
        let mut mongo = Self {
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            local: Some(LocalMongo {
                port,
                dir: TempDir::new().unwrap(),
                process: None,
            }),
        };
        mongo.resume();
        mongo
    }

    /// Stops the server the way an operator would (SIGTERM), waiting for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.local.as_mut().and_then(|l| l.process.take()) {
            process.signal(libc::SIGTERM);
            process.wait(Duration::from_secs(20));
        }
    }

    pub fn resume(&mut self) {
        let local = self.local.as_mut().expect("a local server");
        let mut command = Command::new("secantusd-py");
        command
            .args(["--port", &local.port.to_string(), "--log-level", "WARNING"])
            // Durable commits, like mongod's journal: what was acknowledged survives a stop.
            .arg("--sync-on-commit")
            .arg("--storage-path")
            .arg(local.dir.path());
        local.process = Some(Process::start(&format!("mongo-{}", local.port), command));
        assert!(
            wait_for_port(local.port, Duration::from_secs(30)),
            "secantusd-py did not start (is SecantusDB installed? scripts/test installs it)"
        );
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
    /// Starts `chatd` with these CHATD__* settings (plus its name and a free port).
    pub fn start(name: &str, env: &[(String, String)]) -> Self {
        let mut node = Self {
            name: name.to_owned(),
            port: free_port(),
            env: env.to_vec(),
            process: None,
        };
        node.resume();
        node
    }

    pub fn resume(&mut self) {
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
        self.process = Some(Process::start(&format!("chatd-{}", self.name), command));
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)),
            "chatd {} did not start; see target/test-logs/chatd-{}.log",
            self.name,
            self.name
        );
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
        let port = free_port();
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
        let process = Process::start(&format!("nginx-{port}"), command);
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "nginx did not start"
        );
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
