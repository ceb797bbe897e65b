package guest

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stallBound is how long I/O may stand still when one of two paths is lost: the initiator notices
// the dead connection after its no-op timeouts (2+2 s) and fails the queued commands after the
// replacement timeout (5 s); dm-multipath then retries them on the other path.
const stallBound = 30 * time.Second

// TestGuestMultipathPortalLoss, one guest running the real multipathd over the kernel's
// dm-multipath: the volume's target is served on two portals and the driver runs with
// "multipath: on". The mount logs in on both portals and mounts the device-mapper device above
// the two paths. A writer appends fsync'ed records to a file on the volume while the first
// portal's address leaves the network: the writes keep succeeding (after a stall while the
// initiator gives the lost session up), multipath shows the lost path failed and the other
// active, the unmount flushes the map and logs out of both sessions, leaving no session and no
// device-mapper device, and the host reads every acknowledged record from the LUN's backing
// file.
func TestGuestMultipathPortalLoss(t *testing.T) {
	e := New(t, Options{TwoPortals: true, Config: map[string]any{"multipath": "on"}})
	e.OnLine = func(l Line) {
		if l.Kind == "PFG-STEP" && l.Label == "mp-writing" {
			if err := e.KillPortalIP(PortalIP); err != nil {
				t.Errorf("killing the first portal: %v", err)
			}
		}
	}
	const vol = "vol-mp"
	p := podDir("mp")
	script := scriptLib + fmt.Sprintf(`
trap '[ $? = 0 ] || check mp-log tail -40 /tmp/multipathd.log' EXIT
multipath_up || exit 1
paths() { multipathd show paths raw format '%%d %%t %%T' 2>/dev/null; }
step mp-mount
flex mp-mount mount %[1]s '%[2]s' || exit 1
check mp-dev dev_of /var/lib/kubelet/plugins/petfabric.io/datera-iscsi/mounts/%[3]s
check mp-sessions iscsiadm -m session
i=0; until [ "$(paths | grep -c 'active ready')" = 2 ]; do i=$((i+1)); [ $i -ge 100 ] && break; sleep 0.1; done
check mp-ll multipath -ll
(n=0; while :; do n=$((n+1))
  printf '%%-63s\n' "rec $n" | dd of=%[1]s/log.txt bs=64 seek=$((n-1)) conv=notrunc,fsync 2>/dev/null; rc=$?
  echo "$n $(up) $rc" >>/tmp/progress; sleep 0.05; done) &
W=$!
i=0; until [ "$(wc -l </tmp/progress 2>/dev/null)" -ge 10 ] 2>/dev/null; do i=$((i+1)); [ $i -ge 300 ] && break; sleep 0.1; done
step mp-writing
i=0; until paths | grep -q failed; do i=$((i+1)); [ $i -ge 600 ] && break; sleep 0.1; done
step mp-path-failed
n1=$(wc -l </tmp/progress)
i=0; until [ "$(wc -l </tmp/progress)" -ge $((n1+20)) ]; do i=$((i+1)); [ $i -ge 600 ] && break; sleep 0.1; done
kill $W; wait $W 2>/dev/null
step mp-writer-stopped
check mp-ll-after multipath -ll
check mp-progress cat /tmp/progress
step mp-unmount
flex mp-unmount unmount %[1]s || exit 1
check mp-flush-warnings grep -c 'multipath flush failed' /var/log/petfabric/flex.log
check mp-sessions-end iscsiadm -m session
check mp-dm-end sh -c 'ls /sys/block | grep dm-'
check mp-maps-end multipath -ll
`, p, e.MountOptions(vol, nil), vol)
	run := e.Boot(FlexBinary(t, ""), Initiator, script, bootTimeout)
	require.True(t, run.Passed, "the guest script failed")
	l := run.Lines

	assertSucceeded(t, l, "mp-mount", "mp-unmount")
	_, dev := checkOut(t, l, "mp-dev")
	assert.Regexp(t, `^/dev/dm-\d+$`, dev, "the volume is mounted from the device-mapper device")
	_, sessions := checkOut(t, l, "mp-sessions")
	assert.Contains(t, sessions, Portal, "a session on the first portal")
	assert.Contains(t, sessions, Portal2, "and one on the second")
	_, ll := checkOut(t, l, "mp-ll")
	assert.Equal(t, 2, strings.Count(ll, "active ready"), "two live paths before the loss: %s", ll)
	_, after := checkOut(t, l, "mp-ll-after")
	assert.Equal(t, 1, strings.Count(after, "failed"), "the lost path failed: %s", after)
	assert.Equal(t, 1, strings.Count(after, "active ready"), "the other path carries on: %s", after)

	// Every write succeeded; the longest pause between two of them after the loss is the time
	// I/O stood still.
	type rec struct {
		n  int
		at float64
		rc int
	}
	_, prog := checkOut(t, l, "mp-progress")
	var recs []rec
	for _, s := range strings.Split(prog, "|") {
		var r rec
		if _, err := fmt.Sscanf(s, "%d %g %d", &r.n, &r.at, &r.rc); err == nil {
			recs = append(recs, r)
		}
	}
	require.NotEmpty(t, recs)
	ws, _ := find(l, "PFG-STEP", "mp-writing")
	killAt := uptime(t, ws.Text)
	pf, _ := find(l, "PFG-STEP", "mp-path-failed")
	failedAt := uptime(t, pf.Text)
	var before, afterKill, afterFailed int
	var stall, resumeAt float64
	for i, r := range recs {
		assert.Equal(t, 0, r.rc, "write %d failed", r.n)
		if r.at <= killAt {
			before++
			continue
		}
		afterKill++
		if r.at > failedAt {
			afterFailed++
		}
		if i > 0 && r.at-recs[i-1].at > stall {
			stall, resumeAt = r.at-recs[i-1].at, r.at
		}
	}
	assert.GreaterOrEqual(t, before, 10, "writes before the loss")
	assert.GreaterOrEqual(t, afterFailed, 20, "writes after multipathd marked the lost path failed: the other path carries them")
	assert.Less(t, stall, stallBound.Seconds(), "I/O resumes within %s of the loss", stallBound)
	last := recs[len(recs)-1]

	rc, _ := checkOut(t, l, "mp-sessions-end")
	assert.Equal(t, 21, rc, "unmount logged out of both portals: no session left")
	rc, _ = checkOut(t, l, "mp-dm-end")
	assert.Equal(t, 1, rc, "no device-mapper device left (grep found none)")
	_, maps := checkOut(t, l, "mp-maps-end")
	assert.Empty(t, maps, "no multipath map left")
	_, warns := checkOut(t, l, "mp-flush-warnings")
	assert.Equal(t, "0", warns, "the driver's multipath -f flushed the map (no warning)")

	// The host reads the acknowledged records from the LUN's backing file.
	b, err := exec.Command("debugfs", "-R", "cat /log.txt", e.Backing(vol)).Output()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	assert.GreaterOrEqual(t, len(lines), last.n, "every acknowledged record is in the backing file")
	for i := 0; i < last.n && i < len(lines); i++ {
		if !assert.Equal(t, "rec "+strconv.Itoa(i+1), strings.TrimSpace(lines[i]), "record %d", i+1) {
			break
		}
	}

	t.Logf("figures: portal lost at t=%.2fs; path marked failed %.2fs later; I/O stood still %.2fs at most, resuming %.2fs after the loss; "+
		"%d writes before, %d after; whole guest run %s",
		killAt, failedAt-killAt, stall, resumeAt-killAt, before, afterKill, run.Duration.Round(time.Millisecond))
}

// uptime reads the guest's t=<uptime> from a PFG-STEP line's text.
func uptime(t *testing.T, text string) float64 {
	t.Helper()
	for _, f := range strings.Fields(text) {
		if v, ok := strings.CutPrefix(f, "t="); ok {
			x, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, text)
			return x
		}
	}
	t.Fatalf("no t= in %q", text)
	return 0
}
