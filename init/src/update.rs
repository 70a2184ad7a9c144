//! `stele update` on the device: install a signed slot image into the slot that is not
//! running, show both slots and the boot state, mark the booted slot good.
//!
//! On the device `stele` is this binary (multi-call: `/run/stele/bin/stele`, copied there by
//! the boot); the host `stele` CLI calls the same functions (`--disk` works on a disk image).
//! The write order that keeps a power cut harmless is `stele_verifier::update`'s; this
//! module adds the policy (which slot, what floor, which keys), the device files and the
//! output lines. Pure parts (arguments, /run/stele files, slot choice, status text and JSON)
//! are unit-tested; the rest only opens files and calls the verifier.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stele_verifier::footer::FOOTER_SIZE;
use stele_verifier::keys::Keyring;
use stele_verifier::manifest::Manifest;
use stele_verifier::slot::{self, VerifyOptions};
use stele_verifier::state::{self, BootState, Slot, SlotState};
use stele_verifier::update::{self as vupdate, SyncFn};

use crate::config::BootConfig;
use crate::sys;

/// Where the boot publishes what `stele update` reads.
pub const RUN_DIR: &str = crate::boot::RUN_STELE;
/// Where the boot copies its own executable, first in the services' PATH.
pub const BIN_DIR: &str = "/run/stele/bin";
/// The multi-call name.
pub const PROGRAM: &str = "stele";

/// One-line usage, appended to usage errors.
pub const USAGE_LINE: &str =
    "usage: stele update install BUNDLE|- | stele update status [--json] | stele update mark-good";

/// `stele update --help`.
pub const HELP: &str = "\
stele update: A/B updates on the device (this `stele` is stele-init, multi-call)

usage:
  stele update install BUNDLE|-   verify a signed slot image and write it to the slot that is
                                  not running, then boot it next (3 tries, not yet good);
                                  BUNDLE is a file or block device, `-` reads stdin
  stele update status [--json]    both slots (image, priority, tries, good), the booted slot
                                  and the rollback floor
  stele update mark-good          mark the booted slot good (raises the rollback floor)

exit codes: 0 ok, 1 refused, 2 usage, 3 environment
";

/// Exit classes, the same as the `stele` CLI's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Refused = 1,
    Usage = 2,
    Environment = 3,
}

/// A failed update command: the exit class and one line naming the cause.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

/// Result of an update command.
pub type Outcome<T = ()> = std::result::Result<T, Failure>;

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
    fn usage(message: impl Into<String>) -> Self {
        Failure::new(Exit::Usage, message)
    }
    fn env(message: impl Into<String>) -> Self {
        Failure::new(Exit::Environment, message)
    }
    fn refused(message: impl Into<String>) -> Self {
        Failure::new(Exit::Refused, message)
    }
    /// Prefixes the message with `context: `.
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<stele_verifier::Error> for Failure {
    fn from(e: stele_verifier::Error) -> Self {
        use stele_verifier::Error as V;
        let exit = match e {
            V::Io { .. } | V::Key { .. } => Exit::Environment,
            _ => Exit::Refused,
        };
        let message = match e {
            V::BadMagic { what: "footer", .. } => {
                format!("{e}: the image is truncated, or it is not a stele slot image")
            }
            _ => e.to_string(),
        };
        Failure::new(exit, message)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Verify(v) => v.into(),
            other => Failure::env(other.to_string()),
        }
    }
}

fn io_failure(op: &str, path: &str, e: &io::Error) -> Failure {
    Failure::env(format!("{op} {path} failed: {e}"))
}

// ---------------------------------------------------------------------------------------
// The multi-call front-end (hand-parsed: the init stays lean).

/// Where an install reads the bundle from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleArg {
    /// `-`: standard input, read front to back.
    Stdin,
    /// A file, a block device, or a pipe.
    Path(PathBuf),
}

/// An update command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Install(BundleArg),
    Status { json: bool },
    MarkGood,
    Help,
}

/// True when this process is `stele` (the update front-end), not PID 1: argv[0]'s base
/// name is `stele`, or argv[1] is `update`. PID 1 is always the init. Pure.
pub fn is_update_call(pid: u32, argv: &[OsString]) -> bool {
    if pid == 1 {
        return false;
    }
    let named = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == PROGRAM);
    named || argv.get(1).is_some_and(|a| a == "update")
}

fn utf8(a: &OsString) -> Outcome<&str> {
    a.to_str()
        .ok_or_else(|| Failure::usage(format!("argument {a:?} is not UTF-8; {USAGE_LINE}")))
}

