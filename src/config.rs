//! Layered settings: the compiled-in `config/default.toml`, then `config/default.toml` and
//! `config/<CHATD_ENV>.toml` from the config directory, then `CHATD__SECTION__KEY` variables.
//!
//! Every mistake stops start-up with one line that names the key: unknown keys, wrong types
//! (both reported by figment), and combinations that cannot work (checked in [`Settings::validate`]).
//!
//! Over 400 lines because every setting, its validation and the tests of the layering belong together; the keys themselves are documented in config/default.toml.

use std::path::{Path, PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::Deserialize;

use crate::auth::DEV_SECRET;

/// Environments that need no file of their own. Any other CHATD_ENV needs
/// `config/<CHATD_ENV>.toml`, so a typo ("Production", "prod") stops start-up instead of
/// silently running the development settings.
pub const KNOWN_ENVIRONMENTS: [&str; 2] = ["development", "production"];

/// The defaults, compiled in so the binary runs from any working directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The value of CHATD_ENV this was loaded for ("development" unless set).
    #[serde(skip)]
    pub environment: String,
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub store: StoreSettings,
    pub bus: BusSettings,
    pub limits: Limits,
    pub websocket: WebSocketSettings,
    pub presence: PresenceSettings,
    pub typing: TypingSettings,
    pub receipts: ReceiptSettings,
    pub push: PushSettings,
    pub admin: AdminSettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Empty: no admin API.
    pub token: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub node_id: String,
    pub advertise_address: String,
    pub shutdown_grace_ms: u64,
    pub handshake_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_http_lifetime_ms: u64,
    pub max_http_connections: usize,
    pub clock_offset_ms: i64,
    /// Browser origins allowed besides the node's own pages ("*": any); see
    /// `api::origins`.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub jwt_secret: String,
    pub leeway_secs: u64,
    pub dev_login: bool,
    pub dev_token_ttl_secs: u64,
    pub allow_insecure_dev_auth: bool,
    pub public_key_file: String,
    pub jwks_url: String,
    pub jwks_refresh_min_ms: u64,
    pub audience: String,
    pub issuer: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Mongodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Normal,
    Full,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub sqlite_path: PathBuf,
    pub sqlite_synchronous: SqliteSynchronous,
    pub mongodb_uri: String,
    pub mongodb_database: String,
    pub mongodb_count_commands: bool,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Local,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    pub kind: BusKind,
    pub redis_url: String,
    pub redis_prefix: String,
    pub recent_cache_size: usize,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_text_chars: usize,
    pub edit_window_ms: u64,
    pub max_frame_bytes: usize,
    pub max_body_bytes: usize,
    pub outbound_queue: usize,
    pub resume_max_per_room: usize,
    pub max_group_members: usize,
    pub max_connections_per_user: usize,
    pub max_connections: usize,
    pub frames_per_second: u32,
    pub frames_burst: u32,
    pub sends_per_second: u32,
    pub sends_burst: u32,
    pub reads_per_second: u32,
    pub reads_burst: u32,
    pub resume_rooms_per_second: u32,
    pub resume_rooms_burst: u32,
    pub max_rooms_per_user: usize,
    pub rate_limit_strikes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    pub read_buffer_bytes: usize,
    pub heartbeat_interval_ms: u64,
    pub idle_timeout_ms: u64,
    pub resume_wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSettings {
    pub ttl_ms: u64,
    pub refresh_ms: u64,
    pub leave_grace_ms: u64,
    pub away_after_ms: u64,
    pub roster_max_members: usize,
    pub max_contacts: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypingSettings {
    pub ttl_ms: u64,
    pub throttle_ms: u64,
    pub coalesce_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSettings {
    pub coalesce_ms: u64,
    pub live_max_members: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    pub vapid_private_key: String,
    pub vapid_subject: String,
    pub webpush_ttl_secs: u64,
    pub webpush_allowed_hosts: Vec<String>,
    pub webpush_allow_http: bool,
    pub gateway_url: String,
    pub gateway_secret: String,
    pub include_text: bool,
    pub max_text_chars: usize,
    pub max_devices_per_user: usize,
    pub collapse_ms: u64,
    pub notify_when_away: bool,
    pub lease_ms: u64,
    pub poll_ms: u64,
    pub sweep_after_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub give_up_after_ms: u64,
    pub request_timeout_ms: u64,
    pub concurrency: usize,
    pub queue: usize,
    pub ledger_ttl_ms: u64,
}

impl PushSettings {
    /// Whether any sender is configured (else nothing is queued).
    pub fn enabled(&self) -> bool {
        !self.vapid_private_key.is_empty() || !self.gateway_url.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// One line: the key (as written in the TOML files), the problem, and where the value came from.
fn describe(error: figment::Error) -> ConfigError {
    let key = error.path.join(".").to_lowercase();
    let origin = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => format!(" (in {source})"),
            None => format!(" (in {})", m.name),
        })
        .unwrap_or_default();
    let key = if key.is_empty() {
        "settings".into()
    } else {
        key
    };
    ConfigError(format!("{key}: {}{origin}", error.kind))
}

impl Settings {
    /// Loads the layers for `environment` from `config_dir`, then the process environment.
    pub fn load(config_dir: &Path, environment: &str) -> Result<Self, ConfigError> {
        let env_file = config_dir.join(format!("{environment}.toml"));
        if !KNOWN_ENVIRONMENTS.contains(&environment) && !env_file.is_file() {
            return Err(ConfigError(format!(
                "CHATD_ENV: unknown environment {environment:?}; use one of {KNOWN_ENVIRONMENTS:?} \
                 or add {}",
                env_file.display()
            )));
        }
        let figment = Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .merge(Toml::file(config_dir.join("default.toml")))
            .merge(Toml::file(config_dir.join(format!("{environment}.toml"))))
            .merge(Env::prefixed("CHATD__").split("__"));
        Self::extract(figment, environment)
    }

    /// The compiled-in defaults alone, ignoring files and environment: the base of every test.
    pub fn defaults() -> Self {
        Self::extract(Figment::new().merge(Toml::string(DEFAULT_TOML)), "test")
            .expect("compiled-in defaults are valid")
    }

    fn extract(figment: Figment, environment: &str) -> Result<Self, ConfigError> {
        let mut settings: Settings = figment.extract().map_err(describe)?;
        settings.environment = environment.to_owned();
        settings.validate()?;
        Ok(settings)
    }

    pub fn is_production(&self) -> bool {
        self.environment == "production"
    }

    /// Whether the node listens on a loopback address only (its own machine).
    pub fn listens_on_loopback(&self) -> bool {
        let host = self
            .server
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn validate_push(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, problem: &str| Err(ConfigError(format!("push.{key}: {problem}")));
        let push = &self.push;
        if !push.vapid_private_key.is_empty()
            && crate::push::webpush::VapidKey::parse(&push.vapid_private_key).is_err()
        {
            return fail(
                "vapid_private_key",
                "is not a base64url P-256 private key (`chatd vapid-keys` prints one)",
            );
        }
        if !push.gateway_url.is_empty() {
            if reqwest::Url::parse(&push.gateway_url)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                return fail("gateway_url", "must be an http(s) URL");
            }
            if push.gateway_secret.len() < 16 {
                return fail(
                    "gateway_secret",
                    "must be at least 16 bytes when gateway_url is set",
                );
            }
        }
        if !push.enabled() {
            // Nothing is queued or sent: the timing settings below do not apply.
            return Ok(());
        }
        if push.concurrency == 0 || push.queue == 0 || push.poll_ms == 0 {
            return fail(
                "concurrency",
                "concurrency, queue and poll_ms must be above 0",
            );
        }
        if push.retry_initial_ms == 0 || push.retry_max_ms < push.retry_initial_ms {
            return fail(
                "retry_max_ms",
                "retry_initial_ms must be above 0 and at most retry_max_ms",
            );
        }
        // A queued entry must outlive its retries, or its job finds nothing left to send.
        if push.ledger_ttl_ms <= push.give_up_after_ms.saturating_add(push.retry_max_ms) {
            return fail(
                "ledger_ttl_ms",
                "must be longer than give_up_after_ms + retry_max_ms",
            );
        }
        // A job outlives its slowest request and store calls, or two nodes would both send it.
        if push.lease_ms < 2 * push.request_timeout_ms + 2 * self.store.timeout_ms {
            return fail(
                "lease_ms",
                "must be at least 2 x request_timeout_ms + 2 x store.timeout_ms",
            );
        }
        Ok(())
    }

    /// Combinations that parse but cannot work, or that would be insecure.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, problem: &str| Err(ConfigError(format!("{key}: {problem}")));
        let admin = &self.admin.token;
        if !admin.is_empty() && admin.len() < 16 {
            return fail(
                "admin.token",
                "must be at least 16 characters (or empty: no admin API)",
            );
        }
        self.validate_push()?;
        let auth = &self.auth;
        if !auth.jwt_secret.is_empty() && auth.jwt_secret.len() < 16 {
            return fail(
                "auth.jwt_secret",
                "must be at least 16 bytes (or empty: no HS256)",
            );
        }
        if auth.jwt_secret.is_empty() && auth.public_key_file.is_empty() && auth.jwks_url.is_empty()
        {
            return fail(
                "auth.jwt_secret",
                "no way to verify tokens: set it, auth.public_key_file or auth.jwks_url",
            );
        }
        if auth.dev_login && auth.jwt_secret.is_empty() {
            return fail("auth.dev_login", "needs auth.jwt_secret to sign its tokens");
        }
        let dev_auth = auth.jwt_secret == DEV_SECRET || auth.dev_login;
        if self.is_production() {
            if auth.jwt_secret == DEV_SECRET {
                return fail(
                    "auth.jwt_secret",
                    "is the built-in development secret; set CHATD__AUTH__JWT_SECRET",
                );
            }
            if auth.dev_login {
                return fail("auth.dev_login", "must be false in production");
            }
        } else if dev_auth && !self.listens_on_loopback() && !auth.allow_insecure_dev_auth {
            // Anyone who can reach the node could mint tokens for any user.
            let key = if auth.jwt_secret == DEV_SECRET {
                "auth.jwt_secret"
            } else {
                "auth.dev_login"
            };
            return fail(
                key,
                "the development secret and the dev login are refused on a non-loopback \
                 server.host; set a real secret and auth.dev_login = false (or, for a \
                 throwaway demo only, auth.allow_insecure_dev_auth = true)",
            );
        }
        match self.store.kind {
            StoreKind::Mongodb if self.store.mongodb_uri.is_empty() => {
                return fail(
                    "store.mongodb_uri",
                    "required when store.kind = \"mongodb\"",
                );
            }
            StoreKind::Mongodb if self.bus.kind == BusKind::Local => {
                // A shared store with an in-process bus: nodes would never hear each other.
                return fail(
                    "bus.kind",
                    "\"local\" cannot serve a shared MongoDB store; use \"redis\"",
                );
            }
            StoreKind::Sqlite if self.store.sqlite_path.as_os_str().is_empty() => {
                return fail("store.sqlite_path", "must not be empty");
            }
            StoreKind::Sqlite if self.bus.kind == BusKind::Redis => {
                // Several nodes on one Redis but separate SQLite files would each assign their
                // own seq to the same room: there would be no single order.
                return fail(
                    "store.kind",
                    "\"sqlite\" is one node's private store; cluster mode (bus.kind = \"redis\") needs \"mongodb\"",
                );
            }
            _ => {}
        }
        if self.bus.kind == BusKind::Redis && self.bus.redis_url.is_empty() {
            return fail("bus.redis_url", "required when bus.kind = \"redis\"");
        }
        if self.bus.redis_prefix.is_empty() || self.bus.redis_prefix.contains(char::is_whitespace) {
            return fail("bus.redis_prefix", "must be non-empty, without spaces");
        }
        let positive = [
            ("limits.max_text_chars", self.limits.max_text_chars),
            ("limits.max_frame_bytes", self.limits.max_frame_bytes),
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            ("limits.outbound_queue", self.limits.outbound_queue),
            (
                "limits.resume_max_per_room",
                self.limits.resume_max_per_room,
            ),
            ("limits.max_group_members", self.limits.max_group_members),
            (
                "websocket.read_buffer_bytes",
                self.websocket.read_buffer_bytes,
            ),
            ("bus.recent_cache_size", self.bus.recent_cache_size),
            (
                "limits.max_connections_per_user",
                self.limits.max_connections_per_user,
            ),
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.frames_per_second",
                self.limits.frames_per_second as usize,
            ),
            ("limits.frames_burst", self.limits.frames_burst as usize),
            (
                "limits.sends_per_second",
                self.limits.sends_per_second as usize,
            ),
            ("limits.sends_burst", self.limits.sends_burst as usize),
            (
                "limits.reads_per_second",
                self.limits.reads_per_second as usize,
            ),
            ("limits.reads_burst", self.limits.reads_burst as usize),
            (
                "limits.resume_rooms_per_second",
                self.limits.resume_rooms_per_second as usize,
            ),
            ("limits.max_rooms_per_user", self.limits.max_rooms_per_user),
            (
                "server.request_timeout_ms",
                self.server.request_timeout_ms as usize,
            ),
            (
                "server.max_http_connections",
                self.server.max_http_connections,
            ),
            ("store.timeout_ms", self.store.timeout_ms as usize),
            ("bus.timeout_ms", self.bus.timeout_ms as usize),
            (
                "limits.rate_limit_strikes",
                self.limits.rate_limit_strikes as usize,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return fail(key, "must be greater than 0");
            }
        }
        if (self.limits.resume_rooms_burst as usize) < crate::protocol::MAX_RESUME_ROOMS {
            return fail(
                "limits.resume_rooms_burst",
                &format!(
                    "must be at least {} (the rooms one resume may name)",
                    crate::protocol::MAX_RESUME_ROOMS
                ),
            );
        }
        // A text of max_text_chars characters (up to 4 bytes each) must fit in a frame.
        if self.limits.max_frame_bytes < self.limits.max_text_chars + 512 {
            return fail(
                "limits.max_frame_bytes",
                "must leave room for a frame carrying limits.max_text_chars of text",
            );
        }
        if self.websocket.heartbeat_interval_ms == 0
            || self.websocket.idle_timeout_ms <= self.websocket.heartbeat_interval_ms
        {
            return fail(
                "websocket.idle_timeout_ms",
                "must be greater than websocket.heartbeat_interval_ms (> 0)",
            );
        }
        if self.presence.refresh_ms == 0 || self.presence.refresh_ms >= self.presence.ttl_ms {
            return fail(
                "presence.refresh_ms",
                "must be greater than 0 and less than presence.ttl_ms",
            );
        }
        if self.typing.ttl_ms == 0 || self.typing.coalesce_ms == 0 {
            return fail(
                "typing.ttl_ms",
                "typing.ttl_ms and typing.coalesce_ms must be > 0",
            );
        }
        if self.receipts.coalesce_ms == 0 {
            return fail("receipts.coalesce_ms", "must be greater than 0");
        }
        Ok(())
    }

    /// This node's name: the configured one or "<hostname>-<pid>".
    pub fn node_id(&self) -> String {
        if !self.server.node_id.is_empty() {
            return self.server.node_id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "node".into());
        format!("{host}-{}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` with exactly these CHATD__ variables set (figment's Jail serializes such tests).
    #[allow(clippy::result_large_err)] // figment's own closure signature
    fn with_env<R>(vars: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            result = Some(f());
            Ok(())
        });
        result.expect("jail ran")
    }

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let s = Settings::defaults();
        assert_eq!(s.store.kind, StoreKind::Sqlite);
        assert_eq!(s.bus.kind, BusKind::Local);
        assert_eq!(s.server.port, 8080);
    }

    #[test]
    fn environment_overrides_files() {
        let s = with_env(&[("CHATD__SERVER__PORT", "9001")], || {
            Settings::load(Path::new("/nonexistent"), "development").unwrap()
        });
        assert_eq!(s.server.port, 9001);
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = with_env(&[("CHATD__SERVER__PORT", "eighty")], || {
            Settings::load(Path::new("/nonexistent"), "development").unwrap_err()
        });
        assert!(err.0.contains("server.port"), "{err}");
        assert!(!err.0.contains('\n'), "one line: {err}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = with_env(&[("CHATD__SERVER__PROT", "1")], || {
            Settings::load(Path::new("/nonexistent"), "development").unwrap_err()
        });
        assert!(err.0.contains("prot"), "{err}");
    }

    #[test]
    fn production_refuses_the_dev_secret() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let err = with_env(&[], || Settings::load(&dir, "production").unwrap_err());
        assert!(err.0.contains("auth.jwt_secret"), "{err}");
        let ok = with_env(
            &[("CHATD__AUTH__JWT_SECRET", "a-real-secret-of-enough-length")],
            || Settings::load(&dir, "production"),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn push_settings_that_cannot_work_stop_start_up() {
        let load = |vars: &[(&str, &str)]| {
            with_env(vars, || {
                Settings::load(Path::new("/nonexistent"), "development")
            })
        };
        let gateway = ("CHATD__PUSH__GATEWAY_URL", "https://push.example/notify");
        for (vars, key) in [
            (
                vec![("CHATD__PUSH__VAPID_PRIVATE_KEY", "not-a-key")],
                "push.vapid_private_key",
            ),
            (vec![gateway], "push.gateway_secret"),
            (
                vec![
                    ("CHATD__PUSH__GATEWAY_URL", "ftp://x"),
                    ("CHATD__PUSH__GATEWAY_SECRET", "0123456789abcdef"),
                ],
                "push.gateway_url",
            ),
            (
                vec![
                    gateway,
                    ("CHATD__PUSH__GATEWAY_SECRET", "0123456789abcdef"),
                    ("CHATD__PUSH__LEASE_MS", "1000"),
                ],
                "push.lease_ms",
            ),
        ] {
            let err = load(&vars).unwrap_err();
            assert!(err.0.starts_with(key), "{vars:?}: {err}");
        }
        let (private, _) = crate::push::webpush::VapidKey::generate();
        let ok = load(&[("CHATD__PUSH__VAPID_PRIVATE_KEY", &private)]).unwrap();
        assert!(ok.push.enabled());
        assert!(
            !Settings::defaults().push.enabled(),
            "off unless a sender is configured"
        );
        // Off, its timings do not matter: long store deadlines start as before.
        let off = load(&[("CHATD__STORE__TIMEOUT_MS", "60000")]);
        assert!(off.is_ok(), "{off:?}");
    }

    #[test]
    fn unknown_environments_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for env in ["Production", "prod", "staging", ""] {
            let err = with_env(&[], || Settings::load(&dir, env).unwrap_err());
            assert!(err.0.starts_with("CHATD_ENV"), "{env}: {err}");
        }
    }

    #[test]
    fn development_credentials_are_refused_on_a_network_address() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let load = |vars: &[(&str, &str)]| with_env(vars, || Settings::load(&dir, "development"));
        // The dev secret and the dev login on 0.0.0.0: refused, whichever is left on.
        let err = load(&[("CHATD__SERVER__HOST", "0.0.0.0")]).unwrap_err();
        assert!(err.0.contains("auth.jwt_secret"), "{err}");
        let err = load(&[
            ("CHATD__SERVER__HOST", "10.1.2.3"),
            ("CHATD__AUTH__JWT_SECRET", "a-real-secret-of-enough-length"),
        ])
        .unwrap_err();
        assert!(err.0.contains("auth.dev_login"), "{err}");
        // A real secret and no dev login: fine anywhere.
        let ok = load(&[
            ("CHATD__SERVER__HOST", "0.0.0.0"),
            ("CHATD__AUTH__JWT_SECRET", "a-real-secret-of-enough-length"),
            ("CHATD__AUTH__DEV_LOGIN", "false"),
        ]);
        assert!(ok.is_ok(), "{ok:?}");
        // Loopback: the development defaults work as they are.
        for host in ["127.0.0.1", "::1", "localhost"] {
            assert!(load(&[("CHATD__SERVER__HOST", host)]).is_ok(), "{host}");
        }
        // The one explicit escape hatch, never in production.
        let demo = load(&[
            ("CHATD__SERVER__HOST", "0.0.0.0"),
            ("CHATD__AUTH__ALLOW_INSECURE_DEV_AUTH", "true"),
        ]);
        assert!(demo.is_ok(), "{demo:?}");
        let prod = with_env(&[("CHATD__AUTH__ALLOW_INSECURE_DEV_AUTH", "true")], || {
            Settings::load(&dir, "production").unwrap_err()
        });
        assert!(prod.0.contains("auth.jwt_secret"), "{prod}");
    }

    #[test]
    fn shared_store_needs_a_shared_bus() {
        let err = with_env(
            &[
                ("CHATD__STORE__KIND", "mongodb"),
                ("CHATD__STORE__MONGODB_URI", "mongodb://127.0.0.1:1"),
            ],
            || Settings::load(Path::new("/nonexistent"), "development").unwrap_err(),
        );
        assert!(err.0.contains("bus.kind"), "{err}");
    }
}
