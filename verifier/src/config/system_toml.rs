//! `/etc/stele/system.toml` inside the image: what PID 1 runs once the root is verified
//! (docs/BOOT.md). Parsed and validated by [`SystemConfig::parse`], the one function
//! `stele image build` and PID 1 both call.

use std::collections::BTreeMap;

use super::accounts::{account, Account, Accounts, Credentials, RunAs, ACCOUNT_NAME_RULE};
use super::report::ReportConfig;
use super::{is_under, parse_table, Action, ConfigError, Fields};

/// `restart` policy of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Restart {
    Never,
    #[default]
    OnFailure,
    Always,
}

impl Restart {
    /// The TOML names.
    pub const CHOICES: [(&'static str, Restart); 3] = [
        ("never", Restart::Never),
        ("on-failure", Restart::OnFailure),
        ("always", Restart::Always),
    ];
}

/// One `[[service]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub restart: Restart,
    pub restart_delay: u64,
    pub on_exit: Option<Action>,
    /// `user`, `group`, `supplementary_groups`, `no_new_privs`.
    pub run_as: RunAs,
}

/// `/etc/stele/system.toml` in the image. See docs/BOOT.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemConfig {
    pub exec: Option<Vec<String>>,
    pub healthy_after: u64,
    pub health: Option<Vec<String>>,
    pub shutdown_grace: u64,
    /// Seconds a slot on trial has to be marked good before PID 1 reboots (boot counting).
    pub trial_timeout: u64,
    pub services: Vec<Service>,
    /// `[report]`: where the device sends its reports (none: it sends none).
    pub report: Option<ReportConfig>,
}

/// Top-level keys.
pub const KEYS: &[&str] = &[
    "exec",
    "healthy_after",
    "health",
    "shutdown_grace",
    "trial_timeout",
    "service",
    "report",
];

/// Keys of a `[[service]]`.
pub const SERVICE_KEYS: &[&str] = &[
    "name",
    "exec",
    "env",
    "workdir",
    "restart",
    "restart_delay",
    "on_exit",
    "user",
    "group",
    "supplementary_groups",
    "no_new_privs",
];

impl SystemConfig {
    /// Parses and validates system.toml text; `origin` names the file in errors. Pure.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut f = Fields::new(origin, "", parse_table(text, origin)?);
        let exec = f.argv("exec")?;
        let healthy_after = f.secs("healthy_after")?.unwrap_or(5);
        let health = f.argv("health")?;
        let shutdown_grace = f.secs("shutdown_grace")?.unwrap_or(5);
        let trial_timeout = f.secs("trial_timeout")?.unwrap_or(300);
        let service_tables = match f.take("service") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items,
            Some(_) => return Err(f.error("service", "must be an array of tables ([[service]])")),
        };
        let report = match f.take("report") {
            None => None,
            Some(toml::Value::Table(t)) => {
                Some(ReportConfig::parse(Fields::new(origin, "report.", t))?)
            }
            Some(_) => return Err(f.error("report", "must be a table ([report])")),
        };
        f.finish(KEYS)?;
        match (&exec, service_tables.is_empty()) {
            (Some(_), false) => return Err(ConfigError::file(
                origin,
                "`exec` and [[service]] are exclusive: either hand PID 1 to the image's init or list services",
            )),
            (None, true) => {
                return Err(ConfigError::file(
                    origin,
                    "nothing to run: set `exec` or add at least one [[service]]",
                ))
            }
            _ => {}
        }
        if trial_timeout <= healthy_after {
            return Err(ConfigError::key(
                origin,
                "trial_timeout",
                format!(
                    "{trial_timeout} must be longer than healthy_after ({healthy_after}), or no trial could succeed"
                ),
            ));
        }
        let mut services: Vec<Service> = Vec::new();
        for (i, v) in service_tables.into_iter().enumerate() {
            let s = parse_service(origin, i, v)?;
            if services.iter().any(|o| o.name == s.name) {
                return Err(ConfigError::key(
                    origin,
                    format!("service {:?}", s.name),
                    "duplicate service name",
                ));
            }
            services.push(s);
        }
        Ok(SystemConfig {
            exec,
            healthy_after,
            health,
            shutdown_grace,
            trial_timeout,
            services,
            report,
        })
    }

    /// Every program PID 1 would run, with the key that names it: `exec`, `health`, and
    /// each service's `exec` (argv[0] of each). Pure.
    pub fn programs(&self) -> impl Iterator<Item = (String, &str)> {
        let top = [("exec", &self.exec), ("health", &self.health)]
            .into_iter()
            .filter_map(|(k, argv)| Some((k.to_string(), argv.as_ref()?.first()?.as_str())));
        let services = self.services.iter().filter_map(|s| {
            Some((
                format!("service {:?} exec", s.name),
                s.exec.first()?.as_str(),
            ))
        });
        top.chain(services)
    }

    /// What each service runs as (in the order of [`SystemConfig::services`]), its names
    /// resolved in the image's own users and groups; a name the image does not have is
    /// refused naming the service's key. Pure.
    pub fn credentials(
        &self,
        origin: &str,
        accounts: &Accounts,
    ) -> Result<Vec<Option<Credentials>>, ConfigError> {
        self.services
            .iter()
            .map(|s| {
                s.run_as.resolve(accounts).map_err(|(key, why)| {
                    ConfigError::key(origin, format!("service {:?} {key}", s.name), why)
                })
            })
            .collect()
    }

    /// Refuses programs that would run from the writable data partition mounted at
    /// `data_mount` (boot.toml): only the verified image may provide what PID 1 runs. Pure.
    pub fn check_programs(&self, origin: &str, data_mount: &str) -> Result<(), ConfigError> {
        match self.programs().find(|(_, p)| is_under(p, data_mount)) {
            Some((key, p)) => Err(ConfigError::key(
                origin,
                key,
                format!(
                    "{p} is on the writable data partition ({data_mount}); programs must come from the verified image"
                ),
            )),
            None => Ok(()),
        }
    }
}

