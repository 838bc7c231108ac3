// Package cvm builds the confidential-VM (AMD SEV-SNP) kit of a participant:
// the CC config of NVFlare's confidential-computing deployment guide, its
// validation, the drive images, the launch manifest flare-agent reads, a
// readable QEMU launch script and the kit archive.
//
// Layout, as in NVFlare's guide (server1/cvm_885fe8f608b3/…):
//
//	<output_dir>/<participant>/cvm_<id>/   id: 8 hex of a hash of every input
//	    root.qcow2 | crypt_root.qcow2      ext4 of the flattened docker image
//	    applog.qcow2                       empty ext4, mounted at /applog
//	    user_config.qcow2                  ext4: nvflare/ = the startup kit,
//	                                       <key> = each user_config entry
//	    user_data.qcow2                    empty ext4 (optional ext_mount.conf)
//	    OVMF.fd, vmlinuz, initrd.img       copies of firmware, kernel, initrd
//	    launch.json                        Manifest
//	    launch_vm.sh                       QEMU 9.1+ SEV-SNP command line
//	    README.txt
//	<output_dir>/<participant>/<participant>.tgz   the folder, packed
//
// Everything is made without privileges and without a Docker daemon: the
// docker-save archive is flattened in Go (whiteouts honoured), the images are
// made with mkfs.ext4 -d, fixed up with debugfs (ownership, device nodes,
// timestamps) and converted with qemu-img (Debian e2fsprogs, qemu-utils).
// The root drive is encrypted, when asked, as a LUKS1 container written by
// qemu-img in user space (no dm-crypt, loop device or root needed).
//
// The SEV-SNP launch measurement is not computed here: the caller passes it
// in (BuildInput.ExpectedMeasurement) or plugs in a Measurer.
package cvm
