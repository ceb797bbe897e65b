package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// DefaultPluginDir is kubelet's default --volume-plugin-dir.
const DefaultPluginDir = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"

func init() {
	modes["install"] = mode{
		summary: "copy this binary atomically to <plugin dir>/datera~iscsi/iscsi",
		run:     runInstall,
	}
}

func runInstall(args []string) int {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	dir := fs.String("plugin-dir", DefaultPluginDir, "kubelet's FlexVolume plugin directory (--volume-plugin-dir)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "install: unexpected arguments %q\n", fs.Args())
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "install: %v\n", err)
		return 1
	}
	dst, err := install(self, *dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "install: %v\n", err)
		return 1
	}
	fmt.Printf("installed %s\n", dst)
	return 0
}

// install copies src to <pluginDir>/datera~iscsi/iscsi through a hidden temp file in the same
// directory (kubelet's prober ignores names starting with "."), fsyncs it and renames it into
// place, so kubelet never executes a half-written driver.
func install(src, pluginDir string) (string, error) {
	if !filepath.IsAbs(pluginDir) {
		return "", fmt.Errorf("plugin dir %q must be absolute", pluginDir)
	}
	dir := filepath.Join(pluginDir, "datera~iscsi")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "iscsi")
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".iscsi.tmp-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return "", fmt.Errorf("copying %s: %w", src, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return dst, nil
}
