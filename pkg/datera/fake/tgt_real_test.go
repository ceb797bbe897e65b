package fake_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/testenv"
	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// tgtd is a private tgtd on 127.0.0.1 for one test.
type tgtd struct {
	controlPort int
	portal      string // 127.0.0.1:<port>
}

// startTgtd starts tgtd on a free 127.0.0.1 port with its own control port (never the system
// instance) and stops it when the test ends.
func startTgtd(t *testing.T) *tgtd {
	t.Helper()
	testenv.Root(t)
	bin := testenv.LookPath(t, "tgtd")
	tgtadm := testenv.LookPath(t, "tgtadm")
	testenv.LookPath(t, "iscsi-ls")

	for try := 0; try < 5; try++ {
		control := 20000 + rand.IntN(12000) // tgtd takes control ports up to 32767
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", control)); err == nil {
			continue // another tgtd's (or a stale) control socket
		}
		port := freePort(t)
		var out bytes.Buffer
		cmd := exec.Command(bin, "-f", "--control-port", strconv.Itoa(control),
			"--iscsi", "portal=127.0.0.1:"+strconv.Itoa(port))
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		ready := false
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			select {
			case <-exited:
				t.Logf("tgtd exited early (%s), retrying with other ports", out.String())
				deadline = time.Time{}
				continue
			default:
			}
			if exec.Command(tgtadm, "-C", strconv.Itoa(control), "--op", "show", "--mode", "sys").Run() == nil {
				ready = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !ready {
			_ = cmd.Process.Kill()
			continue
		}
		t.Cleanup(func() {
			// tgtd ignores SIGTERM; it stops on a system delete, else it is killed.
			_ = exec.Command(tgtadm, "-C", strconv.Itoa(control), "--op", "delete", "--mode", "system").Run()
			select {
			case <-exited:
			case <-time.After(3 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			_ = os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d", control))
			_ = os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d.lock", control))
		})
		return &tgtd{controlPort: control, portal: "127.0.0.1:" + strconv.Itoa(port)}
	}
	t.Fatal("could not start tgtd")
	return nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// iscsiLs lists what an initiator can see on a portal (discovery, then a login per target).
func iscsiLs(t *testing.T, initiator, portal string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// With no target visible iscsi-ls may exit non-zero; what matters is what it lists.
	out, _ := exec.CommandContext(ctx, "iscsi-ls", "-s", "-i", initiator, "iscsi://"+portal).CombinedOutput()
	return string(out)
}

// TestRealISCSIExport drives the simulator through the real client and checks, with a real
// initiator (iscsi-ls), that online volumes are tgtd targets visible only to the initiators in
// their Datera ACL, and that offline and delete remove them.
func TestRealISCSIExport(t *testing.T) {
	d := startTgtd(t)
	ctx := context.Background()
	dir := t.TempDir()
	exporter, err := fake.NewTgtExporter(ctx, fake.TgtOptions{ControlPort: d.controlPort, BackingDir: dir})
	require.NoError(t, err)
	s, err := fake.New(fake.Options{Exporter: exporter, Portals: []string{d.portal}})
	require.NoError(t, err)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = exporter.Close(context.Background()) })
	c, err := datera.New(datera.Config{Endpoint: hs.URL, Username: fake.DefaultUser, Password: fake.DefaultPassword,
		PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)

	ai, err := c.CreateAppInstance(ctx, datera.CreateVolumeRequest{Name: "pvc-iscsi", SizeGiB: 1, ReplicaCount: 1})
	require.NoError(t, err)
	_, v, _ := ai.Volume()
	for _, iqn := range []string{iqnA, iqnB} {
		_, err = c.RegisterInitiator(ctx, iqn, "node", true)
		require.NoError(t, err)
	}
	require.NoError(t, c.AddInitiatorToACL(ctx, "pvc-iscsi", datera.StorageInstanceName, iqnA))
	_, err = c.SetAdminState(ctx, "pvc-iscsi", datera.Online, false)
	require.NoError(t, err)
	_, err = c.WaitAvailable(ctx, "pvc-iscsi")
	require.NoError(t, err)
	target, err := c.Access(ctx, "pvc-iscsi")
	require.NoError(t, err)
	require.Equal(t, []string{d.portal}, target.Portals)

	seenByA := iscsiLs(t, iqnA, d.portal)
	assert.Contains(t, seenByA, "Target:"+target.IQN, "the initiator in the ACL sees the target")
	assert.Regexp(t, `Lun:1\s+Type:DIRECT_ACCESS \(Size:10\d\dM\)`, seenByA, "a 1 GiB disk as LUN 1")
	assert.NotContains(t, iscsiLs(t, iqnB, d.portal), target.IQN, "an initiator outside the ACL does not")

	show, err := exec.Command("tgtadm", "-C", strconv.Itoa(d.controlPort), "--lld", "iscsi", "--op", "show", "--mode", "target").CombinedOutput()
	require.NoError(t, err)
	assert.Contains(t, string(show), "SCSI SN: "+v.UUID, "the LUN serial is the volume uuid, as on Datera")
	assert.Contains(t, string(show), filepath.Join(dir, v.UUID+".img"))

	// ACL changes apply to the live target.
	require.NoError(t, c.AddInitiatorToACL(ctx, "pvc-iscsi", datera.StorageInstanceName, iqnB))
	require.NoError(t, c.RemoveInitiatorFromACL(ctx, "pvc-iscsi", datera.StorageInstanceName, iqnA))
	assert.Contains(t, iscsiLs(t, iqnB, d.portal), "Target:"+target.IQN)
	assert.NotContains(t, iscsiLs(t, iqnA, d.portal), target.IQN)

	// Offline removes the target; online brings it back on the same backing file.
	_, err = c.SetAdminState(ctx, "pvc-iscsi", datera.Offline, true)
	require.NoError(t, err)
	assert.NotContains(t, iscsiLs(t, iqnB, d.portal), target.IQN)
	_, err = c.SetAdminState(ctx, "pvc-iscsi", datera.Online, false)
	require.NoError(t, err)
	assert.Contains(t, iscsiLs(t, iqnB, d.portal), "Target:"+target.IQN)

	// Delete removes the target and its data.
	require.NoError(t, c.DeleteAppInstance(ctx, "pvc-iscsi"))
	assert.NotContains(t, iscsiLs(t, iqnB, d.portal), target.IQN)
	_, err = os.Stat(filepath.Join(dir, v.UUID+".img"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}
