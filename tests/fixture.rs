//! The one test fixture: a directory with builders for what the tests make with the
//! `stele` binary (keys, busybox root trees, slot images, initramfs, UKIs, GPT disks);
//! QEMU boots of them in [`boot`]; HTTP servers on loopback (nginx, a fault-injecting one)
//! in [`http`]; partitions and the boot state of a disk image in [`internals`], the one
//! place the tests reach into stele's libraries.
//!
//! Only the initramfs and boot builders need the set-up's STELE_KERNEL, STELE_MODULES and
//! STELE_INIT (set by `cargo xtask test`); everything else runs under a plain `cargo test`.
//! Every bootable root tree carries a valid `/etc/stele/system.toml` whose programs exist
//! and are executable in that tree (what `stele image build` checks).

mod boot;
mod collector;
mod http;
mod internals;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

pub use boot::Guest;
pub use collector::Collector;
pub use http::{Fault, FaultServer, Nginx, TRICKLE_BYTES};
pub use internals::{
    change_partition, change_state, envelope_sha256, gpt_image, grow_table, old_layout,
    old_layout_copies, partition, partition_bytes, rename_partitions, state, unmappable_slot, Slot,
    GPTMBR, UKI_STUB,
};

use crate::util::{need_tool, ok, stele, stele_env, stele_stdin, Out};

/// The salt of the reproducible images (`Fixture::build`, `--salt`).
pub const SALT: &str = "5d1f00112233445566778899aabbccddeeff00112233445566778899aabbccdd";

/// Directories of every root tree (mount points and the places tests write to).
const DIRS: [&str; 11] = [
    "bin",
    "sbin",
    "etc/stele",
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var",
    "srv",
    "root",
];
/// Busybox applets linked in /bin (the test services are busybox shell scripts).
const APPLETS: [&str; 24] = [
    "sh", "cat", "echo", "grep", "ls", "sleep", "kill", "mount", "sync", "seq", "wc", "poweroff",
    "reboot", "head", "tr", "cut", "test", "[", "dd", "rm", "touch", "ps", "md5sum", "cmp",
];
/// The system.toml of the CLI tests' tree: PID 1 goes to that tree's `/usr/bin/hello`.
const HELLO_SYSTEM: &str = "exec = [\"/usr/bin/hello\"]\n";

/// The states after `seed` of xorshift64 (13, 7, 17): the tests' one cheap, repeatable
/// pseudo-random sequence (`seed` must not be 0).
pub fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    std::iter::successors(Some(seed), |&x| {
        let x = x ^ (x << 13);
        let x = x ^ (x >> 7);
        Some(x ^ (x << 17))
    })
    .skip(1)
}

/// `len` pseudo-random letters from `seed` (xorshift): a file with data blocks of its own,
/// and a needle to find it by inside a slot.
pub fn ballast(len: usize, seed: u64) -> String {
    xorshift(seed | 1)
        .take(len)
        .map(|x| char::from(b'a' + u8::try_from(x % 26).expect("a letter")))
        .collect()
}

/// A path the set-up provides; panics naming `cargo xtask test` when it is missing.
pub fn env_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "{var} is not set: run the VM tests with `cargo xtask test` (it downloads the test \
             kernel, builds the static stele-init and sets STELE_KERNEL, STELE_MODULES and \
             STELE_INIT)"
        ),
    }
}

/// Runs `stele ARGS`, with SOURCE_DATE_EPOCH=`epoch` when given.
fn run_stele(args: &[String], epoch: Option<&str>) -> Out {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match epoch {
        Some(e) => stele_env(&args, &[("SOURCE_DATE_EPOCH", e)]),
        None => stele(&args),
    }
}

/// A directory holding one test's artifacts, and the builders that make them.
#[derive(Debug)]
pub struct Fixture {
    dir: PathBuf,
    /// Removes `dir` when the fixture is dropped (none for [`Fixture::shared`]).
    _temp: Option<tempfile::TempDir>,
}

impl Fixture {
    /// A fresh temporary directory, removed with the fixture.
    pub fn new() -> Fixture {
        let temp = tempfile::tempdir().expect("temporary directory");
        Fixture {
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
        }
    }