/// Parses the arguments after argv[0]: `update install BUNDLE|-`, `update status [--json]`,
/// `update mark-good`, `--help`. Pure.
pub fn parse_args(args: &[OsString]) -> Outcome<Command> {
    let usage = |why: String| Failure::usage(format!("{why}; {USAGE_LINE}"));
    let Some(first) = args.first() else {
        return Err(usage("missing command".into()));
    };
    match utf8(first)? {
        "update" => {}
        "-h" | "--help" | "help" => return Ok(Command::Help),
        other => {
            return Err(usage(format!(
                "unknown command {other:?}: on the device only `stele update` is available"
            )))
        }
    }
    let rest = &args[1..];
    let Some(sub) = rest.first() else {
        return Err(usage("missing update command".into()));
    };
    let opts = &rest[1..];
    if opts.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let no_disk = |a: &OsString| {
        if a == "--disk" || a.to_string_lossy().starts_with("--disk=") {
            Err(usage(
                "--disk, --key and --keys are options of the host `stele` CLI; on the device the slots and keys come from /run/stele".into(),
            ))
        } else {
            Ok(())
        }
    };
    for a in opts {
        no_disk(a)?;
    }
    match utf8(sub)? {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "install" => match opts {
            [b] if b == "-" => Ok(Command::Install(BundleArg::Stdin)),
            [b] if b.to_string_lossy().starts_with('-') => {
                Err(usage(format!("unknown option {}", b.to_string_lossy())))
            }
            [b] => Ok(Command::Install(BundleArg::Path(PathBuf::from(b)))),
            [] => Err(usage(
                "install needs a BUNDLE (a file, a block device, or - for stdin)".into(),
            )),
            _ => Err(usage("install takes one BUNDLE".into())),
        },
        "status" => match opts {
            [] => Ok(Command::Status { json: false }),
            [j] if j == "--json" => Ok(Command::Status { json: true }),
            [a, ..] => Err(usage(format!(
                "unexpected argument {} for status",
                a.to_string_lossy()
            ))),
        },
        "mark-good" => match opts {
            [] => Ok(Command::MarkGood),
            [a, ..] => Err(usage(format!(
                "unexpected argument {} for mark-good",
                a.to_string_lossy()
            ))),
        },
        other => Err(usage(format!("unknown update command {other:?}"))),
    }
}

/// The multi-call entry: parses `argv`, runs the command against /run/stele, prints
/// `stele: error: <cause>` on failure and returns the exit code.
pub fn main(argv: &[OsString]) -> i32 {
    let r = parse_args(argv.get(1..).unwrap_or(&[])).and_then(|cmd| match cmd {
        Command::Help => {
            print!("{HELP}");
            Ok(())
        }
        cmd => run(&cmd, Path::new(RUN_DIR)),
    });
    match r {
        Ok(()) => Exit::Success as i32,
        Err(f) => {
            eprintln!("stele: error: {}", error_line(&f.message));
            f.exit as i32
        }
    }
}

/// Progress lines on stderr.
fn progress(line: &str) {
    eprintln!("stele: {line}");
}

/// Runs a device command against the files the boot published in `run_dir`, printing its
/// output (the host CLI calls this too when it runs on the device).
pub fn run(cmd: &Command, run_dir: &Path) -> Outcome {
    match cmd {
        Command::Help => {
            print!("{HELP}");
            Ok(())
        }
        Command::Install(b) => {
            let done = install_device(run_dir, b, &mut progress)?;
            println!("{}", installed_line(&done));
            Ok(())
        }
        Command::Status { json } => {
            let st = status_device(run_dir)?;
            print!("{}", if *json { st.json() } else { st.text() });
            Ok(())
        }
        Command::MarkGood => {
            let s = mark_good_device(run_dir)?;
            println!("stele: slot={} marked good", s.name());
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// /run/stele

/// `/run/stele/devices`: the partitions the boot found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePaths {
    pub state: String,
    pub a: Option<String>,
    pub b: Option<String>,
    pub data: Option<String>,
}

impl DevicePaths {
    /// Parses `state=/dev/vda1`, `a=`, `b=`, `data=` lines (empty value: absent; other
    /// keys are ignored). `state` is required. Pure.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut d = DevicePaths {
            state: String::new(),
            a: None,
            b: None,
            data: None,
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {line:?} is not key=value"))?;
            let v = v.trim();
            let val = (!v.is_empty()).then(|| v.to_string());
            match k.trim() {
                "state" => d.state = v.to_string(),
                "a" => d.a = val,
                "b" => d.b = val,
                "data" => d.data = val,
                _ => {}
            }
        }
        if d.state.is_empty() {
            return Err("no state= line".into());
        }
        Ok(d)
    }

    /// The partition of slot `s`, if present.
    pub fn slot(&self, s: Slot) -> Option<&str> {
        match s {
            Slot::A => self.a.as_deref(),
            Slot::B => self.b.as_deref(),
        }
    }
}

/// Parses `/run/stele/slot` (`a` or `b`, one line). Pure.
pub fn parse_slot(text: &str) -> std::result::Result<Slot, String> {
    match text.trim() {
        "a" => Ok(Slot::A),
        "b" => Ok(Slot::B),
        other => Err(format!("{other:?} is not a or b")),
    }
}

/// What the boot published: the booted slot, the partitions, the trusted keys.
#[derive(Debug)]
pub struct Device {
    pub dir: PathBuf,
    pub booted: Slot,
    pub devices: DevicePaths,
    pub keyring: Keyring,
}

fn not_published(path: &Path, e: &io::Error) -> Failure {
    Failure::env(format!(
        "read {} failed: {e} (it is written by stele-init at boot: is this a stele device? on a build host use --disk)",
        path.display()
    ))
}

impl Device {
    /// Reads `slot`, `devices`, `boot.toml` (threshold) and `keys/*.pem` from `dir`.
    pub fn load(dir: &Path) -> Outcome<Device> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| not_published(&p, &e))
        };
        let bad =
            |name: &str, why: String| Failure::env(format!("{}: {why}", dir.join(name).display()));
        let booted = parse_slot(&read("slot")?).map_err(|w| bad("slot", w))?;
        let devices = DevicePaths::parse(&read("devices")?).map_err(|w| bad("devices", w))?;
        let boot_path = dir.join("boot.toml");
        let cfg = BootConfig::parse(&read("boot.toml")?, &boot_path.display().to_string())
            .map_err(|e| Failure::env(e.to_string()))?;
        let keys = dir.join("keys");
        let keyring = crate::boot::load_keyring_from(&keys.display().to_string(), cfg.threshold)
            .map_err(Failure::env)?;
        Ok(Device {
            dir: dir.to_path_buf(),
            booted,
            devices,
            keyring,
        })
    }

    fn slot_path(&self, s: Slot) -> Outcome<&str> {
        self.devices.slot(s).ok_or_else(|| {
            Failure::env(format!(
                "slot {} has no partition on this device ({} has no {}= path)",
                s.name(),
                self.dir.join("devices").display(),
                s.name()
            ))
        })
    }
}