/// The `i`th `[[service]]`.
fn parse_service(origin: &str, i: usize, v: toml::Value) -> Result<Service, ConfigError> {
    let unnamed = format!("service #{}", i + 1);
    let toml::Value::Table(mut t) = v else {
        return Err(ConfigError::key(
            origin,
            unnamed,
            "must be a table ([[service]])",
        ));
    };
    let name = match t.remove("name") {
        Some(toml::Value::String(s)) => s,
        Some(_) => return Err(ConfigError::key(origin, unnamed, "name must be a string")),
        None => return Err(ConfigError::key(origin, unnamed, "missing name")),
    };
    let key = format!("service {name:?}");
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(ConfigError::key(
            origin,
            key,
            "name must be 1..=64 characters of [A-Za-z0-9._-]",
        ));
    }
    let mut f = Fields::new(origin, format!("{key} "), t);
    let exec = f
        .argv("exec")?
        .ok_or_else(|| ConfigError::key(origin, key.clone(), "missing exec"))?;
    let env = match f.take("env") {
        None => BTreeMap::new(),
        Some(toml::Value::Table(t)) => {
            let mut env = BTreeMap::new();
            for (k, v) in t {
                let toml::Value::String(v) = v else {
                    return Err(f.error("env", format!("{k:?} must be a string")));
                };
                if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                    return Err(f.error("env", format!("bad environment variable {k:?}")));
                }
                env.insert(k, v);
            }
            env
        }
        Some(_) => return Err(f.error("env", "must be a table of strings")),
    };
    let workdir = f.string("workdir")?.unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        return Err(f.error("workdir", "must be an absolute path"));
    }
    let restart = f.choice("restart", &Restart::CHOICES)?.unwrap_or_default();
    let restart_delay = f.secs("restart_delay")?.unwrap_or(1);
    let on_exit = f.choice("on_exit", &Action::CHOICES)?;
    let run_as = parse_run_as(&mut f)?;
    f.finish(SERVICE_KEYS)?;
    Ok(Service {
        name,
        exec,
        env,
        workdir,
        restart,
        restart_delay,
        on_exit,
        run_as,
    })
}