    /// A fixture for artifacts several tests share (built once and kept in a `static`,
    /// which is never dropped): `<target>/tmp/<prefix>-<pid>`. The directories of earlier
    /// runs, whose process is gone, are removed first.
    pub fn shared(prefix: &str) -> Fixture {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for e in fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&format!("{prefix}-")) else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("{prefix}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create the shared fixture directory");
        Fixture { dir, _temp: None }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `stele keygen` into `<name>.key` / `<name>.pem`; returns (private, public) paths.
    pub fn keygen(&self, name: &str) -> (String, String) {
        let (k, p) = (
            self.p(&format!("{name}.key")),
            self.p(&format!("{name}.pem")),
        );
        ok(stele(&["keygen", "--private", &k, "--public", &p]));
        (k, p)
    }

    /// A bootable root tree `name`: static /bin/busybox with its applets, the mount points,
    /// `system_toml` as /etc/stele/system.toml.
    pub fn rootfs(&self, name: &str, system_toml: &str) -> Rootfs<'_> {
        Rootfs {
            fx: self,
            name: name.to_owned(),
            busybox: true,
            system_toml: system_toml.to_owned(),
            files: Vec::new(),
            links: Vec::new(),
        }
    }

    /// The CLI tests' small tree, never booted: /etc/hostname, /usr/bin/hello (0755) which
    /// system.toml hands PID 1 to, and the symlink bin -> usr/bin; no busybox, so the
    /// script's #!/bin/sh is not in it (the build checks programs, not interpreters).
    /// `big` adds a 700 KB file of pseudo-random bytes, so the hash tree has two levels.
    pub fn tree(&self, name: &str, big: bool) -> Rootfs<'_> {
        let tree = Rootfs {
            busybox: false,
            ..self.rootfs(name, HELLO_SYSTEM)
        }
        .file("etc/hostname", "demo\n", 0o644)
        .file("usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755)
        .symlink("bin", "usr/bin");
        if !big {
            return tree;
        }
        let data: Vec<u8> = (0..700_000u32)
            .map(|i| u8::try_from((i.wrapping_mul(2_654_435_761) >> 13) & 0xff).unwrap_or(0))
            .collect();
        tree.file("usr/bin/big", data, 0o644)
    }

    /// `stele image build --rootfs ROOTFS --key KEY`: name demo, version 1.0.0, rollback
    /// index 1, random salt, erofs, no SOURCE_DATE_EPOCH, unless changed.
    pub fn image(&self, rootfs: &str, key: &str) -> Image<'_> {
        Image {
            fx: self,
            input: ["--rootfs".to_owned(), rootfs.to_owned()],
            key: key.to_owned(),
            name: "demo".to_owned(),
            version: "1.0.0".to_owned(),
            index: 1,
            salt: None,
            fs: None,
            epoch: None,
            extra: Vec::new(),
            compressed: false,
        }
    }

    /// [`Fixture::image`] of an existing filesystem image (`--fs-image`).
    pub fn fs_image(&self, fs_image: &str, key: &str) -> Image<'_> {
        Image {
            input: ["--fs-image".to_owned(), fs_image.to_owned()],
            ..self.image("", key)
        }
    }

    /// [`Fixture::image`] of a tar archive (`--rootfs-tar`; `-` is stdin).
    pub fn tar_image(&self, tar: &str, key: &str) -> Image<'_> {
        Image {
            input: ["--rootfs-tar".to_owned(), tar.to_owned()],
            ..self.image("", key)
        }
    }

    /// The CLI tests' image `out`: a fresh big [`Fixture::tree`], signed with `key`,
    /// version 1.0.0, rollback index 7, [`SALT`].
    pub fn build(&self, out: &str, key: &str) -> String {
        let root = self.tree(&format!("{out}.root"), true).build();
        self.image(&root, key).index(7).salt(SALT).build(out)
    }

    /// `stele initramfs` trusting the public `keys`, with the set-up's modules and static
    /// stele-init unless changed.
    pub fn initramfs(&self, keys: &[&str]) -> Initramfs<'_> {
        Initramfs {
            fx: self,
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            config: None,
            modules_dir: None,
            init: None,
            out: "initrd.cpio".to_owned(),
            extra: Vec::new(),
        }
    }

    /// `stele disk create --a A` into `disk.img`: 64 MiB slots, no slot b, a 32 MiB data
    /// partition, unless changed.
    pub fn disk(&self, a: &str) -> Disk<'_> {
        Disk {
            fx: self,
            out: "disk.img".to_owned(),
            a: a.to_owned(),
            b: None,
            slot_size: "64M".to_owned(),
            data_size: Some("32M".to_owned()),
            extra: Vec::new(),
            epoch: None,
        }
    }

    /// `stele uki build --kernel KERNEL --initrd INITRD`, no SOURCE_DATE_EPOCH, unless
    /// changed.
    pub fn uki(&self, kernel: &str, initrd: &str) -> Uki<'_> {
        Uki {
            fx: self,
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            cmdline: None,
            extra: Vec::new(),
            epoch: None,
        }
    }
}