/// Size of an open file: BLKGETSIZE64 for a block device, the length of a regular file.
pub fn file_len(f: &File, path: &str) -> Outcome<u64> {
    let md = f.metadata().map_err(|e| io_failure("stat", path, &e))?;
    if md.file_type().is_block_device() {
        Ok(sys::block_size(f, path)?)
    } else if md.is_file() {
        Ok(md.len())
    } else {
        Err(Failure::env(format!(
            "{path} is neither a block device nor a regular file"
        )))
    }
}

fn open_rw(path: &str) -> Outcome<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_failure("open", path, &e))
}

fn open_ro(path: &str) -> Outcome<File> {
    File::open(path).map_err(|e| io_failure("open", path, &e))
}

fn sync_file(f: &mut File) -> io::Result<()> {
    f.sync_data()
}

// ---------------------------------------------------------------------------------------
// Install

/// `Read + Seek`, as one trait object.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// An opened bundle.
pub enum Bundle {
    /// Readable out of order (a file or block device) of `len` bytes: signatures, floor
    /// and hash tree are checked before the slot is touched, the data during the copy.
    Seekable {
        reader: Box<dyn ReadSeek>,
        len: u64,
        name: String,
    },
    /// Read front to back (stdin, a pipe): verified in full from the slot once written.
    Stream { reader: Box<dyn Read>, name: String },
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bundle::Seekable { len, name, .. } => write!(f, "Seekable({name}, {len} bytes)"),
            Bundle::Stream { name, .. } => write!(f, "Stream({name})"),
        }
    }
}

/// Opens a bundle argument: stdin for `-`, a regular file or block device as seekable,
/// anything else (a FIFO, a character device) as a stream. Also returns the metadata of
/// what was opened (to refuse installing a partition onto itself).
pub fn open_bundle(arg: &BundleArg) -> Outcome<(Bundle, Option<std::fs::Metadata>)> {
    match arg {
        BundleArg::Stdin => Ok((
            Bundle::Stream {
                reader: Box::new(io::stdin()),
                name: "stdin".into(),
            },
            None,
        )),
        BundleArg::Path(p) => {
            let name = p.display().to_string();
            let f = open_ro(&name)?;
            let md = f.metadata().map_err(|e| io_failure("stat", &name, &e))?;
            let ft = md.file_type();
            let b = if md.is_file() || ft.is_block_device() {
                let len = file_len(&f, &name)?;
                Bundle::Seekable {
                    reader: Box::new(f),
                    len,
                    name,
                }
            } else if md.is_dir() {
                return Err(Failure::usage(format!(
                    "{name} is a directory, not a slot image"
                )));
            } else {
                Bundle::Stream {
                    reader: Box::new(f),
                    name,
                }
            };
            Ok((b, Some(md)))
        }
    }
}

/// True when both name the same file or block device.
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    let block = |m: &std::fs::Metadata| m.file_type().is_block_device();
    if block(a) && block(b) {
        a.rdev() == b.rdev()
    } else {
        a.dev() == b.dev() && a.ino() == b.ino()
    }
}

/// Which slot an install writes. On the device (`booted` known) the slot that is not
/// booted; on a disk image, the slot the state would NOT boot next (a when none is
/// bootable). Refused when the running (or next) slot is on trial and the target is its
/// bootable fallback: overwriting it would leave no slot known to be good. Pure.
pub fn plan(st: &BootState, booted: Option<Slot>) -> Outcome<Slot> {
    let running = booted.or_else(|| st.choose());
    let target = running.map_or(Slot::A, Slot::other);
    if let Some(r) = running {
        if !st.slot(r).successful && st.slot(target).bootable() {
            let how = if booted.is_some() {
                "run `stele update mark-good` once it is healthy, or reboot"
            } else {
                "boot it and mark it good first"
            };
            return Err(Failure::refused(format!(
                "slot {} is on trial (not marked good): installing now would overwrite slot {}, its fallback; {how}",
                r.name(),
                target.name()
            )));
        }
    }
    Ok(target)
}

/// A writable partition: the device, its size, how to flush it.
pub struct Part<'a, D> {
    pub dev: &'a mut D,
    pub len: u64,
    pub sync: SyncFn<'a, D>,
}

impl<D> std::fmt::Debug for Part<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Part({} bytes)", self.len)
    }
}

/// What an install did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    pub slot: Slot,
    pub state: BootState,
}

/// The stable stdout line of a successful install. Pure.
pub fn installed_line(i: &Installed) -> String {
    format!(
        "stele: installed {} {} rollback_index={} into slot {}; reboot to boot it",
        i.name,
        i.version,
        i.rollback_index,
        i.slot.name()
    )
}

/// Loads the boot state (refused when neither copy is valid).
pub fn load_state<S: Read + Seek>(dev: &mut S) -> Outcome<(BootState, usize)> {
    state::load(dev)
        .map_err(|e| Failure::from(e).context("boot state (rewrite it with `stele disk create`)"))
}

