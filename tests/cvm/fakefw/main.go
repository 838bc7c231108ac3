// Command fakefw writes an OVMF image with the AmdSev metadata sections
// (SEV, kernel hashes) and nothing else, for the CVM end-to-end test:
// flare_cvm_kit computes the kit's expected measurement from it, while
// flare-agent in simulated mode boots Debian's OVMF.fd instead
// (simulated_firmware). Debian ships no AmdSev OVMF build.
package main

import (
	"fmt"
	"os"

	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fakefw OUT")
		os.Exit(2)
	}
	fw := measuretest.Firmware{Size: 2 << 20, Sections: measuretest.AmdSevSections, HashesGPA: 0x810000, HashesSize: 0x1000}
	if err := os.WriteFile(os.Args[1], fw.Build(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
