//! The TPM under QEMU (swtpm): the rollback floor kept in the TPM counter survives an
//! attacker who rewrites the boot state with a valid checksum; `rollback_storage = "tpm"`
//! without a TPM refuses the boot; the PCR stele-init extends is what the host computes
//! from the image.

use sha2::{Digest, Sha256};

use crate::fixture::{change_state, envelope_sha256, state, Fixture, Slot};
use stele_verifier::hex;

/// v1 (index 1): marked good at once; on the first boot installs v2 from /dev/vdb and
/// reboots; later boots only power off.
const V1: &str = r#"#!/bin/sh
sleep 2
if [ ! -e /var/installed ]; then
  touch /var/installed; sync
  /run/stele/bin/stele update install /dev/vdb
  echo "v1: install exit $?"
  kill -TERM 1
  sleep 100
fi
kill -USR2 1
sleep 100
"#;

/// v2 (index 2): on its first boot waits to be marked good and powers off; on the next
/// (the attacked disk) tries to install v1 from /dev/vdb at once, before it is marked good
/// again, then powers off.
const V2: &str = r#"#!/bin/sh
if [ -e /var/attacked ]; then
  /run/stele/bin/stele update install /dev/vdb
  echo "v2: install exit $?"
  kill -USR2 1
  sleep 100
fi
touch /var/attacked; sync
sleep 4
kill -USR2 1
sleep 100
"#;

fn system(healthy_after: u64) -> String {
    format!(
        "healthy_after = {healthy_after}\nshutdown_grace = 3\n\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n"
    )
}

/// After v2 (index 2) was marked good with a TPM, the attacker resets the state's floor to
/// 0 and makes slot a (v1, index 1) preferred, with a valid checksum. The boot refuses a
/// (the TPM floor), boots b, and installing v1 inside the guest is refused naming the TPM.
#[test]
fn tpm_floor_survives_a_state_reset() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let r1 = fx
        .rootfs("root1", &system(1))
        .file("bin/app", V1, 0o755)
        .build();
    // v2 is marked good only after its (attacked) service has tried the install.
    let r2 = fx
        .rootfs("root2", &system(3))
        .file("bin/app", V2, 0o755)
        .build();
    let v1 = fx
        .image(&r1, &key)
        .name("test")
        .version("1.0.0")
        .index(1)
        .build("v1.img");
    let v2 = fx
        .image(&r2, &key)
        .name("test")
        .version("2.0.0")
        .index(2)
        .build("v2.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&v1).build();

    let mut vm = fx
        .boot(&initrd, &disk)
        .tpm("tpm")
        .read_only_disk(&v2)
        .start();
    vm.expect("stele: TPM rollback counter 0x013e5e1e defined");
    // A fresh disk's state starts at its image's index (1); a fresh TPM counter at 0.
    vm.expect("stele: rollback floor 1 (state 1, tpm 0, initramfs 0)");
    vm.expect("stele: slot=a marked good");
    vm.expect("stele: TPM rollback floor raised from 0 to 1");
    vm.expect("stele: installed test 2.0.0 rollback_index=2 into slot b");
    vm.expect("v1: install exit 0");
    vm.expect("stele: rollback floor 1 (state 1, tpm 1, initramfs 0)");
    vm.expect("stele: slot=b version=2.0.0 rollback_index=2");
    vm.expect("stele: slot=b marked good");
    vm.expect("stele: TPM rollback floor raised from 1 to 2");
    vm.powered_off();
    assert_eq!(state(&disk).rollback_floor, 2);

    // The attacker: the state's floor back to 0, slot a (v1) first; a valid record with a
    // higher sequence, as any disk writer can make.
    let attacked = change_state(&disk, |st| {
        st.rollback_floor = 0;
        st.slot_mut(Slot::A).priority = 3;
    });
    assert_eq!(attacked.rollback_floor, 0);
    assert_eq!(attacked.choose(), Some(Slot::A));

    let mut vm = fx
        .boot(&initrd, &disk)
        .tpm("tpm")
        .read_only_disk(&v1)
        .start();
    vm.expect("stele: rollback floor 2 (state 0, tpm 2, initramfs 0)");
    vm.expect("stele: refused slot a: rollback refused: image rollback_index 1 is below the rollback floor 2");
    vm.expect("stele: slot=b version=2.0.0 rollback_index=2");
    // The install is refused by the TPM floor, and (since the running slot b is good) by
    // b's own index too: both are named.
    let refused = vm.expect("stele: error:");
    assert!(
        refused.contains("rollback refused: image rollback_index 1 is below the rollback floor 2 (state 0, running slot 2, tpm 2, initramfs 0)"),
        "{refused}"
    );
    vm.expect("v2: install exit 1");
    let console = vm.powered_off();
    assert!(
        !console.contains("stele: slot=a version=1.0.0"),
        "v1 booted"
    );
    assert!(!console.contains("installed test 1.0.0"), "v1 installed");
}

