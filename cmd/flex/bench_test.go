package main

import (
	"context"
	"os/exec"
	"testing"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
)

func fakeFault422() fake.Fault { return fake.Fault{Burst: 1, Status: 422} }

// BenchmarkExecInit is kubelet's `init` probe: one exec of the built driver, wall time.
func BenchmarkExecInit(b *testing.B) {
	cfg, _ := minimalConfig(b)
	for b.Loop() {
		cmd := exec.Command(driverBin, "init")
		cmd.Env = []string{flex.EnvConfig + "=" + cfg}
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkExecTrue is the baseline for BenchmarkExecInit: one exec of /bin/true.
func BenchmarkExecTrue(b *testing.B) {
	for b.Loop() {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMountUnmountFormatted: mount + unmount of an already formatted volume through the
// real binary (two processes), against the simulator over HTTP with the loop stand-in. No mkfs,
// and the device appears at once (the stand-in creates the link during login), so this is the
// driver's orchestration time.
func BenchmarkMountUnmountFormatted(b *testing.B) {
	env := flextest.NewEnv(b, flextest.EnvOptions{})
	id := "pv-bench"
	opts := env.Options(id, nil)
	dir := env.PodDir("bench")
	call := func(args ...string) {
		r := run(b, env.ConfigFile, nil, args...)
		if r.Reply.Status != flex.StatusSuccess {
			b.Fatalf("%v: %s", args[0], r.Reply.Message)
		}
	}
	call("mount", dir, opts) // first use: create and format
	call("unmount", dir)
	for b.Loop() {
		call("mount", dir, opts)
		call("unmount", dir)
	}
}

// BenchmarkDateraCallsOnly is the baseline for BenchmarkMountUnmountFormatted: the same Datera
// requests a mount and an unmount make (two logins, find volume, register initiator, ACL add,
// wait available, ACL remove), issued in-process over HTTP to the same simulator.
func BenchmarkDateraCallsOnly(b *testing.B) {
	env := flextest.NewEnv(b, flextest.EnvOptions{})
	ctx := context.Background()
	id := "pv-bench"
	newClient := func() *datera.Client {
		c, err := datera.New(datera.Config{Endpoint: env.SimURL, Username: flextest.User, Password: flextest.Password})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	c := newClient()
	req := datera.CreateVolumeRequest{Name: id, SizeGiB: 1, ReplicaCount: 1}
	if _, err := c.CreateAppInstance(ctx, req); err != nil {
		b.Fatal(err)
	}
	if _, err := c.SetAdminState(ctx, id, datera.Online, false); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		c := newClient()
		if _, err := c.CreateAppInstance(ctx, req); err != nil {
			b.Fatal(err)
		}
		if _, err := c.RegisterInitiator(ctx, flextest.InitiatorName, "petfabric-node-a", true); err != nil {
			b.Fatal(err)
		}
		if err := c.AddInitiatorToACL(ctx, id, datera.StorageInstanceName, flextest.InitiatorName); err != nil {
			b.Fatal(err)
		}
		if _, err := c.WaitAvailable(ctx, id); err != nil {
			b.Fatal(err)
		}
		if err := newClient().RemoveInitiatorFromACL(ctx, id, datera.StorageInstanceName, flextest.InitiatorName); err != nil {
			b.Fatal(err)
		}
	}
}
