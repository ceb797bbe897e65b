package iscsi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/petfabric/petfabric/internal/testenv"
)

func TestWaitForLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "dev")
	require.NoError(t, os.WriteFile(target, nil, 0o600))
	a := filepath.Join(dir, "ip-192.0.2.1:3260-iscsi-"+testIQN+"-lun-0")
	b := filepath.Join(dir, "ip-192.0.2.2:3260-iscsi-"+testIQN+"-lun-0")

	t.Run("appears later", func(t *testing.T) {
		go func() {
			time.Sleep(30 * time.Millisecond)
			_ = os.Symlink(target, a)
		}()
		t.Cleanup(func() { _ = os.Remove(a) })
		start := time.Now()
		got, err := WaitForLinks(context.Background(), []string{a}, WaitOptions{Timeout: 5 * time.Second})
		require.NoError(t, err)
		assert.Equal(t, []string{a}, got)
		assert.Less(t, time.Since(start), time.Second, "found quickly after it appeared")
	})
	t.Run("never appears: bounded, ErrNoDevice", func(t *testing.T) {
		start := time.Now()
		_, err := WaitForLinks(context.Background(), []string{a}, WaitOptions{Timeout: 100 * time.Millisecond})
		require.ErrorIs(t, err, ErrNoDevice)
		assert.Less(t, time.Since(start), 2*time.Second)
	})
	t.Run("one of two paths: grace, then the live one", func(t *testing.T) {
		require.NoError(t, os.Symlink(target, a))
		t.Cleanup(func() { _ = os.Remove(a) })
		start := time.Now()
		got, err := WaitForLinks(context.Background(), []string{a, b}, WaitOptions{Timeout: 10 * time.Second, Grace: 80 * time.Millisecond})
		require.NoError(t, err)
		assert.Equal(t, []string{a}, got)
		assert.Less(t, time.Since(start), 2*time.Second)
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := WaitForLinks(ctx, []string{b}, WaitOptions{Timeout: time.Minute})
		require.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
	})
}

func TestResolveBlockDeviceRefusesNonBlock(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(f, nil, 0o600))
	l := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(f, l))
	_, err := ResolveBlockDevice(l)
	require.ErrorContains(t, err, "not a block device")
	_, err = ResolveBlockDevice(filepath.Join(dir, "missing"))
	require.Error(t, err)
}

func TestSessionHostAndScan(t *testing.T) {
	sys := t.TempDir()
	scanA := sysfsSession(t, sys, "host3", "session1", portalA)
	sysfsSession(t, sys, "host4", "session2", portalB)
	d := Devices{SysfsDir: sys}
	host, err := d.SessionHost(testIQN, portalB)
	require.NoError(t, err)
	assert.Equal(t, "host4", host)
	require.NoError(t, d.ScanLUN(testIQN, portalA, 0))
	b, err := os.ReadFile(scanA)
	require.NoError(t, err)
	assert.Equal(t, "0 0 0", string(b))
	_, err = d.SessionHost(testIQN, "192.0.2.9:3260")
	require.ErrorContains(t, err, "no iSCSI session")
}

// TestIscsiadmLogoutDeletesDevicesFirst builds a by-path link to a real block device node named
// like a SCSI disk, held by a dm-multipath map, and checks the in-tree order: multipath flush,
// SCSI delete, logout, record delete.
func TestIscsiadmLogoutDeletesDevicesFirst(t *testing.T) {
	testenv.Root(t)
	dir := t.TempDir()
	sdz := filepath.Join(dir, "sdz")
	// A block device node (major 7 = loop, an unused minor); nothing ever opens it.
	require.NoError(t, unix.Mknod(sdz, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 1<<19))))
	byPath := filepath.Join(dir, "by-path")
	require.NoError(t, os.MkdirAll(byPath, 0o755))
	d := Devices{ByPathDir: byPath, SysfsDir: filepath.Join(dir, "sys")}
	require.NoError(t, os.Symlink(sdz, d.ByPathLink(portalA, testIQN, 0)))
	del := filepath.Join(dir, "sys", "block", "sdz", "device", "delete")
	require.NoError(t, os.MkdirAll(filepath.Dir(del), 0o755))
	require.NoError(t, os.WriteFile(del, nil, 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sys", "block", "sdz", "holders", "dm-3"), 0o755))

	a := &Iscsiadm{Devices: d, Multipath: true, Exec: scripted(t, []step{
		{"multipath -f /dev/dm-3", "", 0},
		{node(portalA, "--logout"), outNoMatching, 21},
		{node(portalA, "-o delete"), "", 0},
	})}
	require.NoError(t, a.Logout(context.Background(), LogoutRequest{IQN: testIQN, Portals: []string{portalA}}))
	b, err := os.ReadFile(del)
	require.NoError(t, err)
	assert.Equal(t, "1", string(b))
}
