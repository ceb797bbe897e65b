// Command flex is the node-side binary of petfabric. kubelet runs it as the FlexVolume driver
// datera/iscsi; the node DaemonSet runs its long-lived modes. Each mode registers itself in
// `modes` from its own file.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

// mode is a subcommand: run gets the arguments after the mode name and returns the exit code.
type mode struct {
	summary string
	run     func(args []string) int
}

var modes = map[string]mode{}

// unknownMode, when set, may handle a name no mode registered (the FlexVolume driver answers the
// kubelet verbs it does not implement with "Not supported" JSON); ok=false falls back to usage.
var unknownMode func(name string, args []string) (code int, ok bool)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	if os.Args[1] == "--version" {
		os.Args[1] = "version"
	}
	m, ok := modes[os.Args[1]]
	if !ok && unknownMode != nil {
		if code, handled := unknownMode(os.Args[1], os.Args[2:]); handled {
			os.Exit(code)
		}
	}
	if !ok {
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			usage(os.Stdout)
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "flex: unknown mode %q\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
	os.Exit(m.run(os.Args[2:]))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: flex <mode> [arguments]")
	fmt.Fprintln(w, "\nThe petfabric node binary: the FlexVolume driver datera/iscsi and its node-side modes.")
	fmt.Fprintln(w, "\nmodes:")
	names := make([]string, 0, len(modes))
	for n := range modes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, modes[n].summary)
	}
	if len(names) == 0 {
		fmt.Fprintln(w, "  (none yet)")
	}
}
