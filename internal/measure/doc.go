// Package measure computes the AMD SEV-SNP launch digest (the MEASUREMENT
// field of an attestation report) of a QEMU guest ahead of time, the same
// way virtee's sev-snp-measure (PyPI sev-snp-measure 0.0.13, mode "snp")
// computes it: byte for byte, in pure Go.
//
// The digest is a chain of SHA-384 over 0x70-byte PAGE_INFO records, one per
// page the VMM hands to SNP_LAUNCH_UPDATE, in this order:
//
//  1. every 4 KiB page of the OVMF image, mapped so that it ends at 4 GiB,
//     as a NORMAL page;
//  2. the pages named by OVMF's SEV metadata sections, in file order:
//     SNP_SEC_MEM as ZERO pages, SNP_SECRETS as a SECRETS page, CPUID as a
//     CPUID page, SVSM_CAA as ZERO pages and SNP_KERNEL_HASHES as one NORMAL
//     page holding QEMU's kernel/initrd/cmdline hashes table (ZERO pages
//     when no kernel is given);
//  3. one VMSA page per vCPU: the BSP starts at 0xfffffff0, the APs at the
//     EIP of OVMF's SEV-ES reset block. The vCPU type enters through RDX
//     (the CPUID(1).EAX signature), the SEV features through SEV_FEATURES.
//
// What changes the measurement, and so belongs in any allow-list: the OVMF
// file, kernel, initrd and command line, the number of vCPUs, the -cpu model
// and the guest features (0x1 with upstream KVM 6.11+ and QEMU 9.1+; 0x21
// on older AMD development kernels that enabled DebugSwap by default).
//
// Options.Cache keeps what is derived from files (the OVMF page chain, the
// kernel and initrd SHA-256) by file identity, so that measuring the same
// files again, say for other vCPU counts, costs microseconds.
//
// Where this package is stricter than sev-snp-measure: it refuses inputs
// QEMU would refuse or an SNP guest cannot boot from (no SEV metadata, a
// kernel with a firmware that has no usable hashes table, more than one
// vCPU without an AP reset EIP, SEV features without SNPActive, zero
// vCPUs) instead of returning a digest no guest can ever report.
package measure