/// A root tree under construction ([`Fixture::rootfs`], [`Fixture::tree`]).
#[derive(Debug)]
pub struct Rootfs<'a> {
    fx: &'a Fixture,
    name: String,
    busybox: bool,
    system_toml: String,
    files: Vec<(String, Vec<u8>, u32)>,
    /// (link, target)
    links: Vec<(String, String)>,
}

impl Rootfs<'_> {
    /// Adds the file `path` (relative to the root) with `content` and permission `mode`.
    pub fn file(mut self, path: &str, content: impl AsRef<[u8]>, mode: u32) -> Self {
        self.files
            .push((path.to_owned(), content.as_ref().to_vec(), mode));
        self
    }

    /// Adds the symlink `link` (relative to the root) pointing to `target`, as given.
    pub fn symlink(mut self, link: &str, target: &str) -> Self {
        self.links.push((link.to_owned(), target.to_owned()));
        self
    }

    /// Writes the tree (busybox and its applets first, then system.toml, the files and
    /// the symlinks); returns its path.
    pub fn build(self) -> String {
        let root = self.fx.path(&self.name);
        fs::create_dir_all(root.join("etc/stele")).expect("create a rootfs directory");
        if self.busybox {
            for d in DIRS {
                fs::create_dir_all(root.join(d)).expect("create a rootfs directory");
            }
            let busybox = root.join("bin/busybox");
            if let Err(e) = fs::copy("/bin/busybox", &busybox) {
                panic!("copying /bin/busybox: {e} (busybox-static: run `cargo xtask setup`)");
            }
            fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755))
                .expect("chmod busybox");
            for applet in APPLETS {
                symlink("busybox", root.join("bin").join(applet)).expect("link an applet");
            }
        }
        fs::write(root.join("etc/stele/system.toml"), &self.system_toml)
            .expect("write system.toml");
        for (path, content, mode) in &self.files {
            let p = root.join(path);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).expect("create a rootfs directory");
            }
            fs::write(&p, content).expect("write a rootfs file");
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        for (link, target) in &self.links {
            symlink(target, root.join(link)).expect("symlink");
        }
        root.display().to_string()
    }
}

/// A `stele image build` under construction ([`Fixture::image`]).
#[derive(Debug, Clone)]
pub struct Image<'a> {
    fx: &'a Fixture,
    input: [String; 2],
    key: String,
    name: String,
    version: String,
    index: u64,
    salt: Option<String>,
    fs: Option<String>,
    epoch: Option<String>,
    extra: Vec<String>,
    /// Without it, `--no-compressed` is passed.
    compressed: bool,
}

