package main

import (
	"os"

	"github.com/petfabric/petfabric/pkg/flex"
)

// The FlexVolume verbs. kubelet runs `<plugin dir>/datera~iscsi/iscsi <verb> args…`; every
// call prints exactly one JSON object (pkg/flex.Main).
func init() {
	for _, verb := range []string{flex.VerbInit, flex.VerbMount, flex.VerbUnmount} {
		modes[verb] = mode{summary: "FlexVolume " + verb + " (called by kubelet)", run: flexVerb(verb)}
	}
	// Every other FlexVolume verb answers "Not supported" without cluttering the usage text.
	unknownMode = func(name string, args []string) (int, bool) {
		if !flex.IsFlexVolumeVerb(name) {
			return 0, false
		}
		return flexVerb(name)(args), true
	}
}

func flexVerb(verb string) func(args []string) int {
	return func(args []string) int {
		return flex.Main(verb, args, os.Stdout, flex.MainOptions{RedirectStdio: true})
	}
}
