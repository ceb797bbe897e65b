// Package version says which build of petfabric is running: the version stamped at link time,
// or, without a stamp, "devel" plus the VCS revision the Go toolchain recorded. All three
// programs print it on --version (the flex binary on its `version` mode) and the long-running
// ones export it as the metric petfabric_build_info{version,goversion} = 1, so a rolling upgrade
// shows which pods run which build.
//
// Stamp a release build with
//
//	go build -ldflags "-X github.com/petfabric/petfabric/pkg/version.Version=v1.2.3" ./cmd/...
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is set at link time (-ldflags -X); empty means an unstamped build.
var Version = ""

// readBuildInfo is runtime/debug.ReadBuildInfo; tests replace it.
var readBuildInfo = debug.ReadBuildInfo

// Get returns the stamped version, or for an unstamped build "devel" followed by the VCS
// revision (12 hex digits, "-dirty" when the work tree had changes) when the toolchain
// recorded one: "devel+3f2a9c1b0d4e-dirty".
func Get() string {
	if Version != "" {
		return Version
	}
	v := "devel"
	info, ok := readBuildInfo()
	if !ok {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return v
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v += "+" + rev
	if dirty {
		v += "-dirty"
	}
	return v
}

// String is the line a program prints for --version: "<program> <version> (<go version>)".
func String(program string) string {
	return fmt.Sprintf("%s %s (%s)", program, Get(), runtime.Version())
}

// NewCollector returns the gauge petfabric_build_info{version,goversion}, always 1.
func NewCollector() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "petfabric_build_info",
		Help:        "Always 1; the labels say which petfabric build runs and with which Go toolchain.",
		ConstLabels: prometheus.Labels{"version": Get(), "goversion": runtime.Version()},
	}, func() float64 { return 1 })
}
