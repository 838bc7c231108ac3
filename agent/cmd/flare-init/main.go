//go:build linux

// Command flare-init is the CVM's /init: flare_cvm_kit puts it, with the
// kit's measured guest config and kernel modules, into the initrd it
// builds. It attests to the key broker, opens the encrypted root and runs
// the workload (see agent/flareinit). It runs only as PID 1.
package main

import (
	"fmt"
	"os"

	"github.com/flarekit/terraform-provider-flare/agent/flareinit"
)

// version is set with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Println("flare-init", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "flare-init is a confidential VM's /init and runs only as PID 1: flare_cvm_kit puts it into the kit's initrd (guest_init)")
		os.Exit(2)
	}
	flareinit.Main(version)
}