/// `rollback_storage = "tpm"` on a machine without a TPM: one line and the failure action.
#[test]
fn tpm_required_without_a_tpm_refuses_the_boot() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let r = fx
        .rootfs("root", &system(1))
        .file("bin/app", "#!/bin/sh\nkill -USR2 1\n", 0o755)
        .build();
    let img = fx.image(&r, &key).index(1).build("v1.img");
    let initrd = fx
        .initramfs(&[&public])
        .config("rollback_storage = \"tpm\"\non_failure = \"poweroff\"\nfailure_delay_secs = 0\n")
        .build();
    let disk = fx.disk(&img).build();
    let mut vm = fx.boot(&initrd, &disk).start();
    let line = vm.expect("stele: no bootable slot: no TPM");
    assert!(
        line.contains("neither /dev/tpmrm0 nor /dev/tpm0 exists"),
        "{line}"
    );
    vm.expect("stele: shutdown: poweroff");
    let console = vm.powered_off();
    assert!(!console.contains("verified"), "a slot was verified");
}

/// sha256(`pcr` || `digest`): one PCR extend.
fn extend(pcr: &[u8], digest: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(digest);
    h.finalize().to_vec()
}

/// A root whose service prints PCR 13 as the guest's kernel reads it, then powers off.
fn pcr_root(fx: &Fixture) -> String {
    let service = "#!/bin/sh\necho \"guest: pcr13=$(cat /sys/class/tpm/tpm0/pcr-sha256/13)\"\nkill -USR2 1\nsleep 100\n";
    fx.rootfs("root", &system(1))
        .file("bin/app", service, 0o755)
        .build()
}

/// The PCR 13 the guest printed, lower-case hex.
fn guest_pcr(vm: &mut crate::fixture::Guest) -> String {
    let line = vm.expect("guest: pcr13=");
    line.split("pcr13=")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_lowercase()
}

/// Stage 1 measures the verified envelope into PCR 13: the guest reads the PCR from the
/// kernel's sysfs, and it is sha256(zeros || sha256(envelope)) computed here from the image.
#[test]
fn measured_boot_extends_pcr_13_with_the_envelope() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let r = pcr_root(&fx);
    let img = fx.image(&r, &key).index(1).build("v1.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&img).build();
    let digest = envelope_sha256(&img);
    let want = hex::encode(&extend(&[0u8; 32], &digest));

    let mut vm = fx.boot(&initrd, &disk).tpm("tpm").start();
    vm.expect(&format!(
        "stele: slot=a measured {} into pcr 13",
        hex::encode(&digest)
    ));
    assert_eq!(guest_pcr(&mut vm), want);
    vm.powered_off();
}

/// Across a kexec (no TPM reset) each stage extends once: the slot's kernel and stage 2
/// measure the same envelope on top of stage 1's, so PCR 13 is
/// sha256(sha256(zeros || d) || d), as docs/BOOT.md "Measured boot" tells a verifier.
#[test]
fn measured_boot_across_kexec_extends_pcr_13_once_per_stage() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let r = pcr_root(&fx);
    let kernel = crate::vm::kexec::stripped_kernel(&fx);
    let stage2 = fx
        .initramfs(&[&public])
        .args(&["--stage2"])
        .out("stage2.cpio")
        .build();
    let img = fx
        .image(&r, &key)
        .index(1)
        .args(&["--kernel", &kernel, "--initrd", &stage2])
        .args(&["--kernel-cmdline", "console=ttyS0"])
        .build("v1.img");
    let debian = crate::fixture::env_path("STELE_KERNEL")
        .display()
        .to_string();
    let initrd = fx
        .initramfs(&[&public])
        .args(&["--kernel", &debian])
        .out("stage1.cpio")
        .build();
    let disk = fx.disk(&img).build();
    let d = envelope_sha256(&img);
    let want = hex::encode(&extend(&extend(&[0u8; 32], &d), &d));

    let mut vm = fx.boot(&initrd, &disk).tpm("tpm").start();
    let measured = format!("stele: slot=a measured {} into pcr 13", hex::encode(&d));
    vm.expect_all(&[
        &measured,
        " kexec",
        "kexec_core: Starting new kernel",
        "stele: stele-init",
        &measured,
    ]);
    assert_eq!(guest_pcr(&mut vm), want);
    vm.powered_off();
}
