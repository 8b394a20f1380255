// Real servers for the JavaScript tests (SDK and browser): chatd nodes from the debug build,
// redis-server, SecantusDB and nginx, each on a port of its own with its own temp dir, all
// killed when the test process exits. chatd binds a port of the kernel's choosing and says
// which in its log; the others are told a free port and, should another process take it
// before they bind it, are started again on another.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, openSync, statSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { generateKeyPairSync, randomUUID } from "node:crypto";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const CHATD = process.env.CHATD_BIN ?? join(ROOT, "target/debug/chatd");
const LOGS = join(ROOT, "target/test-logs");
mkdirSync(LOGS, { recursive: true });

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** How many ports a server that cannot report its port is tried on. */
const PORT_ATTEMPTS = 5;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
    server.on("error", reject);
  });
}

/** Waits until something accepts connections on `port`, unless `gaveUp()` says to stop. */
export async function waitForPort(port, timeoutMs = 30000, gaveUp = () => false) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !gaveUp()) {
    const ok = await new Promise((done) => {
      const socket = connect(port, "127.0.0.1");
      socket.on("connect", () => (socket.destroy(), done(true)));
      socket.on("error", () => done(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${port}`);
}

/** A child process with its output in target/test-logs/<name>.log. */
export class Proc {
  constructor(name, command, args, env = {}) {
    this.name = name;
    this.command = command;
    this.args = args;
    this.env = env;
    this.start();
  }

  get logPath() {
    return join(LOGS, `${this.name}.log`);
  }

  start() {
    const log = openSync(this.logPath, "a");
    // Where this run's output starts (runs append to one log).
    this.logFrom = statSync(this.logPath).size;
    this.child = spawn(this.command, this.args, {
      env: { ...process.env, ...this.env },
      stdio: ["ignore", log, log],
    });
    children.add(this.child);
    this.hasExited = false;
    this.exited = new Promise((done) =>
      this.child.on("exit", (...why) => {
        this.hasExited = true;
        done(...why);
      }),
    );
  }

  /** What this run has written to its log so far. */
  output() {
    return readFileSync(this.logPath).subarray(this.logFrom).toString("utf8");
  }

  /** Waits until `found(output)` returns something (it sees this run's whole output each time). */
  async awaitOutput(found, what, timeoutMs = 30000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Asked first: the output read after an exit is then complete.
      const exited = this.hasExited;
      const wanted = found(this.output());
      if (wanted) return wanted;
      if (exited) throw new Error(`${this.name} exited before ${what}; see ${this.logPath}`);
      if (Date.now() > deadline) throw new Error(`${this.name}: no ${what} within ${timeoutMs} ms; see ${this.logPath}`);
      await sleep(50);
    }
  }

  async kill(signal = "SIGKILL") {
    this.child.kill(signal);
    await this.exited;
    children.delete(this.child);
  }
}

/** The port in the line chatd logs once it listens (`chatd listening … addr=127.0.0.1:PORT`),
 * in either log format: pretty (with colours) or JSON. */
export function listeningPort(output) {
  for (const line of output.split("\n")) {
    let addr;
    try {
      const event = JSON.parse(line);
      if (event?.message === "chatd listening") addr = event.addr;
    } catch {
      const plain = line.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
      if (plain.includes("chatd listening")) addr = /\baddr=(\S+)/.exec(plain)?.[1];
    }
    const port = Number(addr?.slice(addr.lastIndexOf(":") + 1));
    if (port) return port;
  }
  return null;
}

/** A chatd node. `env` are CHATD__* settings; SQLite in a temp dir unless told otherwise. It
 * binds a port of the kernel's choosing; `proc.start()` brings it back on that same port. */
export async function startChatd(name, env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "chatd-js-"));
  const filter = process.env.RUST_LOG;
  const proc = new Proc(`js-chatd-${name}`, CHATD, [], {
    CHATD_CONFIG_DIR: join(ROOT, "config"),
    CHATD__SERVER__PORT: "0",
    CHATD__SERVER__NODE_ID: name,
    CHATD__STORE__SQLITE_PATH: join(dir, "chatd.db"),
    // RUST_LOG overrides the level; the line that tells the port must still be written.
    ...(filter ? { RUST_LOG: `${filter},chatd::startup=info` } : {}),
    ...env,
  });
  const port = await proc.awaitOutput(listeningPort, "saying where it listens");
  // Clients (and nginx) know this port: a restart must come back on it.
  proc.env.CHATD__SERVER__PORT = String(port);
  return { proc, port, base: `http://127.0.0.1:${port}` };
}

/** Starts a server that listens on the port it is told (it cannot report one): on a free
 * port, and on another when it exits at start because the port was taken meanwhile. */
async function startOnFreePort(what, launch) {
  for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
    const port = await freePort();
    const proc = launch(port);
    const listening = await waitForPort(port, 30000, () => proc.hasExited).then(
      () => true,
      () => false,
    );
    if (listening && !proc.hasExited) return { port, proc };
    if (!proc.hasExited) throw new Error(`${what} does not listen on ${port}; see ${proc.logPath}`);
    if (!proc.output().includes("Address already in use")) {
      throw new Error(`${what} exited at start; see ${proc.logPath}`);
    }
  }
  throw new Error(`${what}: every port tried (${PORT_ATTEMPTS}) was taken before it could bind it`);
}

export async function startRedis() {
  const dir = mkdtempSync(join(tmpdir(), "chatd-redis-"));
  const { port, proc } = await startOnFreePort("redis-server", (port) =>
    new Proc(`js-redis-${port}`, "redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]),
  );
  return { proc, url: `redis://127.0.0.1:${port}` };
}

/** The MongoDB-wire server: MONGODB_URI if set, else a SecantusDB started here. */
export async function startMongo() {
  if (process.env.MONGODB_URI) return { uri: process.env.MONGODB_URI, proc: null };
  const dir = mkdtempSync(join(tmpdir(), "chatd-mongo-"));
  const { port, proc } = await startOnFreePort("secantusd-py", (port) =>
    new Proc(`js-mongo-${port}`, "secantusd-py", ["--port", String(port), "--storage-path", dir, "--log-level", "WARNING"]),
  );
  return { proc, uri: `mongodb://127.0.0.1:${port}/?directConnection=true` };
}

/** Settings for a cluster node on these servers. */
export function clusterEnv(redisUrl, mongoUri, database = "chatd_" + randomUUID().replaceAll("-", "")) {
  return {
    CHATD__STORE__KIND: "mongodb",
    CHATD__STORE__MONGODB_URI: mongoUri,
    CHATD__STORE__MONGODB_DATABASE: database,
    CHATD__BUS__KIND: "redis",
    CHATD__BUS__REDIS_URL: redisUrl,
    CHATD__BUS__REDIS_PREFIX: database,
  };
}

/** nginx in front of `ports`, from scripts/lib/nginx-local.conf.template. */
export async function startNginx(ports) {
  const dir = mkdtempSync(join(tmpdir(), "chatd-nginx-"));
  const upstreams = ports.map((p) => `        server 127.0.0.1:${p} max_fails=1 fail_timeout=2s;`).join("\n");
  const { port, proc } = await startOnFreePort("nginx", (port) => {
    const conf = readFileSync(join(ROOT, "scripts/lib/nginx-local.conf.template"), "utf8")
      .replaceAll("{{PREFIX}}", dir)
      .replaceAll("{{LISTEN}}", String(port))
      .replaceAll("{{UPSTREAMS}}", upstreams);
    writeFileSync(join(dir, "nginx.conf"), conf);
    return new Proc(`js-nginx-${port}`, "nginx", ["-p", dir, "-c", join(dir, "nginx.conf")]);
  });
  return { proc, port, base: `http://127.0.0.1:${port}` };
}

/** A new VAPID key pair for `push.vapid_private_key` (base64url: the 32-byte private scalar,
 * and the uncompressed public point that `GET /v1/push` should announce). */
export function vapidKeys() {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const { d, x, y } = privateKey.export({ format: "jwk" });
  const publicKey = Buffer.concat([Buffer.from([4]), Buffer.from(x, "base64url"), Buffer.from(y, "base64url")]).toString("base64url");
  return { privateKey: d, publicKey };
}

/** A token from a node's dev login. */
export async function login(base, user) {
  const response = await fetch(`${base}/v1/dev/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  if (!response.ok) throw new Error(`dev login: HTTP ${response.status}`);
  return (await response.json()).token;
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function eventually(check, timeoutMs = 15000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