/// Installs `bundle` into slot `target` and flips the boot state; the checks (keyring,
/// the state's rollback floor, size, hash tree) come before the state is written, so any
/// refusal leaves it untouched. Progress goes to `log` (without the `stele: ` prefix):
/// `update: writing slot <x>`, `update: flipping boot state`, `update: footer written`.
pub fn install<D: Read + Write + Seek, S: Read + Write + Seek>(
    bundle: &mut Bundle,
    target: Slot,
    slot: Part<'_, D>,
    state: Part<'_, S>,
    keyring: &Keyring,
    log: &mut dyn FnMut(&str),
) -> Outcome<Installed> {
    let (st, _) = load_state(state.dev)?;
    let floor = st.rollback_floor;
    let done = match bundle {
        Bundle::Seekable { reader, len, name } => {
            let checked = vupdate::check_seekable(reader, *len, slot.len, keyring, floor)
                .map_err(|e| Failure::from(e).context(&*name))?;
            let v = checked.verified();
            let m = &v.manifest;
            log(&format!(
                "update: {name}: {} {} rollback_index={} verified (signatures, rollback floor {floor}, hash tree)",
                m.name, m.version, m.rollback_index
            ));
            log(&format!("update: writing slot {}", target.name()));
            vupdate::write_checked(reader, checked, slot.dev, slot.len, slot.sync).map_err(|e| {
                Failure::from(e).context(format!(
                    "{name} (slot {} is left unbootable)",
                    target.name()
                ))
            })?
        }
        Bundle::Stream { reader, name } => {
            log(&format!(
                "update: reading the bundle from {name}; it is verified in full once written"
            ));
            log(&format!("update: writing slot {}", target.name()));
            vupdate::install_stream(reader, slot.dev, slot.len, keyring, floor, slot.sync).map_err(
                |e| {
                    Failure::from(e).context(format!(
                        "{name} (slot {} is left unbootable)",
                        target.name()
                    ))
                },
            )?
        }
    };
    // The state first, then the footer: the slot's old record never applies to the new
    // content (verifier::update).
    log("update: flipping boot state");
    let m = done.verified.manifest.clone();
    let new_state = done
        .commit(slot.dev, slot.len, slot.sync, state.dev, target, state.sync)
        .map_err(|e| Failure::from(e).context("committing the install"))?;
    log("update: footer written");
    Ok(Installed {
        name: m.name,
        version: m.version,
        rollback_index: m.rollback_index,
        slot: target,
        state: new_state,
    })
}

