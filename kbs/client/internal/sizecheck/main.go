// Command sizecheck links kbs/client the way flare-init does, so `make
// kbs-client-size` can show what the client adds to a static initrd binary.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/flarekit/terraform-provider-flare/kbs/client"
)

func main() {
	_, err := client.GetResource(context.Background(), client.Options{URL: os.Getenv("KBS_URL")})
	fmt.Println(err)
}
