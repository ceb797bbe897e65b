package flex

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
	"github.com/petfabric/petfabric/pkg/iscsi"
)

// BenchmarkMountAttachedVolume measures what the per-mount credential check adds to the mount
// of a volume already attached on the node (the bind of one more pod), in-process against the
// simulator over HTTP with real loop devices and mounts. Sub-benchmarks, same run:
//
//	no-check      the code path without the check (the driver before issue 9): the baseline
//	check-cold    the check with an empty cache: a new Datera client, login, GET app_instance,
//	              cache write (what a process pays when the cache misses)
//	check-cached  the check answered from the cache (HMAC key read, one file read)
//
// Each op is one mount into a new pod directory; the unmount that follows is not timed.
func BenchmarkMountAttachedVolume(b *testing.B) {
	env := flextest.NewEnv(b, flextest.EnvOptions{})
	b.Setenv(EnvConfig, env.ConfigFile)
	cfg, err := LoadConfig()
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	klog.SetSlogLogger(log) // mount-utils logs through klog
	d := &Driver{Config: cfg, State: State{Dir: cfg.StateDir}, Log: log,
		Initiator: &flextest.LoopInitiator{Dir: env.TargetsDir, ByPathDir: cfg.ByPathDir, Name: env.InitiatorName},
		Devices:   iscsi.Devices{ByPathDir: cfg.ByPathDir, SysfsDir: cfg.SysfsDir},
		Mounter:   mount.NewWithoutSystemd(""), Exec: utilexec.New(), NewDatera: newDateraClient(cfg, log)}
	ctx := context.Background()
	id := "pv-bench"
	opts := env.Options(id, nil)
	parse := func(dir string) *MountRequest {
		req, err := ParseMountRequest(dir, opts, cfg.DefaultFSType)
		if err != nil {
			b.Fatal(err)
		}
		return req
	}
	holder := env.PodDir("holder")
	if err := d.Mount(ctx, parse(holder)); err != nil { // attach (and format) once
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Unmount(ctx, holder) })
	cacheEntries := func() []string {
		files, _ := filepath.Glob(filepath.Join(cfg.StateDir, accessCacheDir, "[0-9a-f]*"))
		return files
	}

	for _, v := range []struct {
		name      string
		off, cold bool
	}{
		{"no-check", true, false},
		{"check-cold", false, true},
		{"check-cached", false, false},
	} {
		b.Run(v.name, func(b *testing.B) {
			d.accessCheckOff = v.off
			dir := env.PodDir("bench-" + v.name)
			req := parse(dir)
			once := func() {
				if err := d.Mount(ctx, req); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := d.Unmount(ctx, dir); err != nil {
					b.Fatal(err)
				}
				if v.cold {
					for _, f := range cacheEntries() {
						_ = os.Remove(f)
					}
				}
				b.StartTimer()
			}
			once() // warm: for check-cached this fills the cache
			if !v.off && len(cacheEntries()) == 0 && !v.cold {
				b.Fatal("the check left no cache entry")
			}
			b.ResetTimer()
			for range b.N {
				once()
			}
		})
	}
}

// BenchmarkVerifyAccess isolates the check itself (no mount), against the simulator over HTTP:
// cold (new client, login, GET, cache write) and cached (key read, HMAC, one file read).
func BenchmarkVerifyAccess(b *testing.B) {
	sim, err := fake.New(fake.Options{Users: map[string]string{flextest.User: flextest.Password}})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	b.Cleanup(srv.Close)
	dir := b.TempDir()
	cfg := &NodeConfig{NodeName: "n", StateDir: filepath.Join(dir, "state"), GlobalMountDir: filepath.Join(dir, "g"),
		LogFile: filepath.Join(dir, "log"), InitiatorNameFile: filepath.Join(dir, "i")}
	if err := cfg.complete(); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	d := &Driver{Config: cfg, State: State{Dir: cfg.StateDir}, Log: log, NewDatera: newDateraClient(cfg, log)}
	ctx := context.Background()
	admin, err := datera.New(datera.Config{Endpoint: srv.URL, Username: flextest.User, Password: flextest.Password})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := admin.CreateAppInstance(ctx, datera.CreateVolumeRequest{Name: "pv-bench", SizeGiB: 1, ReplicaCount: 1}); err != nil {
		b.Fatal(err)
	}
	req := &MountRequest{VolumeID: "pv-bench", Endpoint: srv.URL}
	creds := &credentials{Username: flextest.User, Password: flextest.Password, Source: "secret"}
	for _, cold := range []bool{true, false} {
		b.Run(map[bool]string{true: "cold", false: "cached"}[cold], func(b *testing.B) {
			if err := d.verifyAccess(ctx, log, req, creds, nil, false); err != nil { // key, and an entry for "cached"
				b.Fatal(err)
			}
			entries, _ := filepath.Glob(filepath.Join(cfg.StateDir, accessCacheDir, "[0-9a-f]*"))
			b.ResetTimer()
			for range b.N {
				if cold {
					b.StopTimer()
					for _, f := range entries {
						_ = os.Remove(f)
					}
					b.StartTimer()
				}
				if err := d.verifyAccess(ctx, log, req, creds, nil, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