/// `stele update install` on the device: into the slot that is not booted.
pub fn install_device(
    run_dir: &Path,
    arg: &BundleArg,
    log: &mut dyn FnMut(&str),
) -> Outcome<Installed> {
    let dev = Device::load(run_dir)?;
    let state_path = dev.devices.state.clone();
    let mut state_file = open_rw(&state_path)?;
    // Held until the install returns (the file is closed): PID 1 does not mark a slot good
    // in between, so the floor read here is the floor at the flip.
    crate::sys::lock_state(&state_file, &state_path, true)?;
    let (st, _) = load_state(&mut state_file)?;
    let target = plan(&st, Some(dev.booted))?;
    let slot_path = dev.slot_path(target)?.to_string();
    let (mut bundle, bundle_md) = open_bundle(arg)?;
    let mut slot_file = open_rw(&slot_path)?;
    let slot_len = file_len(&slot_file, &slot_path)?;
    if let Some(bmd) = &bundle_md {
        let smd = slot_file
            .metadata()
            .map_err(|e| io_failure("stat", &slot_path, &e))?;
        if same_file(bmd, &smd) {
            return Err(Failure::usage(format!(
                "the bundle is {slot_path}, the slot being written: give a slot image file or another device"
            )));
        }
    }
    let state_len = file_len(&state_file, &state_path)?;
    install(
        &mut bundle,
        target,
        Part {
            dev: &mut slot_file,
            len: slot_len,
            sync: &mut sync_file,
        },
        Part {
            dev: &mut state_file,
            len: state_len,
            sync: &mut sync_file,
        },
        &dev.keyring,
        log,
    )
    .map_err(|f| {
        if f.message.contains(&slot_path) {
            f
        } else {
            Failure {
                message: format!(
                    "{} (installing into slot {target} on {slot_path})",
                    f.message,
                    target = target.name()
                ),
                ..f
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Status

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// Signatures (keyring threshold), layout and hash tree check out.
    Valid {
        name: String,
        version: String,
        rollback_index: u64,
    },
    /// The footer is all zeros: never written, or an install was interrupted.
    Empty,
    /// The slot has no partition.
    Missing,
    /// Anything else, with the verifier's cause.
    Invalid(String),
}

/// Checks the image in a slot (without reading every data block). Never fails: the
/// outcome is the [`Image`].
pub fn inspect_slot<R: Read + Seek>(r: &mut R, len: u64, keyring: &Keyring) -> Image {
    if let Some(at) = len.checked_sub(FOOTER_SIZE) {
        let mut f = [0u8; 4096];
        let read = r
            .seek(SeekFrom::Start(at))
            .and_then(|_| r.read_exact(&mut f));
        if read.is_ok() && f.iter().all(|&b| b == 0) {
            return Image::Empty;
        }
    }
    let opts = VerifyOptions {
        full: false,
        rollback_floor: None,
    };
    match slot::verify(r, len, keyring, opts) {
        Ok((_, v)) => Image::Valid {
            name: v.manifest.name,
            version: v.manifest.version,
            rollback_index: v.manifest.rollback_index,
        },
        Err(e) => Image::Invalid(e.to_string()),
    }
}

/// One slot in the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: Slot,
    pub record: SlotState,
    pub image: Image,
}

/// `stele update status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The running slot (unknown on a disk image).
    pub booted: Option<Slot>,
    /// The slot the state boots next.
    pub next: Option<Slot>,
    pub rollback_floor: u64,
    pub slots: [SlotStatus; 2],
}

/// A JSON string literal. Pure.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if u32::from(c) < 0x20 => o.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_slot(s: Option<Slot>) -> String {
    s.map_or("null".into(), |s| json_str(s.name()))
}

impl Status {
    /// Builds the status from the state and each slot's [`Image`]. Pure.
    pub fn new(st: &BootState, booted: Option<Slot>, images: [Image; 2]) -> Status {
        let [a, b] = images;
        Status {
            booted,
            next: st.choose(),
            rollback_floor: st.rollback_floor,
            slots: [
                SlotStatus {
                    slot: Slot::A,
                    record: *st.slot(Slot::A),
                    image: a,
                },
                SlotStatus {
                    slot: Slot::B,
                    record: *st.slot(Slot::B),
                    image: b,
                },
            ],
        }
    }

    /// One line per slot, then the floor and the next slot:
    /// `slot a: booted version=1.0.0 rollback_index=1 priority=1 tries=0 successful=yes`. Pure.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.slots {
            let mut line = format!("slot {}:", s.slot.name());
            if self.booted == Some(s.slot) {
                line.push_str(" booted");
            }
            if self.next == Some(s.slot) {
                line.push_str(" next");
            }
            match &s.image {
                Image::Valid {
                    version,
                    rollback_index,
                    ..
                } => line.push_str(&format!(
                    " version={version} rollback_index={rollback_index}"
                )),
                Image::Empty => line.push_str(" empty"),
                Image::Missing => line.push_str(" missing"),
                Image::Invalid(why) => line.push_str(&format!(" invalid: {why};")),
            }
            let r = &s.record;
            line.push_str(&format!(
                " priority={} tries={} successful={}\n",
                r.priority,
                r.tries_remaining,
                if r.successful { "yes" } else { "no" }
            ));
            out.push_str(&line);
        }
        out.push_str(&format!(
            "rollback_floor={} next={}\n",
            self.rollback_floor,
            self.next.map_or("none", Slot::name)
        ));
        out
    }

    /// One JSON object with stable keys (see docs/CLI.md). Pure.
    pub fn json(&self) -> String {
        let slot = |s: &SlotStatus| {
            let (name, version, index, valid, error) = match &s.image {
                Image::Valid {
                    name,
                    version,
                    rollback_index,
                } => (
                    json_str(name),
                    json_str(version),
                    rollback_index.to_string(),
                    true,
                    "null".to_string(),
                ),
                Image::Empty => null_image(json_str("empty")),
                Image::Missing => null_image(json_str("missing: no partition")),
                Image::Invalid(why) => null_image(json_str(why)),
            };
            let r = &s.record;
            format!(
                "{{\"name\":{name},\"version\":{version},\"rollback_index\":{index},\"priority\":{},\"tries_remaining\":{},\"successful\":{},\"valid\":{valid},\"error\":{error}}}",
                r.priority, r.tries_remaining, r.successful
            )
        };
        format!(
            "{{\"booted\":{},\"next\":{},\"rollback_floor\":{},\"slots\":{{\"a\":{},\"b\":{}}}}}\n",
            json_slot(self.booted),
            json_slot(self.next),
            self.rollback_floor,
            slot(&self.slots[0]),
            slot(&self.slots[1])
        )
    }
}

fn null_image(error: String) -> (String, String, String, bool, String) {
    ("null".into(), "null".into(), "null".into(), false, error)
}

/// `stele update status` on the device.
pub fn status_device(run_dir: &Path) -> Outcome<Status> {
    let dev = Device::load(run_dir)?;
    let mut state_file = open_ro(&dev.devices.state)?;
    let (st, _) = load_state(&mut state_file)?;
    let mut images = [Image::Missing, Image::Missing];
    for (i, s) in [Slot::A, Slot::B].into_iter().enumerate() {
        if let Some(p) = dev.devices.slot(s) {
            images[i] = match open_ro(p).and_then(|mut f| {
                let len = file_len(&f, p)?;
                Ok(inspect_slot(&mut f, len, &dev.keyring))
            }) {
                Ok(img) => img,
                Err(f) => Image::Invalid(f.message),
            };
        }
    }
    Ok(Status::new(&st, Some(dev.booted), images))
}