impl Image<'_> {
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }

    /// `--rollback-index`.
    pub fn index(mut self, index: u64) -> Self {
        self.index = index;
        self
    }

    pub fn salt(mut self, salt: &str) -> Self {
        self.salt = Some(salt.to_owned());
        self
    }

    /// `--fs` (erofs when not given).
    pub fn fs(mut self, fs: &str) -> Self {
        self.fs = Some(fs.to_owned());
        self
    }

    /// Runs the build with SOURCE_DATE_EPOCH=`epoch`.
    pub fn epoch(mut self, epoch: &str) -> Self {
        self.epoch = Some(epoch.to_owned());
        self
    }

    /// Also writes the compressed form OUT.zst (the CLI's default; the fixture passes
    /// `--no-compressed` unless asked, so that only the tests of it pay for it).
    pub fn compressed(mut self) -> Self {
        self.compressed = true;
        self
    }

    /// Further arguments, as given.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The `stele` arguments of the build into `out` (a name in the fixture, or an
    /// absolute path), for a caller that runs them itself (as another user, to signal it).
    pub fn argv(&self, out: &str) -> Vec<String> {
        let mut args: Vec<String> = ["image", "build", &self.input[0], &self.input[1]]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let index = self.index.to_string();
        for (flag, value) in [
            ("--key", Some(&self.key)),
            ("--name", Some(&self.name)),
            ("--version", Some(&self.version)),
            ("--rollback-index", Some(&index)),
            ("--out", Some(&self.fx.p(out))),
            ("--salt", self.salt.as_ref()),
            ("--fs", self.fs.as_ref()),
        ] {
            if let Some(v) = value {
                args.extend([flag.to_owned(), v.clone()]);
            }
        }
        if !self.compressed {
            args.push("--no-compressed".to_owned());
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Fails naming the setup command when the filesystem's tool is missing.
    fn need_fs_tool(&self) {
        if self.input[0] == "--fs-image" {
            return;
        }
        match self.fs.as_deref().unwrap_or("erofs") {
            "erofs" => need_tool("mkfs.erofs"),
            "squashfs" => need_tool("mksquashfs"),
            "ext4" => need_tool("mkfs.ext4"),
            _ => {} // a type stele refuses: nothing to run
        }
    }

    /// Runs the build into `out` and returns the result.
    pub fn run(&self, out: &str) -> Out {
        self.need_fs_tool();
        run_stele(&self.argv(out), self.epoch.as_deref())
    }

    /// Runs the build into `out` with `input` on stdin (`tar_image("-", ..)`), without
    /// SOURCE_DATE_EPOCH.
    pub fn run_stdin(&self, out: &str, input: &[u8]) -> Out {
        self.need_fs_tool();
        let argv = self.argv(out);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        stele_stdin(&args, input)
    }

    /// Builds `out`, asserting success; returns its path.
    pub fn build(&self, out: &str) -> String {
        ok(self.run(out));
        self.fx.p(out)
    }
}

/// A `stele initramfs` under construction ([`Fixture::initramfs`]).
#[derive(Debug)]
pub struct Initramfs<'a> {
    fx: &'a Fixture,
    keys: Vec<String>,
    config: Option<String>,
    modules_dir: Option<String>,
    init: Option<String>,
    out: String,
    extra: Vec<String>,
}

impl Initramfs<'_> {
    /// `boot.toml` text, written to `boot.toml` and given as `--config`.
    pub fn config(mut self, boot_toml: &str) -> Self {
        self.config = Some(boot_toml.to_owned());
        self
    }

    /// `--modules-dir` instead of STELE_MODULES.
    pub fn modules_dir(mut self, dir: &str) -> Self {
        self.modules_dir = Some(dir.to_owned());
        self
    }

    /// `--init` instead of STELE_INIT.
    pub fn init(mut self, init: &str) -> Self {
        self.init = Some(init.to_owned());
        self
    }

    /// The output's name in the fixture (`initrd.cpio` when not given).
    pub fn out(mut self, name: &str) -> Self {
        self.out = name.to_owned();
        self
    }

    /// Further arguments, as given.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Runs `stele initramfs` and returns the result.
    pub fn run(&self) -> Out {
        let path = |given: &Option<String>, var| {
            given
                .clone()
                .unwrap_or_else(|| env_path(var).display().to_string())
        };
        let modules = path(&self.modules_dir, "STELE_MODULES");
        let init = path(&self.init, "STELE_INIT");
        let out = self.fx.p(&self.out);
        let mut args = vec!["initramfs", "--modules-dir", &modules, "--init", &init];
        args.extend(["--out", &out]);
        for k in &self.keys {
            args.extend(["--key", k]);
        }
        let cfg = self.fx.p("boot.toml");
        if let Some(text) = &self.config {
            fs::write(&cfg, text).expect("write boot.toml");
            args.extend(["--config", &cfg]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        stele(&args)
    }

    /// Builds the initramfs, asserting success; returns its path.
    pub fn build(&self) -> String {
        ok(self.run());
        self.fx.p(&self.out)
    }
}

/// A `stele disk create` under construction ([`Fixture::disk`]).
#[derive(Debug)]
pub struct Disk<'a> {
    fx: &'a Fixture,
    out: String,
    a: String,
    b: Option<String>,
    slot_size: String,
    data_size: Option<String>,
    extra: Vec<String>,
    epoch: Option<String>,
}

