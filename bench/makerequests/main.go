// Command makerequests writes request zips as NVFlare 2.9's
// `nvflare cert request` does, for the distributed-provisioning benchmark
// of `make bench` (the sites' side: keys are made here and thrown away).
//
//	go run ./bench/makerequests -project quickstart -n 1000 -out DIR
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/flarekit/terraform-provider-flare/internal/approve/approvetest"
)

func main() {
	project := flag.String("project", "quickstart", "project name the requests are for")
	n := flag.Int("n", 1000, "number of requests")
	first := flag.Int("first", 1, "number of the first site (site-<n>)")
	out := flag.String("out", "requests", "directory for <name>.request.zip")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, *n)
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				name := fmt.Sprintf("site-%d", i)
				r, err := approvetest.New(*project, name, "nvidia", "client", "")
				if err == nil {
					var b []byte
					if b, err = r.Zip(); err == nil {
						err = os.WriteFile(filepath.Join(*out, name+".request.zip"), b, 0o644)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
				}
			}
		}()
	}
	for i := *first; i < *first+*n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		log.Fatal(err)
	}
}