/// One printable line for a terminal: newlines become spaces and other control characters
/// are escaped, so bytes from an unverified image (quoted in a parse error) cannot drive
/// the terminal. Pure.
pub fn error_line(message: &str) -> String {
    message
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => " ".to_owned(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Mark good

/// Marks `slot` good (successful, tries 0, floor raised to `rollback_index`), stores the
/// next copy and syncs. Returns false when the state already said so (nothing written).
pub fn mark_good<S: Read + Write + Seek>(
    dev: &mut S,
    sync: SyncFn<'_, S>,
    slot: Slot,
    rollback_index: u64,
) -> Outcome<bool> {
    let (mut st, mut copy) = load_state(dev)?;
    let before = st;
    st.mark_good(slot, rollback_index);
    if st == before {
        return Ok(false);
    }
    state::store_next(dev, &mut st, &mut copy)
        .map_err(|e| Failure::from(e).context("boot state"))?;
    sync(dev).map_err(|e| Failure::env(format!("flushing the boot state failed: {e}")))?;
    Ok(true)
}

/// `stele update mark-good` on the device: the booted slot, with the rollback index of the
/// manifest verified at boot (`manifest.toml`).
pub fn mark_good_device(run_dir: &Path) -> Outcome<Slot> {
    let dev = Device::load(run_dir)?;
    let mpath = run_dir.join("manifest.toml");
    let body = std::fs::read(&mpath).map_err(|e| not_published(&mpath, &e))?;
    let m = Manifest::parse_body(&body)
        .map_err(|e| Failure::env(format!("{}: {e}", mpath.display())))?;
    let mut f = open_rw(&dev.devices.state)?;
    crate::sys::lock_state(&f, &dev.devices.state, true)?;
    mark_good(&mut f, &mut sync_file, dev.booted, m.rollback_index)
        .map_err(|e| e.context(&dev.devices.state))?;
    Ok(dev.booted)
}

// ---------------------------------------------------------------------------------------
// The boot's side

/// Copies this executable (`/proc/self/exe`) to `<bin_dir>/stele`, mode 0755: the device's
/// `stele` command. Called by the boot before switch root (/run survives it).
pub fn install_self(bin_dir: &str) -> crate::Result<()> {
    sys::mkdir_p(bin_dir)?;
    let to = format!("{bin_dir}/{PROGRAM}");
    std::fs::copy("/proc/self/exe", &to).map_err(|e| crate::Error::io("copy", &to, e))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| crate::Error::io("chmod", &to, e))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;
    use std::io::Cursor;
    use stele_verifier::keys::public_pem;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    use stele_verifier::testutil::{image_signed_by, key, ring};

    /// A slot image signed by `key(signer)`, version `<rollback_index>.<seed>`.
    fn image(blocks: u64, rollback_index: u64, seed: u8, signer: u8) -> Vec<u8> {
        image_signed_by(blocks, rollback_index, seed, signer).0
    }

    #[test]
    fn multicall_is_chosen_by_name_or_update_but_never_as_pid1() {
        assert!(is_update_call(42, &os(&["/run/stele/bin/stele", "update"])));
        assert!(is_update_call(42, &os(&["stele"])));
        assert!(is_update_call(42, &os(&["/init", "update", "status"])));
        assert!(!is_update_call(42, &os(&["/init"])));
        assert!(!is_update_call(42, &os(&["stele-init", "status"])));
        assert!(!is_update_call(1, &os(&["/init", "update"])));
        assert!(!is_update_call(1, &os(&["stele", "update"])));
        assert!(!is_update_call(42, &[]));
    }

    #[test]
    fn arguments() {
        let p = |v: &[&str]| parse_args(&os(v));
        assert_eq!(
            p(&["update", "install", "/dev/vdb"]).unwrap(),
            Command::Install(BundleArg::Path("/dev/vdb".into()))
        );
        assert_eq!(
            p(&["update", "install", "-"]).unwrap(),
            Command::Install(BundleArg::Stdin)
        );
        assert_eq!(
            p(&["update", "status"]).unwrap(),
            Command::Status { json: false }
        );
        assert_eq!(
            p(&["update", "status", "--json"]).unwrap(),
            Command::Status { json: true }
        );
        assert_eq!(p(&["update", "mark-good"]).unwrap(), Command::MarkGood);
        assert_eq!(p(&["--help"]).unwrap(), Command::Help);
        assert_eq!(p(&["update", "install", "--help"]).unwrap(), Command::Help);
        for (bad, why) in [
            (&[][..], "missing command"),
            (&["image", "build"][..], "only `stele update`"),
            (&["update"][..], "missing update command"),
            (&["update", "install"][..], "needs a BUNDLE"),
            (&["update", "install", "a", "b"][..], "one BUNDLE"),
            (
                &["update", "install", "--force"][..],
                "unknown option --force",
            ),
            (
                &["update", "install", "--disk", "d.img", "x"][..],
                "host `stele` CLI",
            ),
            (&["update", "status", "--yaml"][..], "--yaml"),
            (&["update", "mark-good", "a"][..], "unexpected"),
            (&["update", "rollback"][..], "unknown update command"),
        ] {
            let e = p(bad).unwrap_err();
            assert_eq!(e.exit, Exit::Usage, "{bad:?}");
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
            assert!(e.message.contains(USAGE_LINE), "{bad:?}");
        }
    }

    #[test]
    fn run_files() {
        assert_eq!(parse_slot("b\n").unwrap(), Slot::B);
        assert_eq!(parse_slot("a").unwrap(), Slot::A);
        assert!(parse_slot("c\n").is_err());
        assert!(parse_slot("").is_err());
        let d = DevicePaths::parse("state=/dev/vda1\na=/dev/vda2\nb=\ndata=/dev/vda4\nnew=x\n")
            .unwrap();
        assert_eq!(d.state, "/dev/vda1");
        assert_eq!(d.slot(Slot::A), Some("/dev/vda2"));
        assert_eq!(d.slot(Slot::B), None);
        assert_eq!(d.data.as_deref(), Some("/dev/vda4"));
        assert!(DevicePaths::parse("a=/dev/vda2\n").is_err());
        assert!(DevicePaths::parse("state /dev/vda1\n").is_err());
    }

    /// A state with floor 2 (what the status tests print).
    fn st(a: (u8, u8, bool), b: (u8, u8, bool)) -> BootState {
        BootState {
            rollback_floor: 2,
            ..stele_verifier::testutil::state(a, b)
        }
    }

    #[test]
    fn target_slot() {
        let good = (2, 0, true);
        let fallback = (1, 0, true);
        let trial = (2, 3, false);
        let dead = (0, 0, false);
        // On the device: never the booted slot.
        assert_eq!(plan(&st(good, fallback), Some(Slot::A)).unwrap(), Slot::B);
        assert_eq!(plan(&st(fallback, good), Some(Slot::B)).unwrap(), Slot::A);
        // Booted a, b already installed but not booted yet: b again.
        assert_eq!(plan(&st(fallback, trial), Some(Slot::A)).unwrap(), Slot::B);
        // Booted b on trial: a is its fallback, refused.
        let e = plan(&st(fallback, trial), Some(Slot::B)).unwrap_err();
        assert_eq!(e.exit, Exit::Refused);
        assert!(e.message.contains("mark-good"), "{}", e.message);
        // ...unless a is not bootable anyway.
        assert_eq!(plan(&st(dead, trial), Some(Slot::B)).unwrap(), Slot::A);
        // On a disk image: the slot the state would not choose.
        assert_eq!(plan(&st(good, dead), None).unwrap(), Slot::B);
        assert_eq!(plan(&st(fallback, good), None).unwrap(), Slot::A);
        assert_eq!(plan(&st(dead, dead), None).unwrap(), Slot::A);
        assert_eq!(
            plan(&st(fallback, trial), None).unwrap_err().exit,
            Exit::Refused
        );
    }

    fn status_fixture() -> Status {
        let s = st((1, 0, true), (2, 3, false));
        Status::new(
            &s,
            Some(Slot::A),
            [
                Image::Valid {
                    name: "demo".into(),
                    version: "1.0.0".into(),
                    rollback_index: 1,
                },
                Image::Invalid("bad signature by key \"x\"\n".into()),
            ],
        )
    }

    #[test]
    fn status_text() {
        assert_eq!(
            status_fixture().text(),
            "slot a: booted version=1.0.0 rollback_index=1 priority=1 tries=0 successful=yes\n\
             slot b: next invalid: bad signature by key \"x\"\n; priority=2 tries=3 successful=no\n\
             rollback_floor=2 next=b\n"
        );
        let mut s = status_fixture();
        s.slots[1].image = Image::Empty;
        s.booted = None;
        assert!(
            s.text().contains("slot b: next empty priority=2"),
            "{}",
            s.text()
        );
        assert!(
            s.text().starts_with("slot a: version=1.0.0"),
            "{}",
            s.text()
        );
    }

    #[test]
    fn status_json() {
        assert_eq!(
            status_fixture().json(),
            "{\"booted\":\"a\",\"next\":\"b\",\"rollback_floor\":2,\"slots\":{\
             \"a\":{\"name\":\"demo\",\"version\":\"1.0.0\",\"rollback_index\":1,\"priority\":1,\"tries_remaining\":0,\"successful\":true,\"valid\":true,\"error\":null},\
             \"b\":{\"name\":null,\"version\":null,\"rollback_index\":null,\"priority\":2,\"tries_remaining\":3,\"successful\":false,\"valid\":false,\"error\":\"bad signature by key \\\"x\\\"\\n\"}}}\n"
        );
        assert_eq!(json_str("a\u{1}\\"), "\"a\\u0001\\\\\"");
    }

    #[test]
    fn inspect_slots() {
        let img = image(8, 1, 1, 1);
        let mut slot = Cursor::new(vec![0u8; 1 << 20]);
        assert_eq!(inspect_slot(&mut slot, 1 << 20, &ring()), Image::Empty);
        slot.get_mut()[..img.len()].copy_from_slice(&img);
        let len = img.len() as u64;
        assert_eq!(
            inspect_slot(&mut Cursor::new(&img), len, &ring()),
            Image::Valid {
                name: "demo".into(),
                version: "1.1".into(),
                rollback_index: 1
            }
        );
        let other = image(8, 1, 1, 2);
        match inspect_slot(&mut Cursor::new(&other), len, &ring()) {
            Image::Invalid(why) => assert!(why.contains("threshold"), "{why}"),
            i => panic!("{i:?}"),
        }
        match inspect_slot(&mut Cursor::new(vec![1u8; 100]), 100, &ring()) {
            Image::Invalid(why) => assert!(why.contains("footer"), "{why}"),
            i => panic!("{i:?}"),
        }
    }

    fn no_sync<D>(_: &mut D) -> io::Result<()> {
        Ok(())
    }

    fn fresh_state(b: bool) -> Cursor<Vec<u8>> {
        let mut c = Cursor::new(vec![0u8; 8192]);
        state::initialize(&mut c, &BootState::initial(b)).unwrap();
        c
    }

    #[test]
    fn install_flips_the_state_only_after_a_good_write() {
        let img = image(8, 5, 2, 1);
        let mut slot = Cursor::new(vec![0u8; 1 << 20]);
        let mut state_dev = fresh_state(false);
        let mut lines = Vec::new();
        let mut bundle = Bundle::Seekable {
            len: img.len() as u64,
            reader: Box::new(Cursor::new(img.clone())),
            name: "v5.img".into(),
        };
        let done = install(
            &mut bundle,
            Slot::B,
            Part {
                dev: &mut slot,
                len: 1 << 20,
                sync: &mut no_sync,
            },
            Part {
                dev: &mut state_dev,
                len: 8192,
                sync: &mut no_sync,
            },
            &ring(),
            &mut |l| lines.push(l.to_string()),
        )
        .unwrap();
        assert_eq!(
            installed_line(&done),
            "stele: installed demo 5.2 rollback_index=5 into slot b; reboot to boot it"
        );
        assert_eq!(lines[1], "update: writing slot b");
        assert_eq!(
            lines[2..],
            ["update: flipping boot state", "update: footer written"]
        );
        let (s, _) = state::load(&mut state_dev).unwrap();
        assert_eq!(s.choose(), Some(Slot::B));
        assert_eq!(
            *s.slot(Slot::B),
            SlotState {
                priority: 2,
                tries_remaining: 3,
                successful: false
            }
        );
        assert_eq!(s, done.state);

        // Marking it good raises the floor; then an older bundle is refused by the floor,
        // from a stream too, and the state is not written.
        assert!(mark_good(&mut state_dev, &mut no_sync, Slot::B, 5).unwrap());
        assert!(!mark_good(&mut state_dev, &mut no_sync, Slot::B, 5).unwrap());
        let before = state_dev.get_ref().clone();
        let old = image(8, 4, 3, 1);
        let mut bundle = Bundle::Stream {
            reader: Box::new(Cursor::new(old)),
            name: "stdin".into(),
        };
        let e = install(
            &mut bundle,
            Slot::A,
            Part {
                dev: &mut slot,
                len: 1 << 20,
                sync: &mut no_sync,
            },
            Part {
                dev: &mut state_dev,
                len: 8192,
                sync: &mut no_sync,
            },
            &ring(),
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(e.exit, Exit::Refused);
        assert!(e.message.contains("rollback"), "{}", e.message);
        assert_eq!(state_dev.get_ref(), &before);
    }

    /// The device flow on the host: /run/stele files pointing at regular files.
    #[test]
    fn device_flow_with_published_files() {
        let base = std::env::temp_dir().join(format!("stele-update-{}", std::process::id()));
        let run = base.join("run");
        std::fs::create_dir_all(run.join("keys")).unwrap();
        let part = |n: &str| base.join(n).display().to_string();
        let a = image(8, 1, 1, 1);
        let mut a_part = vec![0u8; 1 << 20];
        a_part[..a.len()].copy_from_slice(&a);
        a_part[(1 << 20) - 4096..].copy_from_slice(&a[a.len() - 4096..]);
        std::fs::write(part("a"), &a_part).unwrap();
        std::fs::write(part("b"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(part("state"), fresh_state(false).into_inner()).unwrap();
        std::fs::write(run.join("slot"), "a\n").unwrap();
        std::fs::write(
            run.join("devices"),
            format!(
                "state={}\na={}\nb={}\ndata=\n",
                part("state"),
                part("a"),
                part("b")
            ),
        )
        .unwrap();
        std::fs::write(run.join("boot.toml"), "threshold = 1\n").unwrap();
        std::fs::write(run.join("keys/k.pem"), public_pem(&key(1).verifying_key())).unwrap();
        let body = slot::locate(&mut Cursor::new(&a), a.len() as u64)
            .unwrap()
            .envelope
            .body;
        std::fs::write(run.join("manifest.toml"), body).unwrap();

        let s = status_device(&run).unwrap();
        assert_eq!(s.booted, Some(Slot::A));
        assert_eq!(s.slots[1].image, Image::Empty);
        assert!(matches!(
            s.slots[0].image,
            Image::Valid {
                rollback_index: 1,
                ..
            }
        ));

        let v2 = base.join("v2.img");
        std::fs::write(&v2, image(8, 2, 9, 1)).unwrap();
        let done = install_device(&run, &BundleArg::Path(v2.clone()), &mut |_| {}).unwrap();
        assert_eq!(done.slot, Slot::B);
        let s = status_device(&run).unwrap();
        assert_eq!(s.next, Some(Slot::B));
        assert!(matches!(&s.slots[1].image, Image::Valid { version, .. } if version == "2.9"));
        assert_eq!(s.slots[1].record.tries_remaining, 3);

        // The bundle cannot be the slot being written.
        let e = install_device(&run, &BundleArg::Path(part("b").into()), &mut |_| {}).unwrap_err();
        assert_eq!(e.exit, Exit::Usage, "{}", e.message);

        // A bundle signed by an unknown key: refused, state bytes unchanged.
        let before = std::fs::read(part("state")).unwrap();
        std::fs::write(&v2, image(8, 3, 9, 2)).unwrap();
        let e = install_device(&run, &BundleArg::Path(v2), &mut |_| {}).unwrap_err();
        assert_eq!(e.exit, Exit::Refused);
        assert!(e.message.contains("threshold not met"), "{}", e.message);
        assert_eq!(std::fs::read(part("state")).unwrap(), before);

        // mark-good of the booted slot a raises the floor to 1.
        assert_eq!(mark_good_device(&run).unwrap(), Slot::A);
        assert_eq!(status_device(&run).unwrap().rollback_floor, 1);

        // Nothing published: an environment error naming the file.
        let e = status_device(&base.join("nowhere")).unwrap_err();
        assert_eq!(e.exit, Exit::Environment);
        assert!(e.message.contains("nowhere/slot"), "{}", e.message);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn error_lines_cannot_drive_the_terminal() {
        let raw = "bad body: line 1\n\u{1b}]0;pwned\u{7}\u{1b}[31m red";
        let line = error_line(raw);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.starts_with("bad body: line 1 \\u{1b}]0;pwned"),
            "{line}"
        );
    }
}
