package flex

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"

	"github.com/petfabric/petfabric/internal/testenv"
	"github.com/petfabric/petfabric/pkg/iscsi"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// hangingMounter is the mounter seam of a node whose iSCSI session died: a plain unmount of the
// volume's filesystem never returns. With force it behaves as k8s.io/mount-utils' Mounter does:
// the plain attempt is given umountTimeout, then umount -f (here: MNT_FORCE) runs.
type hangingMounter struct {
	mount.Interface
	release      chan struct{}
	mu           sync.Mutex
	plainCalls   int
	forceTimeout time.Duration
}

func (m *hangingMounter) Unmount(string) error {
	m.mu.Lock()
	m.plainCalls++
	m.mu.Unlock()
	<-m.release
	return nil
}

// forceMounter adds UnmountWithForce to hangingMounter.
type forceMounter struct{ *hangingMounter }

func (m forceMounter) UnmountWithForce(target string, umountTimeout time.Duration) error {
	m.mu.Lock()
	m.forceTimeout = umountTimeout
	m.mu.Unlock()
	time.Sleep(umountTimeout) // the plain attempt hangs for the whole timeout
	return unix.Unmount(target, unix.MNT_FORCE)
}

type nopInitiator struct{}

func (nopInitiator) Login(context.Context, iscsi.LoginRequest) (*iscsi.LoginResult, error) {
	return &iscsi.LoginResult{}, nil
}
func (nopInitiator) Logout(context.Context, iscsi.LogoutRequest) error { return nil }

// attachedTmpfs sets up a driver whose state holds one volume mounted (a tmpfs stands in for
// the iSCSI filesystem) at its global path, used by one pod directory.
func attachedTmpfs(t *testing.T, m mount.Interface) (*Driver, string) {
	testenv.Root(t)
	root := t.TempDir()
	cfg := &NodeConfig{NodeName: "n", StateDir: filepath.Join(root, "state"), GlobalMountDir: filepath.Join(root, "global"),
		LogFile: filepath.Join(root, "log"), InitiatorNameFile: filepath.Join(root, "initiatorname"),
		ForceUnmountAfter: Duration(200 * time.Millisecond)}
	require.NoError(t, cfg.complete())
	d := &Driver{Config: cfg, State: State{Dir: cfg.StateDir}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Initiator: nopInitiator{}, Mounter: m}
	g := d.globalPath("pv-hung")
	require.NoError(t, os.MkdirAll(g, 0o750))
	require.NoError(t, unix.Mount("tmpfs", g, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(g, unix.MNT_DETACH) })
	pod := filepath.Join(root, "pods", "p", "vol")
	require.NoError(t, d.State.Save(&flexstate.Record{VolumeID: "pv-hung", Phase: flexstate.PhaseMounted, GlobalMountPath: g,
		Mounts: []string{pod}, InitiatorName: "iqn.1993-08.org.debian:01:n"}))
	return d, pod
}

// unmountWithin runs d.Unmount and fails the test if it has not returned after limit.
func unmountWithin(t *testing.T, d *Driver, pod string, limit time.Duration) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- d.Unmount(ctx, pod) }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(limit):
		t.Fatalf("unmount still blocked after %s: a hung filesystem hangs kubelet", limit)
		return 0, nil
	}
}

func TestUnmountOfHungGlobalMountIsForcedAfterTimeout(t *testing.T) {
	hm := &hangingMounter{release: make(chan struct{})}
	defer close(hm.release)
	d, pod := attachedTmpfs(t, forceMounter{hm})
	took, err := unmountWithin(t, d, pod, 10*time.Second)
	require.NoError(t, err)
	assert.Equal(t, 200*time.Millisecond, hm.forceTimeout, "UnmountWithForce with the configured forceUnmountAfter")
	assert.Zero(t, hm.plainCalls, "never the plain, unbounded unmount")
	assert.Less(t, took, 5*time.Second)
	table, err := readMountTable()
	require.NoError(t, err)
	assert.Nil(t, table.find(d.globalPath("pv-hung")), "the global mount is gone")
	rec, err := d.State.Load("pv-hung")
	require.NoError(t, err)
	assert.Nil(t, rec, "detached: the record is gone")
}

func TestUnmountOfHungGlobalMountWithoutForceGivesUp(t *testing.T) {
	hm := &hangingMounter{release: make(chan struct{})}
	defer close(hm.release)
	d, pod := attachedTmpfs(t, hm)
	took, err := unmountWithin(t, d, pod, 10*time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), d.globalPath("pv-hung"))
	assert.Contains(t, err.Error(), "did not finish within 400ms")
	assert.Less(t, took, 5*time.Second)
	rec, lerr := d.State.Load("pv-hung")
	require.NoError(t, lerr)
	require.NotNil(t, rec, "the record stays, so the next unmount retries")
	assert.NotEqual(t, flexstate.PhaseDetached, rec.Phase)
}
