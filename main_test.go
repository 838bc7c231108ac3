package main

import (
	"os"
	"strings"
	"testing"
)

// clearLogEnv unsets every TF_LOG* variable for the rest of the test.
func clearLogEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "TF_LOG") {
			t.Setenv(name, "") // restored after the test
			os.Unsetenv(name)
		}
	}
}

func TestQuietSDKLogs(t *testing.T) {
	clearLogEnv(t)
	for _, v := range sdkLogLevels {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	quietSDKLogs()
	for _, v := range sdkLogLevels {
		if got := os.Getenv(v); got != "off" {
			t.Errorf("without TF_LOG: %s=%q, want off", v, got)
		}
	}

	// Any TF_LOG* setting leaves the SDK's logging as it is.
	for _, set := range []string{"TF_LOG", "TF_LOG_PROVIDER", "TF_LOG_PATH", "TF_LOG_SDK_FRAMEWORK"} {
		clearLogEnv(t)
		t.Setenv(set, "trace")
		quietSDKLogs()
		for _, v := range sdkLogLevels {
			if _, ok := os.LookupEnv(v); ok && v != set {
				t.Errorf("with %s set: %s=%q, want it left unset", set, v, os.Getenv(v))
			}
		}
	}
}
