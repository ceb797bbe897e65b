package flex

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	utilexec "k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/petfabric/petfabric/internal/testenv"
)

// loopDevice attaches a new sparse file of size bytes and returns the loop device; cleanup
// detaches it.
func loopDevice(t *testing.T, size int64, prepare func(file string)) string {
	t.Helper()
	testenv.Root(t)
	testenv.LookPath(t, "losetup")
	testenv.LookPath(t, "blkid")
	f := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(f, nil, 0o600))
	require.NoError(t, os.Truncate(f, size))
	if prepare != nil {
		prepare(f)
	}
	out, err := exec.Command("losetup", "--find", "--show", f).CombinedOutput()
	require.NoError(t, err, "%s", out)
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %v: %s", name, args, out)
}

func writeAt(t *testing.T, file string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func TestProbeDeviceOnLoopDevices(t *testing.T) {
	const mib = 1 << 20
	ex := utilexec.New()
	tests := []struct {
		name    string
		size    int64
		prepare func(t *testing.T, file string)
		want    DeviceProbe
	}{
		{"zeros are blank", 64 * mib, nil, DeviceProbe{Blank: true, Size: 64 * mib}},
		{"ext4", 64 * mib, func(t *testing.T, f string) { run(t, testenv.LookPath(t, "mkfs.ext4"), "-q", "-F", f) }, DeviceProbe{FSType: "ext4", Size: 64 * mib}},
		{"xfs", 320 * mib, func(t *testing.T, f string) { run(t, testenv.LookPath(t, "mkfs.xfs"), "-q", "-f", f) }, DeviceProbe{FSType: "xfs", Size: 320 * mib}},
		{"data without signature at the start", 64 * mib, func(t *testing.T, f string) {
			writeAt(t, f, 4096, []byte("database page 1"))
		}, DeviceProbe{Other: "data without a signature blkid recognizes", Size: 64 * mib}},
		{"data without signature at the end", 64 * mib, func(t *testing.T, f string) {
			writeAt(t, f, 64*mib-100, []byte("trailer"))
		}, DeviceProbe{Other: "data without a signature blkid recognizes", Size: 64 * mib}},
		{"MBR partition table", 64 * mib, func(t *testing.T, f string) {
			mbr := make([]byte, 512)
			copy(mbr[446:], []byte{0x00, 0x20, 0x21, 0x00, 0x83, 0x14, 0x2c, 0x00, 0x00, 0x08, 0, 0, 0x00, 0x10, 0, 0})
			mbr[510], mbr[511] = 0x55, 0xaa
			writeAt(t, f, 0, mbr)
		}, DeviceProbe{Other: "a partition table (dos)", Size: 64 * mib}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := loopDevice(t, tc.size, func(f string) {
				if tc.prepare != nil {
					tc.prepare(t, f)
				}
			})
			got, err := ProbeDevice(context.Background(), ex, dev)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	t.Run("missing device is an error, not blank", func(t *testing.T) {
		_, err := ProbeDevice(context.Background(), ex, "/dev/does-not-exist")
		require.Error(t, err)
	})
	t.Run("regular file is an error", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		require.NoError(t, os.WriteFile(f, make([]byte, 4096), 0o600))
		_, err := ProbeDevice(context.Background(), ex, f)
		require.ErrorContains(t, err, "not a block device")
	})
	t.Run("failing blkid is not blank", func(t *testing.T) {
		dev := loopDevice(t, 64*mib, nil)
		for _, code := range []int{1, 4, 8} {
			fe := &testingexec.FakeExec{CommandScript: []testingexec.FakeCommandAction{func(cmd string, args ...string) utilexec.Cmd {
				return testingexec.InitFakeCmd(&testingexec.FakeCmd{CombinedOutputScript: []testingexec.FakeAction{
					func() ([]byte, []byte, error) {
						return []byte("blkid: error"), nil, testingexec.FakeExitError{Status: code}
					},
				}}, cmd, args...)
			}}}
			_, err := ProbeDevice(context.Background(), fe, dev)
			require.ErrorContains(t, err, "blkid failed", "exit %d", code)
		}
	})
}

func TestGuardedExecRefusesUnverifiedMkfs(t *testing.T) {
	testenv.LookPath(t, "mkfs.ext4")
	ctx := context.Background()
	blank := loopDevice(t, 64<<20, nil)
	var formatted []string
	g := &guardedExec{Interface: utilexec.New(), ctx: ctx, formatted: func(dev, _ string, err error) {
		if err == nil {
			formatted = append(formatted, dev)
		}
	}}

	_, err := g.Command("mkfs.ext4", "-F", "-m0", blank).CombinedOutput()
	require.ErrorContains(t, err, "did not verify that device as blank", "not armed")

	other := loopDevice(t, 64<<20, nil)
	g.allowDev = other
	_, err = g.Command("mkfs.ext4", "-F", "-m0", blank).CombinedOutput()
	require.ErrorContains(t, err, "did not verify", "armed for another device")

	withFS := loopDevice(t, 64<<20, func(f string) { run(t, "mkfs.ext4", "-q", "-F", f) })
	g.allowDev = withFS
	_, err = g.Command("mkfs.xfs", "-f", withFS).CombinedOutput()
	require.ErrorContains(t, err, "no longer blank", "re-probed right before mkfs")

	require.ErrorContains(t, g.Command("mkfs.ext4", blank).Start(), "refusing")
	assert.Empty(t, formatted)

	g.allowDev = blank
	out, err := g.Command("mkfs.ext4", "-F", "-m0", blank).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, []string{blank}, formatted)
	p, err := ProbeDevice(ctx, utilexec.New(), blank)
	require.NoError(t, err)
	assert.Equal(t, "ext4", p.FSType)
}