impl Disk<'_> {
    /// The disk image's name in the fixture.
    pub fn out(mut self, name: &str) -> Self {
        self.out = name.to_owned();
        self
    }

    /// Slot image for slot b.
    pub fn b(mut self, b: &str) -> Self {
        self.b = Some(b.to_owned());
        self
    }

    pub fn slot_size(mut self, size: &str) -> Self {
        self.slot_size = size.to_owned();
        self
    }

    pub fn data_size(mut self, size: &str) -> Self {
        self.data_size = Some(size.to_owned());
        self
    }

    /// No data partition.
    pub fn no_data(mut self) -> Self {
        self.data_size = None;
        self
    }

    /// Further arguments, as given (`--uki`, `--bios`, `--bmap`, ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Runs `stele disk create` with SOURCE_DATE_EPOCH=`epoch`.
    pub fn epoch(mut self, epoch: &str) -> Self {
        self.epoch = Some(epoch.to_owned());
        self
    }

    /// Runs `stele disk create` and returns the result.
    pub fn run(&self) -> Out {
        let mut args: Vec<String> = ["disk", "create", "--out", &self.fx.p(&self.out)]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(["--slot-size".to_owned(), self.slot_size.clone()]);
        args.extend(["--a".to_owned(), self.a.clone()]);
        if let Some(b) = &self.b {
            args.extend(["--b".to_owned(), b.clone()]);
        }
        if let Some(size) = &self.data_size {
            args.extend(["--data-size".to_owned(), size.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        run_stele(&args, self.epoch.as_deref())
    }

    /// Creates the disk, asserting success; returns its path.
    pub fn build(&self) -> String {
        ok(self.run());
        self.fx.p(&self.out)
    }
}

/// A `stele uki build` under construction ([`Fixture::uki`]).
#[derive(Debug)]
pub struct Uki<'a> {
    fx: &'a Fixture,
    kernel: String,
    initrd: String,
    cmdline: Option<String>,
    extra: Vec<String>,
    epoch: Option<String>,
}

impl Uki<'_> {
    /// `--cmdline`, the stage-1 command line embedded in the UKI.
    pub fn cmdline(mut self, cmdline: &str) -> Self {
        self.cmdline = Some(cmdline.to_owned());
        self
    }

    /// `--sign-key KEY --sign-cert CERT` (Secure Boot).
    pub fn signed(self, key: &Path, cert: &Path) -> Self {
        let (key, cert) = (key.display().to_string(), cert.display().to_string());
        self.args(&["--sign-key", &key, "--sign-cert", &cert])
    }

    /// Further arguments, as given.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Runs the build with SOURCE_DATE_EPOCH=`epoch`.
    pub fn epoch(mut self, epoch: &str) -> Self {
        self.epoch = Some(epoch.to_owned());
        self
    }

    /// Runs `stele uki build` into `out` and returns the result.
    pub fn run(&self, out: &str) -> Out {
        let mut args: Vec<String> = ["uki", "build", "--kernel", &self.kernel]
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(["--initrd".to_owned(), self.initrd.clone()]);
        if let Some(c) = &self.cmdline {
            args.extend(["--cmdline".to_owned(), c.clone()]);
        }
        args.extend(["--out".to_owned(), self.fx.p(out)]);
        args.extend(self.extra.iter().cloned());
        run_stele(&args, self.epoch.as_deref())
    }

    /// Builds the UKI `out`, asserting success; returns its path.
    pub fn build(&self, out: &str) -> String {
        ok(self.run(out));
        self.fx.p(out)
    }
}
