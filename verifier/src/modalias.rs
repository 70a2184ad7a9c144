//! Kernel module aliases (the `modules.alias` format: `alias <glob> <module>`), matched
//! against a device's `modalias` as modprobe does; and the storage subset `stele initramfs`
//! writes to the initramfs ([`STORAGE_ALIAS`], docs/FORMATS.md "Storage aliases") so that
//! PID 1 can name the `--module` a driverless disk controller needs. Pure.

/// The initramfs's storage aliases: the lines of the kernel's `modules.alias` whose module
/// is a storage driver ([`STORAGE_DIRS`]) and whose pattern is for a PCI or virtio device.
pub const STORAGE_ALIAS: &str = "/etc/stele/storage.alias";

/// The kernel source directories (in `modules.dep` paths) of the drivers that bind disk
/// controllers.
pub const STORAGE_DIRS: &[&str] = &[
    "kernel/drivers/ata/",
    "kernel/drivers/nvme/",
    "kernel/drivers/scsi/",
    "kernel/drivers/block/",
    "kernel/drivers/mmc/",
    "kernel/drivers/message/",
];

/// The buses whose aliases [`storage_subset`] keeps.
const BUSES: &[&str] = &["pci:", "virtio:"];

/// A parsed alias file: (pattern, module) in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aliases {
    entries: Vec<(String, String)>,
}

impl Aliases {
    /// Parses `alias <pattern> <module>` lines; anything else (comments, other words,
    /// malformed lines) is skipped. Never fails.
    pub fn parse(text: &str) -> Aliases {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next(), w.next()) {
                    (Some("alias"), Some(p), Some(m), None) => Some((p.to_string(), m.to_string())),
                    _ => None,
                }
            })
            .collect();
        Aliases { entries }
    }

    /// Appends another file's aliases.
    pub fn extend(&mut self, other: Aliases) {
        self.entries.extend(other.entries);
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The modules whose pattern matches `modalias`, each once, in file order.
    pub fn modules_for(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (p, m) in &self.entries {
            if !out.contains(&m.as_str()) && glob_match(p, modalias) {
                out.push(m);
            }
        }
        out
    }
}

/// The storage subset of a kernel's `modules.alias` (`alias`), given its `modules.dep`
/// (`dep`, for each module's path): the PCI and virtio aliases of modules under
/// [`STORAGE_DIRS`], as `alias` lines in the kernel's order. Pure.
pub fn storage_subset(dep: &str, alias: &str) -> String {
    let storage: std::collections::BTreeSet<String> = dep
        .lines()
        .filter_map(|l| l.split_once(':').map(|(path, _)| path.trim()))
        .filter(|path| STORAGE_DIRS.iter().any(|d| path.starts_with(d)))
        .map(|path| {
            let file = path.rsplit('/').next().unwrap_or(path);
            let name = file.split('.').next().unwrap_or(file);
            name.replace('-', "_")
        })
        .collect();
    let mut out = String::new();
    for (p, m) in Aliases::parse(alias).entries {
        if BUSES.iter().any(|b| p.starts_with(b)) && storage.contains(&m.replace('-', "_")) {
            out.push_str(&format!("alias {p} {m}\n"));
        }
    }
    out
}

/// Shell-style glob match as modprobe uses on aliases: `*`, `?` and `[...]` classes
/// (`!`/`^` negate, `a-z` ranges). Iterative, O(pattern × text) at worst, and allocation
/// free for ASCII (every modalias is): PID 1 matches a few thousand patterns against every
/// present device at boot. Pure.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        glob(pattern.as_bytes(), text.as_bytes())
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        glob(&p, &t)
    }
}

/// [`glob_match`] over units: bytes, or chars.
fn glob<T: Copy + Ord + Unit>(p: &[T], t: &[T]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it has been tried up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(&c) if c == T::STAR => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some(&c) if c == T::ANY => Some(pi + 1),
            Some(&c) if c == T::OPEN => class_at(p, pi, t[ti]),
            Some(&c) if c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == T::STAR)
}

/// The pattern syntax's units (`*`, `?`, `[`, `]`, `!`, `^`, `-`) as bytes and as chars.
trait Unit: Sized {
    const STAR: Self;
    const ANY: Self;
    const CLOSE: Self;
    const NOT: Self;
    const CARET: Self;
    const RANGE: Self;
    const OPEN: Self;
}

