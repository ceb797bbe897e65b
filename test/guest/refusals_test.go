package guest

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// refusalBound is how long a refused login may take end to end (the driver's whole mount call,
// rollback included): iscsid.conf gives up after one 5 s login attempt, not open-iscsi's
// default two-minute retry.
const refusalBound = 30 * time.Second

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// seedVolume creates volume id on the simulator and writes an ext4 filesystem holding
// seed.txt = content into its backing file, as if another node had used it before.
func seedVolume(t *testing.T, e *Env, id, content string) string {
	t.Helper()
	ai, err := e.Client.CreateAppInstance(context.Background(), datera.CreateVolumeRequest{Name: id, SizeGiB: 1, ReplicaCount: 1})
	require.NoError(t, err)
	_, v, ok := ai.Volume()
	require.True(t, ok)
	backing := e.Targets.BackingFile(v.UUID)
	require.NoError(t, os.MkdirAll(filepath.Dir(backing), 0o700))
	require.NoError(t, os.WriteFile(backing, nil, 0o600))
	require.NoError(t, os.Truncate(backing, 1<<30))
	seed := filepath.Join(t.TempDir(), "seed.txt")
	require.NoError(t, os.WriteFile(seed, []byte(content), 0o644))
	for _, c := range [][]string{{"mkfs.ext4", "-q", "-F", backing}, {"debugfs", "-w", "-R", "write " + seed + " seed.txt", backing}} {
		out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		require.NoError(t, err, "%v: %s", c, out)
	}
	return backing
}

// TestGuestCHAPRefusalsExistingDataSharing, one guest, targets demanding CHAP:
//   - a wrong CHAP secret, and an initiator that is not the one in the ACL (the node's
//     initiator-name file disagrees with iscsid's), each end in Failure naming the refused
//     login within refusalBound, leaving no session;
//   - a volume that already holds a filesystem with data is mounted with the right CHAP and
//     its data is there: never reformatted;
//   - two pods share it: one session; the first unmount keeps it, the second logs out.
func TestGuestCHAPRefusalsExistingDataSharing(t *testing.T) {
	chap := &fake.CHAPAccount{User: "pf-node", Password: "chap-Secret-42"}
	e := New(t, Options{CHAP: chap})
	const seeded = "data from before this node"
	backing := seedVolume(t, e, "vol-c", seeded)

	withCHAP := func(id, pw string) string {
		return e.MountOptions(id, map[string]string{
			"kubernetes.io/secret/node.session.auth.username": b64(chap.User),
			"kubernetes.io/secret/node.session.auth.password": b64(pw),
		})
	}
	p1, p2, pb, pd := podDir("p1"), podDir("p2"), podDir("pb"), podDir("pd")
	script := fmt.Sprintf(`
sed 's|^{|{"initiatorNameFile":"/etc/iscsi/other.iscsi",|' /etc/petfabric/flex.json >/tmp/other.json
echo "InitiatorName=iqn.2026-11.io.petfabric:not-this-node" >/etc/iscsi/other.iscsi
step badchap
flex badchap mount %[3]s '%[5]s'
check sessions-badchap iscsiadm -m session
step badacl
export PETFABRIC_FLEX_CONFIG=/tmp/other.json
flex badacl mount %[4]s '%[6]s'
unset PETFABRIC_FLEX_CONFIG
check sessions-badacl iscsiadm -m session
step existing
flex shared1 mount %[1]s '%[7]s' || exit 1
check seed1 cat %[1]s/seed.txt
flex shared2 mount %[2]s '%[7]s' || exit 1
check sessions-two iscsiadm -m session
flex unmount-first unmount %[1]s || exit 1
check sessions-after-first iscsiadm -m session
check read-after-first cat %[2]s/seed.txt
flex unmount-second unmount %[2]s || exit 1
check sessions-after-second iscsiadm -m session
check formats grep -c '"event":"format"' /var/log/petfabric/flex.log
check shared grep -c 'volume already attached on this node' /var/log/petfabric/flex.log
`, p1, p2, pb, pd, withCHAP("vol-b", "wrong-Secret-99"), withCHAP("vol-d", chap.Password), withCHAP("vol-c", chap.Password))
	run := e.Boot(FlexBinary(t, ""), Initiator, script, bootTimeout)
	require.True(t, run.Passed, "the guest script failed")
	l := run.Lines

	for _, c := range []struct{ step, label, cause string }{
		{"badchap", "badchap", "authorization failure (CHAP)"},
		// tgt answers an initiator outside the ACL as if the target did not exist (status
		// 0x0203); the driver's message says both.
		{"badacl", "badacl", "target not found or access denied"},
	} {
		rc, r := reply(t, l, c.label)
		assert.Equal(t, 1, rc, c.label)
		assert.Equal(t, "Failure", r["status"], c.label)
		assert.Contains(t, r["message"], c.cause, "%s names why the login was refused", c.label)
		s, _ := find(l, "PFG-STEP", c.step)
		f, _ := find(l, "PFG-FLEX", c.label)
		took := f.At - s.At
		assert.Less(t, took, refusalBound, "%s failed within the bound", c.label)
		t.Logf("%s: Failure after %s: %s", c.label, took.Round(time.Millisecond), r["message"])
		rc, _ = checkOut(t, l, "sessions-"+c.label)
		assert.Equal(t, 21, rc, "%s left no session", c.label)
	}

	assertSucceeded(t, l, "shared1", "shared2", "unmount-first", "unmount-second")
	_, out := checkOut(t, l, "seed1")
	assert.Equal(t, seeded, out, "the existing filesystem's data is visible")
	_, out = checkOut(t, l, "formats")
	assert.Equal(t, "0", out, "an existing filesystem is never formatted")
	_, out = checkOut(t, l, "shared")
	assert.Equal(t, "1", out, "the second pod used the attachment of the first")
	_, out = checkOut(t, l, "sessions-two")
	assert.Equal(t, 1, countPortal(out), "two pods, one session: %s", out)
	_, out = checkOut(t, l, "sessions-after-first")
	assert.Equal(t, 1, countPortal(out), "the first unmount keeps the session the other pod uses: %s", out)
	_, out = checkOut(t, l, "read-after-first")
	assert.Equal(t, seeded, out)
	rc, _ := checkOut(t, l, "sessions-after-second")
	assert.Equal(t, 21, rc, "the second unmount logged out")
	ok, out2 := fsckClean(backing)
	assert.True(t, ok, "the filesystem is clean after the guest unmounted it: %s", out2)
}
