package guest

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bootTimeout bounds one guest run under software emulation (a boot is ~3 s, each mount a few).
const bootTimeout = 150 * time.Second

// podDir is a kubelet-style pod volume directory inside the guest.
func podDir(pod string) string { return "/var/lib/kubelet/pods/" + pod + "/volumes/datera~iscsi/vol" }

// scriptLib: shell helpers for test scripts (after guest.sh).
const scriptLib = `dev_of() { awk -v p="$1" '$2==p{print $1}' /proc/mounts | head -1; }
`

// find returns the first line of kind and label, and its index.
func find(lines []Line, kind, label string) (Line, int) {
	for i, l := range lines {
		if l.Kind == kind && l.Label == label {
			return l, i
		}
	}
	return Line{}, -1
}

// rcLine parses the first line of kind and label, "rc=<code> <rest>": the exit code and the
// rest (empty when there is none). what names the line in the failure message.
func rcLine(t *testing.T, lines []Line, kind, label, what string) (int, string) {
	t.Helper()
	l, i := find(lines, kind, label)
	require.GreaterOrEqual(t, i, 0, "no %s %q", what, label)
	rcs, rest, _ := strings.Cut(l.Text, " ")
	var rc int
	_, err := fmt.Sscanf(rcs, "rc=%d", &rc)
	require.NoError(t, err, l.Text)
	return rc, rest
}

// reply parses a PFG-FLEX line: the exit code and the driver's JSON reply.
func reply(t *testing.T, lines []Line, label string) (int, map[string]any) {
	t.Helper()
	rc, js := rcLine(t, lines, "PFG-FLEX", label, "driver reply")
	var out map[string]any
	require.NoError(t, json.Unmarshal([]byte(js), &out), "driver reply %q is one JSON object: %s", label, js)
	return rc, out
}

// checkOut returns a PFG-CHECK line's exit code and output (lines joined by |).
func checkOut(t *testing.T, lines []Line, label string) (int, string) {
	t.Helper()
	return rcLine(t, lines, "PFG-CHECK", label, "check")
}

// assertSucceeded asserts that each labelled driver call exited 0 with status Success.
func assertSucceeded(t *testing.T, lines []Line, labels ...string) {
	t.Helper()
	for _, v := range labels {
		rc, r := reply(t, lines, v)
		assert.Equal(t, 0, rc, v)
		assert.Equal(t, "Success", r["status"], "%s: %v", v, r)
	}
}

// TestGuestMountWriteRemount: the real driver, through a real kernel initiator, mounts a new
// volume (Datera create, ACL, online, discovery-free login, udev by-path link, safe format,
// mount, bind), writes a file, unmounts (session logged out, initiator removed from the
// target's ACL), mounts it again in another pod: the file is there, the filesystem is the same
// one (formatted exactly once), and the host reads the same bytes from the LUN's backing file.
//
// Then, the guest run over and its Env cleaned up: the namespace (with bridge and tap), tgtd
// with its control socket, and qemu are gone.
func TestGuestMountWriteRemount(t *testing.T) {
	var ns string
	var tgtd, qemu, port int
	t.Run("guest", func(t *testing.T) {
		e := mountWriteRemount(t)
		ns, tgtd, qemu, port = e.NS, e.TgtdPID(), e.QemuPID(), e.ctlPort
		assert.False(t, alive(qemu), "qemu is stopped as soon as the guest reported")
	})
	require.NotZero(t, tgtd)
	assert.False(t, nsExists(ns), "namespace %s removed", ns)
	assert.False(t, alive(tgtd), "tgtd stopped")
	assert.NoFileExists(t, tgtSocket(port))
}