impl Unit for u8 {
    const STAR: u8 = b'*';
    const ANY: u8 = b'?';
    const CLOSE: u8 = b']';
    const NOT: u8 = b'!';
    const CARET: u8 = b'^';
    const RANGE: u8 = b'-';
    const OPEN: u8 = b'[';
}

impl Unit for char {
    const STAR: char = '*';
    const ANY: char = '?';
    const CLOSE: char = ']';
    const NOT: char = '!';
    const CARET: char = '^';
    const RANGE: char = '-';
    const OPEN: char = '[';
}

/// At `p[at] == '['`: the pattern index after the class when `c` is in it, else `None`.
/// A `[` with no closing `]` is a literal `[`.
fn class_at<T: Copy + Ord + Unit>(p: &[T], at: usize, c: T) -> Option<usize> {
    let Some(len) = p[at + 1..].iter().skip(1).position(|&x| x == T::CLOSE) else {
        return (c == T::OPEN).then_some(at + 1);
    };
    let close = at + 2 + len;
    let class = &p[at + 1..close];
    let (neg, class) = match class.first() {
        Some(&f) if f == T::NOT || f == T::CARET => (true, &class[1..]),
        _ => (false, class),
    };
    let mut hit = false;
    let mut k = 0;
    while k < class.len() {
        if k + 2 < class.len() && class[k + 1] == T::RANGE {
            hit |= class[k] <= c && c <= class[k + 2];
            k += 3;
        } else {
            hit |= class[k] == c;
            k += 1;
        }
    }
    (hit != neg).then_some(close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NVME: &str = "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02";

    #[test]
    fn globs_match_as_modprobe_does() {
        assert!(glob_match("pci:v*d*sv*sd*bc01sc08i02*", NVME));
        assert!(!glob_match("pci:v*d*sv*sd*bc01sc06i01*", NVME));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc") && !glob_match("a?c", "ac"));
        assert!(glob_match("[a-c]x", "bx") && !glob_match("[!a-c]x", "bx"));
        assert!(glob_match("[^a]x", "bx") && glob_match("[x", "[x"));
        assert!(glob_match("a*b*c", "aXbYbZc") && !glob_match("a*b*c", "aXbYbZ"));
        assert!(!glob_match("abc", "abcd") && glob_match("abc**", "abc"));
        // Outside ASCII a `?` or a class still stands for one character, not one byte.
        assert!(glob_match("x?y", "xéy") && glob_match("x[à-ê]y", "xéy"));
        // Many stars on a long text stay quick (the recursive form was exponential).
        let long = "a".repeat(200);
        assert!(!glob_match(&format!("{}b", "*a".repeat(30)), &long));
    }

    #[test]
    fn aliases_name_each_module_once_in_file_order() {
        let a = Aliases::parse(
            "# comment\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias pci:v00001B36d00000010sv*sd*bc*sc*i* nvme\nalias bad line here x\nalias pci:v00001B36d*sv*sd*bc*sc*i* other\nsoftdep x pre: y\n",
        );
        assert_eq!(a.len(), 3);
        assert_eq!(a.modules_for(NVME), ["nvme", "other"]);
        assert!(a.modules_for("virtio:d00000002v00001AF4").is_empty());
    }

    #[test]
    fn the_storage_subset_keeps_pci_and_virtio_aliases_of_disk_drivers() {
        let dep = "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\nkernel/drivers/scsi/virtio_scsi.ko.xz:\nkernel/drivers/net/e1000/e1000.ko:\nkernel/drivers/ata/ahci.ko.zst: kernel/drivers/ata/libahci.ko\n";
        let alias = "alias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias virtio:d00000008v* virtio_scsi\nalias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\nalias acpi*:PNP0C0A:* ahci\nalias pci:v*d*sv*sd*bc01sc06i01* ahci\nalias nvme-subsys nvme\n";
        assert_eq!(
            storage_subset(dep, alias),
            "alias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias virtio:d00000008v* virtio_scsi\nalias pci:v*d*sv*sd*bc01sc06i01* ahci\n"
        );
        assert_eq!(storage_subset("", alias), "");
    }
}
