//! Who a service runs as: system.toml's `user`, `group`, `supplementary_groups` and
//! `no_new_privs`, and their resolution against the image's own `/etc/passwd` and
//! `/etc/group` (read from the verified tree: by `stele image build` from the rootfs, by
//! PID 1 from the dm-verity layer, never through the writable overlay). Pure.

use std::collections::BTreeMap;

/// A user or group as system.toml names it: a name, or a numeric id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Account {
    Name(String),
    Id(u32),
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Account::Name(n) => write!(f, "{n:?}"),
            Account::Id(id) => write!(f, "{id}"),
        }
    }
}

/// The rule of an account name, as errors state it.
pub const ACCOUNT_NAME_RULE: &str =
    "a name of 1..=32 characters of A-Z a-z 0-9 . _ - (not starting with -, not all digits) or a numeric id below 4294967295";

/// Reads a TOML value as an [`Account`]; `None` when it is neither a valid name nor id.
pub fn account(v: &toml::Value) -> Option<Account> {
    match v {
        toml::Value::Integer(i) => u32::try_from(*i)
            .ok()
            .filter(|&id| id != u32::MAX)
            .map(Account::Id),
        toml::Value::String(s) if valid_account_name(s) => Some(Account::Name(s.clone())),
        _ => None,
    }
}

fn valid_account_name(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    (1..=32).contains(&s.len())
        && s.chars().all(ok)
        && !s.starts_with('-')
        && !s.chars().all(|c| c.is_ascii_digit())
}

/// The users and groups of an image: `/etc/passwd` (name → uid, primary gid) and
/// `/etc/group` (name → gid). Lines that are not `name:x:id:...` are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accounts {
    users: BTreeMap<String, (u32, u32)>,
    groups: BTreeMap<String, u32>,
}

impl Accounts {
    /// From the text of `/etc/passwd` and `/etc/group` (empty when the image has none).
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let fields = |l: &str| -> Option<Vec<String>> {
            let l = l.trim_end_matches('\r');
            (!l.is_empty() && !l.starts_with('#') && !l.starts_with('+'))
                .then(|| l.split(':').map(str::to_string).collect())
        };
        let id = |s: &str| s.parse::<u32>().ok().filter(|&i| i != u32::MAX);
        let mut a = Accounts::default();
        for f in passwd.lines().filter_map(fields).filter(|f| f.len() >= 4) {
            if let (Some(uid), Some(gid)) = (id(&f[2]), id(&f[3])) {
                a.users.entry(f[0].clone()).or_insert((uid, gid));
            }
        }
        for f in group.lines().filter_map(fields).filter(|f| f.len() >= 3) {
            if let Some(gid) = id(&f[2]) {
                a.groups.entry(f[0].clone()).or_insert(gid);
            }
        }
        a
    }
}

/// What a service's process is switched to before it runs: set when any of `user`,
/// `group`, `supplementary_groups` or `no_new_privs` is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Exactly these supplementary groups (none unless listed: the user's memberships in
    /// /etc/group are not added).
    pub groups: Vec<u32>,
    pub no_new_privs: bool,
}

/// A service's `user`, `group`, `supplementary_groups` and `no_new_privs` as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunAs {
    pub user: Option<Account>,
    pub group: Option<Account>,
    pub supplementary_groups: Vec<Account>,
    pub no_new_privs: bool,
}

impl RunAs {
    /// True when the service runs as root with nothing changed.
    pub fn is_default(&self) -> bool {
        *self == RunAs::default()
    }