func mountWriteRemount(t *testing.T) *Env {
	e := New(t, Options{})
	flex := FlexBinary(t, "")
	const vol = "vol-a"
	data := fmt.Sprintf("written by the guest through iscsi_tcp %d", time.Now().UnixNano())
	opts := e.MountOptions(vol, nil)
	p1, p2 := podDir("p1"), podDir("p2")
	script := scriptLib + fmt.Sprintf(`
O='%s'
step mount1
flex mount1 mount %[2]s "$O" || exit 1
echo '%[4]s' >%[2]s/hello.txt && sync || exit 1
check dev1 dev_of /var/lib/kubelet/plugins/petfabric.io/datera-iscsi/mounts/%[5]s
check fs1 sh -c 'blkid -s TYPE -s UUID -o export $(dev_of /var/lib/kubelet/plugins/petfabric.io/datera-iscsi/mounts/%[5]s)'
check sessions1 iscsiadm -m session
check addrs ip -o -4 addr show
check routes ip route
check bypath1 ls /dev/disk/by-path
step unmount1
flex unmount1 unmount %[2]s || exit 1
check sessions-after-unmount1 iscsiadm -m session
check bypath-after-unmount1 ls /dev/disk/by-path
step mount2
flex mount2 mount %[3]s "$O" || exit 1
check read2 cat %[3]s/hello.txt
check fs2 sh -c 'blkid -s TYPE -s UUID -o export $(dev_of /var/lib/kubelet/plugins/petfabric.io/datera-iscsi/mounts/%[5]s)'
check formats grep -c '"event":"format"' /var/log/petfabric/flex.log
check attached grep '"volume attached"' /var/log/petfabric/flex.log
flex unmount2 unmount %[3]s || exit 1
check sessions-end iscsiadm -m session
`, opts, p1, p2, data, vol)
	run := e.Boot(flex, Initiator, script, bootTimeout)
	require.True(t, run.Passed, "the guest script failed")
	l := run.Lines

	assertSucceeded(t, l, "mount1", "unmount1", "mount2", "unmount2")
	_, sessions := checkOut(t, l, "sessions1")
	assert.Contains(t, sessions, Portal, "a real session to the simulator's target")
	_, bypath := checkOut(t, l, "bypath1")
	assert.Contains(t, bypath, "ip-"+Portal+"-iscsi-", "udev made the by-path link")
	rc, _ := checkOut(t, l, "sessions-after-unmount1")
	assert.Equal(t, 21, rc, "unmount logged out: iscsiadm finds no session (exit 21)")
	rc, out := checkOut(t, l, "read2")
	assert.Equal(t, 0, rc)
	assert.Equal(t, data, out, "the file written before the unmount is intact")
	_, fs1 := checkOut(t, l, "fs1")
	_, fs2 := checkOut(t, l, "fs2")
	assert.Contains(t, fs1, "TYPE=ext4")
	assert.Equal(t, fs1, fs2, "the same filesystem (UUID) after the remount")
	_, formats := checkOut(t, l, "formats")
	assert.Equal(t, "1", formats, "formatted exactly once")
	rc, _ = checkOut(t, l, "sessions-end")
	assert.Equal(t, 21, rc, "no session left")

	// The ACL entry went away with the first unmount, before the second mount.
	_, iu := find(l, "PFG-FLEX", "unmount1")
	_, im := find(l, "PFG-STEP", "mount2")
	var aclAtUnmount string
	for _, x := range l[:iu] {
		if x.Kind == "HOST-ACL" {
			aclAtUnmount = x.Text
		}
	}
	assert.Contains(t, aclAtUnmount, "initiators=[]", "the unmount removed the initiator from the target's ACL")
	assert.Less(t, iu, im)

	// The host reads the guest's bytes from the LUN's backing file.
	b, err := exec.Command("debugfs", "-R", "cat /hello.txt", e.Backing(vol)).Output()
	require.NoError(t, err)
	assert.Equal(t, data+"\n", string(b))

	m1, _ := find(l, "PFG-STEP", "mount1")
	f1, _ := find(l, "PFG-FLEX", "mount1")
	_, attached := checkOut(t, l, "attached")
	t.Logf("figures: image %s (built now: %t); guest boot to ready %s; first mount call (create+login+format+mount) %s; whole guest run %s",
		e.Image.BuildTime.Round(time.Millisecond), e.Image.Built, run.Boot.Round(time.Millisecond),
		(f1.At - m1.At).Round(time.Millisecond), run.Duration.Round(time.Millisecond))
	t.Logf("driver's attach log: %s", attached)

	_, addrs := checkOut(t, l, "addrs")
	assert.Contains(t, addrs, "eth0    inet "+GuestIP+"/24")
	_, routes := checkOut(t, l, "routes")
	assert.Equal(t, "192.168.77.0/24 dev eth0 scope link  src "+GuestIP+" ", routes, "the guest reaches only the namespace's subnet")
	return e
}

// countPortal counts the iscsiadm -m session lines (joined by |) on the guest's portal.
func countPortal(sessions string) int {
	n := 0
	for _, s := range strings.Split(sessions, "|") {
		if strings.Contains(s, Portal) {
			n++
		}
	}
	return n
}

// fsckClean runs a read-only e2fsck on an ext4 image.
func fsckClean(path string) (bool, string) {
	out, err := exec.Command("e2fsck", "-n", "-f", path).CombinedOutput()
	return err == nil, string(out)
}