/// `user`, `group` (a name or an id each), `supplementary_groups` (an array of them),
/// `no_new_privs` (a boolean).
fn parse_run_as(f: &mut Fields<'_>) -> Result<RunAs, ConfigError> {
    let one = |f: &mut Fields<'_>, key: &str| -> Result<Option<Account>, ConfigError> {
        match f.take(key) {
            None => Ok(None),
            Some(v) => account(&v)
                .map(Some)
                .ok_or_else(|| f.error(key, format!("must be {ACCOUNT_NAME_RULE}"))),
        }
    };
    let user = one(f, "user")?;
    let group = one(f, "group")?;
    let supplementary_groups = match f.take("supplementary_groups") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                account(v).ok_or_else(|| {
                    f.error(
                        "supplementary_groups",
                        format!("each must be {ACCOUNT_NAME_RULE}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(f.error(
                "supplementary_groups",
                "must be an array of group names or ids",
            ))
        }
    };
    let no_new_privs = f.boolean("no_new_privs")?.unwrap_or(false);
    Ok(RunAs {
        user,
        group,
        supplementary_groups,
        no_new_privs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM: &str = r#"
healthy_after = 2
health = ["/usr/bin/check"]
shutdown_grace = 3
[[service]]
name = "demo"
exec = ["/bin/demo", "--flag"]
env = { KEY = "value" }
workdir = "/srv"
restart = "always"
restart_delay = 2
on_exit = "poweroff"
[[service]]
name = "other"
exec = ["/bin/other"]
user = "app"
group = 1001
supplementary_groups = ["audio", 7]
no_new_privs = true
"#;

    #[test]
    fn services() {
        let s = SystemConfig::parse(SYSTEM, "system.toml").unwrap();
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.healthy_after, 2);
        assert_eq!(s.shutdown_grace, 3);
        assert_eq!(s.trial_timeout, 300);
        let d = &s.services[0];
        assert_eq!(d.restart, Restart::Always);
        assert_eq!(d.restart_delay, 2);
        assert_eq!(d.workdir, "/srv");
        assert_eq!(d.on_exit, Some(Action::Poweroff));
        assert_eq!(d.env.get("KEY").map(String::as_str), Some("value"));
        let o = &s.services[1];
        assert_eq!(o.restart, Restart::OnFailure);
        assert_eq!(o.restart_delay, 1);
        assert_eq!(o.workdir, "/");
        assert_eq!(o.on_exit, None);
        assert!(d.run_as.is_default());
        assert_eq!(o.run_as.user, Some(Account::Name("app".into())));
        assert_eq!(o.run_as.group, Some(Account::Id(1001)));
        assert!(o.run_as.no_new_privs);
        let accounts = Accounts::parse("app:x:1000:1000::/:/bin/sh\n", "audio:x:29:\n");
        let creds = s.credentials("system.toml", &accounts).unwrap();
        assert_eq!(creds[0], None);
        let c = creds[1].as_ref().unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (1000, 1001, vec![29, 7]));
        let e = s
            .credentials("system.toml", &Accounts::default())
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("service \"other\" user"));
        let progs: Vec<(String, &str)> = s.programs().collect();
        assert_eq!(
            progs,
            [
                ("health".to_string(), "/usr/bin/check"),
                ("service \"demo\" exec".to_string(), "/bin/demo"),
                ("service \"other\" exec".to_string(), "/bin/other"),
            ]
        );
    }

    #[test]
    fn exec_mode() {
        let s = SystemConfig::parse("exec = [\"/sbin/init\", \"arg\"]", "s").unwrap();
        assert_eq!(
            s.exec.as_deref(),
            Some(&["/sbin/init".to_string(), "arg".to_string()][..])
        );
        assert_eq!(s.healthy_after, 5);
        assert_eq!(s.shutdown_grace, 5);
        assert!(s.services.is_empty());
    }

    #[test]
    fn programs_cannot_come_from_writable_storage() {
        let cfg = SystemConfig::parse(
            "[[service]]\nname = \"x\"\nexec = [\"/var/lib/app/run\"]\n",
            "system.toml",
        )
        .unwrap();
        let e = cfg.check_programs("system.toml", "/var").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("service \"x\" exec"));
        assert!(e.why.contains("/var/lib/app/run"), "{e}");
        assert!(cfg.check_programs("system.toml", "/srv").is_ok());
        let cfg = SystemConfig::parse("exec = [\"/var/init\"]\n", "system.toml").unwrap();
        let e = cfg.check_programs("system.toml", "/var").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("exec"));
    }
}
