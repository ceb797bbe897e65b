// Command image builds petfabric's container image without a container daemon (`make image`):
// an OCI image layout and a `docker load`-able tarball under -out (see hack/image/imagebuild for
// what the image holds). It prints the manifest digest, the tag and both sizes.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/petfabric/petfabric/hack/image/imagebuild"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	out := fs.String("out", "bin", "output directory ("+imagebuild.LayoutDir+", "+imagebuild.TarballName+")")
	version := fs.String("version", "devel", "version for the label and the tag (the Makefile's VERSION)")
	ldflags := fs.String("ldflags", "", "linker flags stamping the version (the Makefile's LDFLAGS)")
	goarch := fs.String("goarch", "", "target architecture (default: this machine's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	start := time.Now()
	res, err := imagebuild.Build(imagebuild.Options{OutDir: *out, Version: *version, LDFlags: *ldflags, GOARCH: *goarch})
	if err != nil {
		return err
	}
	sizes, err := imagebuild.Measure(res.Image)
	if err != nil {
		return err
	}
	fmt.Printf("image %s\ndigest %s\nOCI layout %s\ntarball %s (docker load -i)\nsize %s compressed, %s uncompressed\nbuilt in %s\n",
		res.Tag, res.Digest, res.LayoutPath, res.TarballPath, mib(sizes.Compressed), mib(sizes.Uncompressed), time.Since(start).Round(time.Millisecond))
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
