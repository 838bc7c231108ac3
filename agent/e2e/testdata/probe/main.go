// Command probe is the workload of the CVM end-to-end test
// (TestCVMKeyRelease): it runs as the image's entrypoint under flare-init
// and prints what it finds, one "probe: <check> <result>" line each, to
// the workload log the test reads from the console.
package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	// The startup kit, bound from the encrypted root at the place
	// NVFlare's scripts expect it.
	if b, err := os.ReadFile("/user_config/nvflare/startup/rootCA.pem"); err == nil && len(b) > 0 {
		fmt.Println("probe: startup-kit ok")
	} else {
		fmt.Println("probe: startup-kit missing", err)
	}
	if err := os.WriteFile("/user_config/nvflare/x", []byte("x"), 0o600); err == nil {
		fmt.Println("probe: startup-kit writable")
	} else {
		fmt.Println("probe: startup-kit read-only")
	}
	if err := os.WriteFile("/vault/workspace/probe", []byte("x"), 0o600); err == nil {
		fmt.Println("probe: workspace ok")
	} else {
		fmt.Println("probe: workspace failed", err)
	}
	fmt.Printf("probe: uid %d\n", os.Getuid())
	// PROBE_OUT: host:port pairs; the firewall decides which connect.
	for _, hp := range strings.Fields(os.Getenv("PROBE_OUT")) {
		c, err := net.DialTimeout("tcp", hp, 3*time.Second)
		if err != nil {
			fmt.Printf("probe: connect %s refused\n", hp)
			continue
		}
		fmt.Fprintf(c, "hello from the CVM\n")
		c.Close()
		fmt.Printf("probe: connect %s ok\n", hp)
	}
	fmt.Println("probe: done")
}