    /// The ids to switch to, resolved in `accounts`; `None` when nothing is set. The error
    /// is (key, why): a name the image does not have, or a numeric user without an
    /// /etc/passwd entry and without `group`.
    pub fn resolve(
        &self,
        accounts: &Accounts,
    ) -> Result<Option<Credentials>, (&'static str, String)> {
        if self.is_default() {
            return Ok(None);
        }
        let group = |key: &'static str, g: &Account| match g {
            Account::Id(id) => Ok(*id),
            Account::Name(n) => accounts
                .groups
                .get(n)
                .copied()
                .ok_or_else(|| (key, format!("group {n:?} is not in the image's /etc/group"))),
        };
        let (uid, primary) = match &self.user {
            None => (0, Some(0)),
            Some(Account::Name(n)) => match accounts.users.get(n) {
                Some(&(uid, gid)) => (uid, Some(gid)),
                None => {
                    return Err((
                        "user",
                        format!("user {n:?} is not in the image's /etc/passwd"),
                    ))
                }
            },
            Some(Account::Id(id)) => (
                *id,
                accounts
                    .users
                    .values()
                    .find(|(uid, _)| uid == id)
                    .map(|&(_, gid)| gid),
            ),
        };
        let gid = match (&self.group, primary) {
            (Some(g), _) => group("group", g)?,
            (None, Some(gid)) => gid,
            (None, None) => {
                return Err((
                    "group",
                    format!("user {uid} has no /etc/passwd entry: give its group"),
                ))
            }
        };
        let groups = self
            .supplementary_groups
            .iter()
            .map(|g| group("supplementary_groups", g))
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(Some(Credentials {
            uid,
            gid,
            groups,
            no_new_privs: self.no_new_privs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001::/srv:/bin/false\nbroken line\nnobody:x:65534:65534:::\n";
    const GROUP: &str = "root:x:0:\naudio:x:29:app\napp:x:1001:\n";

    fn run_as(user: Option<Account>, group: Option<Account>, sup: Vec<Account>) -> RunAs {
        RunAs {
            user,
            group,
            supplementary_groups: sup,
            no_new_privs: true,
        }
    }

    #[test]
    fn names_resolve_in_the_images_files_and_ids_are_taken_as_they_are() {
        let a = Accounts::parse(PASSWD, GROUP);
        let name = |n: &str| Some(Account::Name(n.into()));
        let c = run_as(
            name("app"),
            None,
            vec![Account::Name("audio".into()), Account::Id(7)],
        )
        .resolve(&a)
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.uid, c.gid, c.groups, c.no_new_privs),
            (1000, 1001, vec![29, 7], true)
        );
        let c = run_as(Some(Account::Id(1000)), None, vec![])
            .resolve(&a)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.uid, c.gid),
            (1000, 1001),
            "the primary group of uid 1000"
        );
        let c = run_as(Some(Account::Id(4000)), name("audio"), vec![])
            .resolve(&a)
            .unwrap()
            .unwrap();
        assert_eq!((c.uid, c.gid), (4000, 29));
        assert_eq!(RunAs::default().resolve(&a).unwrap(), None);
        let e = run_as(name("ghost"), None, vec![]).resolve(&a).unwrap_err();
        assert_eq!(e.0, "user");
        assert!(
            e.1.contains("\"ghost\" is not in the image's /etc/passwd"),
            "{e:?}"
        );
        let e = run_as(Some(Account::Id(4000)), None, vec![])
            .resolve(&a)
            .unwrap_err();
        assert_eq!(e.0, "group");
        let e = run_as(None, None, vec![Account::Name("video".into())])
            .resolve(&a)
            .unwrap_err();
        assert_eq!(e.0, "supplementary_groups");
        assert!(e.1.contains("/etc/group"), "{e:?}");
    }

    #[test]
    fn account_values() {
        assert_eq!(account(&toml::Value::Integer(0)), Some(Account::Id(0)));
        assert_eq!(account(&toml::Value::Integer(-1)), None);
        assert_eq!(account(&toml::Value::Integer(4_294_967_295)), None);
        assert_eq!(
            account(&"www-data".into()),
            Some(Account::Name("www-data".into()))
        );
        for bad in ["", "-x", "1000", "a:b", "a b", &"x".repeat(33)] {
            assert_eq!(account(&bad.into()), None, "{bad:?}");
        }
        assert_eq!(account(&toml::Value::Boolean(true)), None);
    }
}
