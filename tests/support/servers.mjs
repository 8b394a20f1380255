// Real servers for the JavaScript tests (SDK and browser): chatd nodes from the debug build,
// redis-server, SecantusDB and nginx, each on a free port with its own temp dir, all killed
// when the test process exits.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, openSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const CHATD = process.env.CHATD_BIN ?? join(ROOT, "target/debug/chatd");
const LOGS = join(ROOT, "target/test-logs");
mkdirSync(LOGS, { recursive: true });

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

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

export async function waitForPort(port, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise((done) => {
      const socket = connect(port, "127.0.0.1");
      socket.on("connect", () => (socket.destroy(), done(true)));
      socket.on("error", () => done(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
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

  start() {
    const log = openSync(join(LOGS, `${this.name}.log`), "a");
    this.child = spawn(this.command, this.args, {
      env: { ...process.env, ...this.env },
      stdio: ["ignore", log, log],
    });
    children.add(this.child);
    this.exited = new Promise((done) => this.child.on("exit", done));
  }

  async kill(signal = "SIGKILL") {
    this.child.kill(signal);
    await this.exited;
    children.delete(this.child);
  }
}

/** A chatd node. `env` are CHATD__* settings; SQLite in a temp dir unless told otherwise. */
export async function startChatd(name, env = {}) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "chatd-js-"));
  const proc = new Proc(`js-chatd-${name}`, CHATD, [], {
    CHATD_CONFIG_DIR: join(ROOT, "config"),
    CHATD__SERVER__PORT: String(port),
    CHATD__SERVER__NODE_ID: name,
    CHATD__STORE__SQLITE_PATH: join(dir, "chatd.db"),
    ...env,
  });
  await waitForPort(port);
  return { proc, port, base: `http://127.0.0.1:${port}` };
}

export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "chatd-redis-"));
  const proc = new Proc(`js-redis-${port}`, "redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]);
  await waitForPort(port);
  return { proc, url: `redis://127.0.0.1:${port}` };
}

/** The MongoDB-wire server: MONGODB_URI if set, else a SecantusDB started here. */
export async function startMongo() {
  if (process.env.MONGODB_URI) return { uri: process.env.MONGODB_URI, proc: null };
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "chatd-mongo-"));
  const proc = new Proc(`js-mongo-${port}`, "secantusd-py", ["--port", String(port), "--storage-path", dir, "--log-level", "WARNING"]);
  await waitForPort(port);
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
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "chatd-nginx-"));
  const upstreams = ports.map((p) => `        server 127.0.0.1:${p} max_fails=1 fail_timeout=2s;`).join("\n");
  const conf = readFileSync(join(ROOT, "scripts/lib/nginx-local.conf.template"), "utf8")
    .replaceAll("{{PREFIX}}", dir)
    .replaceAll("{{LISTEN}}", String(port))
    .replaceAll("{{UPSTREAMS}}", upstreams);
  writeFileSync(join(dir, "nginx.conf"), conf);
  const proc = new Proc(`js-nginx-${port}`, "nginx", ["-p", dir, "-c", join(dir, "nginx.conf")]);
  await waitForPort(port);
  return { proc, port, base: `http://127.0.0.1:${port}` };
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
