package guest

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unmountBound is how long an unmount under a dead portal may take: iscsid gives the session
// up after 5 s (replacement_timeout), the driver forces the unmount after its own bound.
const unmountBound = 90 * time.Second

// exitCode returns a PFG-FLEX line's exit code only (a killed driver prints no reply).
func exitCode(t *testing.T, lines []Line, label string) int {
	t.Helper()
	rc, _ := rcLine(t, lines, "PFG-FLEX", label, "driver call")
	return rc
}

// TestGuestCrashRetryAndDeadPortal, one guest, the driver built with crash points:
//   - kill -9 of the driver right after the iSCSI login (ext4), and right after mkfs (xfs,
//     the driver's default): the retried mount converges, with one session per volume and
//     exactly one format;
//   - the portal dies under a mounted volume (its address leaves the network): the unmount still
//     completes within unmountBound and leaves no session and no mount.
func TestGuestCrashRetryAndDeadPortal(t *testing.T) {
	e := New(t, Options{})
	e.OnLine = func(l Line) {
		if l.Kind == "PFG-STEP" && l.Label == "e-mounted" {
			if err := e.KillPortal(); err != nil {
				t.Errorf("killing the portal: %v", err)
			}
		}
	}
	p1, p2, p3 := podDir("f1"), podDir("f2"), podDir("e")
	script := fmt.Sprintf(`
fmts() { grep '"event":"format"' /var/log/petfabric/flex.log | grep -c "\"volumeID\":\"$1\""; }
export PETFABRIC_FLEX_CRASH_AT=login
flex crash-login mount %[1]s '%[4]s'
export PETFABRIC_FLEX_CRASH_AT=format
flex crash-format mount %[2]s '%[5]s'
unset PETFABRIC_FLEX_CRASH_AT
flex retry-login mount %[1]s '%[4]s' || exit 1
flex retry-format mount %[2]s '%[5]s' || exit 1
check sessions-f iscsiadm -m session
check formats-f1 fmts vol-f1
check formats-f2 fmts vol-f2
echo ok >%[2]s/after-crash.txt && sync || exit 1
flex unmount-f1 unmount %[1]s || exit 1
flex unmount-f2 unmount %[2]s || exit 1
check sessions-f-end iscsiadm -m session
flex e-mount mount %[3]s '%[6]s' || exit 1
echo before >%[3]s/before.txt; sync
step e-mounted
i=0; while iscsiadm -m session -P 1 2>/dev/null | grep -q 'Connection State: LOGGED IN'; do i=$((i+1)); [ $i -ge 300 ] && break; sleep 0.1; done
check state-dead iscsiadm -m session -P 1
step e-unmount
flex e-unmount unmount %[3]s
check sessions-e-end iscsiadm -m session
check mounts-e-end grep -c datera-iscsi /proc/mounts
`, p1, p2, p3, e.MountOptions("vol-f1", nil), e.MountOptions("vol-f2", map[string]string{"kubernetes.io/fsType": "xfs"}), e.MountOptions("vol-e", nil))
	run := e.Boot(FlexBinary(t, "petfabric_crash"), Initiator, script, 2*bootTimeout)
	require.True(t, run.Passed, "the guest script failed")
	l := run.Lines

	assert.Equal(t, 137, exitCode(t, l, "crash-login"), "killed by SIGKILL at the login step")
	assert.Equal(t, 137, exitCode(t, l, "crash-format"), "killed by SIGKILL right after mkfs")
	assertSucceeded(t, l, "retry-login", "retry-format", "unmount-f1", "unmount-f2", "e-mount", "e-unmount")
	_, out := checkOut(t, l, "sessions-f")
	assert.Equal(t, 2, countPortal(out), "one session per volume after the retries: %s", out)
	iqns := map[string]bool{}
	for _, s := range strings.Split(out, "|") {
		if f := strings.Fields(s); len(f) >= 4 {
			iqns[f[3]] = true
		}
	}
	assert.Len(t, iqns, 2, "two different targets, none logged in twice: %s", out)
	_, out = checkOut(t, l, "formats-f1")
	assert.Equal(t, "1", out, "the volume whose mount died at login was formatted once, by the retry")
	_, out = checkOut(t, l, "formats-f2")
	assert.Equal(t, "1", out, "the volume whose mount died after mkfs was not formatted again")
	rc, _ := checkOut(t, l, "sessions-f-end")
	assert.Equal(t, 21, rc)
	for vol, fs := range map[string]string{"vol-f1": "ext4", "vol-f2": "xfs"} {
		out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", e.Backing(vol)).Output()
		require.NoError(t, err, vol)
		assert.Equal(t, fs, strings.TrimSpace(string(out)), "the host sees %s's filesystem in its backing file", vol)
	}

	_, state := checkOut(t, l, "state-dead")
	assert.NotContains(t, state, "Connection State: LOGGED IN", "the session lost its target before the unmount")
	s, _ := find(l, "PFG-STEP", "e-unmount")
	f, _ := find(l, "PFG-FLEX", "e-unmount")
	took := f.At - s.At
	assert.Less(t, took, unmountBound, "the unmount under a dead portal is bounded")
	t.Logf("unmount under a dead portal took %s", took.Round(time.Millisecond))
	rc, _ = checkOut(t, l, "sessions-e-end")
	assert.Equal(t, 21, rc, "no session left")
	_, out = checkOut(t, l, "mounts-e-end")
	assert.Equal(t, "0", out, "no mount left")
}
