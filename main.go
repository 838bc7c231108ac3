// Command terraform-provider-flare serves the flare Terraform provider.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/flarekit/terraform-provider-flare/provider"
)

// version is set by the release build with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	var debug bool
	flag.BoolVar(&debug, "debug", false, "run the provider with support for debuggers like delve")
	flag.Parse()
	if !debug {
		quietSDKLogs()
	}

	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: "registry.terraform.io/flarekit/flare",
		Debug:   debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}

// sdkLogLevels are the plugin SDK's log settings (terraform-plugin-go and
// terraform-plugin-framework read them at each request).
var sdkLogLevels = []string{"TF_LOG_SDK", "TF_LOG_SDK_PROTO", "TF_LOG_SDK_FRAMEWORK"}

// quietSDKLogs turns the plugin SDK's own logging off when Terraform runs
// without any TF_LOG* setting (the provider inherits Terraform's
// environment). The SDK logs at trace level unless told otherwise and
// leaves the filtering to Terraform, which without TF_LOG or
// TF_LOG_PROVIDER discards every line: for flare_clients at a thousand
// clients that was megabytes of JSON per request, encoded here and decoded
// by Terraform, and 40% of the CPU of adding one client. With any TF_LOG*
// variable set, logging is left as the SDK does it.
func quietSDKLogs() {
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TF_LOG") {
			return
		}
	}
	for _, v := range sdkLogLevels {
		os.Setenv(v, "off")
	}
}
