package guest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const helperEnv = "PETFABRIC_GUEST_HELPER_OUT"

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

// killedHelper is what TestGuestLeavesNothing runs in its child process (the same test,
// with helperEnv set): start a guest that holds, report the pids, wait to be killed.
func killedHelper(t *testing.T, out string) {
	e := New(t, Options{})
	go func() {
		for {
			time.Sleep(100 * time.Millisecond)
			if _, i := find(e.Lines(), "PFG-STEP", "hold"); i >= 0 && e.QemuPID() != 0 {
				_ = os.WriteFile(out, fmt.Appendf(nil, "%s %d %d %d\n", e.NS, e.ctlPort, e.TgtdPID(), e.QemuPID()), 0o644)
				return
			}
		}
	}()
	e.Boot(FlexBinary(t, ""), Initiator, "step hold\nsleep 600\n", 10*time.Minute)
}

// TestGuestLeavesNothing: when the test process is killed with SIGKILL in the middle of a
// guest run, qemu and tgtd die with it (Pdeathsig) and the next run's sweep removes the
// namespace and tgtd control socket it left. (The normal end is checked after
// TestGuestMountWriteRemount's guest.)
func TestGuestLeavesNothing(t *testing.T) {
	if out := os.Getenv(helperEnv); out != "" {
		killedHelper(t, out)
		return
	}
	var ns string
	var tgtd, qemu, port int
	t.Run("killed test process", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "pids")
		child := exec.Command(os.Args[0], "-test.run", "^TestGuestLeavesNothing$", "-test.v")
		// The child's temp files (its guest's initrd, its flex build) land in ours, removed with it.
		child.Env = append(os.Environ(), helperEnv+"="+out, "TMPDIR="+t.TempDir())
		var log strings.Builder
		child.Stdout, child.Stderr = &log, &log
		require.NoError(t, child.Start())
		var line []byte
		for deadline := time.Now().Add(bootTimeout); len(line) == 0 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			line, _ = os.ReadFile(out)
		}
		if len(line) == 0 {
			_ = child.Process.Kill()
			_ = child.Wait()
			t.Fatalf("the helper's guest did not come up:\n%s", log.String())
		}
		_, err := fmt.Sscanf(string(line), "%s %d %d %d", &ns, &port, &tgtd, &qemu)
		require.NoError(t, err)
		require.True(t, alive(qemu) && alive(tgtd), "guest running before the kill")
		require.NoError(t, child.Process.Signal(syscall.SIGKILL))
		_ = child.Wait()
		assert.Eventually(t, func() bool { return !alive(qemu) && !alive(tgtd) }, 10*time.Second, 50*time.Millisecond,
			"qemu and tgtd die with the killed test process")
		assert.True(t, nsExists(ns), "the namespace outlives a SIGKILL (only a sweep can remove it)")
		SweepStale()
		assert.False(t, nsExists(ns), "the sweep removed the dead process's namespace")
		assert.NoFileExists(t, tgtSocket(port), "and its tgtd control socket")
	})
}
