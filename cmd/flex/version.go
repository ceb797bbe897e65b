package main

import (
	"fmt"

	"github.com/petfabric/petfabric/pkg/version"
)

// `flex version` (or `flex --version`) prints the build. kubelet never sends either: they are
// not FlexVolume verbs, so the driver protocol is untouched.
func init() {
	modes["version"] = mode{summary: "print the version and exit", run: func([]string) int {
		fmt.Println(version.String("flex"))
		return 0
	}}
}
