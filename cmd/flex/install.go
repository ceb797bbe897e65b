package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/petfabric/petfabric/pkg/flex"
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
	nodeConfig := fs.String("node-config", "", "node config file (JSON, pkg/flex NodeConfig) to validate and install at --node-config-dest, where the driver reads it; empty: none installed")
	nodeConfigDest := fs.String("node-config-dest", flex.DefaultConfigPath, "where --node-config is installed (the host's "+flex.DefaultConfigPath+" as mounted in this container)")
	check := fs.Bool("check", false, "check mode: validate the flags and --node-config without installing anything; exit 0, or print the problem and exit 2")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "install: unexpected arguments %q\n", fs.Args())
		return 2
	}
	for _, p := range []struct{ flag, path string }{{"--plugin-dir", *dir}, {"--node-config-dest", *nodeConfigDest}} {
		if !filepath.IsAbs(p.path) {
			fmt.Fprintf(os.Stderr, "install: %s %q must be absolute\n", p.flag, p.path)
			return 2
		}
	}
	if *nodeConfig != "" {
		if err := flex.CheckConfigFile(*nodeConfig); err != nil {
			fmt.Fprintf(os.Stderr, "install: --node-config: %v\n", err)
			return 2
		}
	}
	if *check {
		fmt.Println("install: check passed: the flags and the node config are valid")
		return 0
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
	if *nodeConfig != "" {
		// Written after the driver: the new driver reads the old config's fields, while the
		// old driver refuses fields it does not know (a new config), so this order never
		// leaves kubelet a driver that cannot read the config next to it.
		if err := installFile(*nodeConfig, filepath.Dir(*nodeConfigDest), filepath.Base(*nodeConfigDest), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "install: node config: %v\n", err)
			return 1
		}
		fmt.Printf("installed %s\n", *nodeConfigDest)
	}
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
	if err := installFile(src, dir, "iscsi", 0o755); err != nil {
		return "", err
	}
	return filepath.Join(dir, "iscsi"), nil
}

// installFile copies src to dir/name (dir made if missing) through a hidden temp file in dir,
// fsynced and renamed into place: a reader sees the old file or the whole new one.
func installFile(src, dir, name string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dst := filepath.Join(dir, name)
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
