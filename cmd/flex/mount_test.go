package main

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// These tests run as root against real loop devices, real mkfs/blkid/mount and the Datera
// simulator over HTTP; the initiator stand-in (loop devices instead of iSCSI sessions) is the
// only fake.

type node struct {
	*flextest.Env
	t *testing.T
}

func newNode(t *testing.T, opts flextest.EnvOptions) *node {
	return &node{Env: flextest.NewEnv(t, opts), t: t}
}

func (n *node) mount(dir, opts string, env ...string) result {
	n.t.Helper()
	return run(n.t, n.ConfigFile, env, "mount", dir, opts)
}

func (n *node) unmount(dir string, env ...string) result {
	n.t.Helper()
	return run(n.t, n.ConfigFile, env, "unmount", dir)
}

func (n *node) mustMount(dir, opts string) {
	n.t.Helper()
	r := n.mount(dir, opts)
	require.Equal(n.t, flex.StatusSuccess, r.Reply.Status, "mount: %s", r.Reply.Message)
}

func (n *node) mustUnmount(dir string) {
	n.t.Helper()
	r := n.unmount(dir)
	require.Equal(n.t, flex.StatusSuccess, r.Reply.Status, "unmount: %s", r.Reply.Message)
}

// assertAttached checks one session (loop device), one ACL entry, a record in phase mounted
// listing the pod directories, and the bind mounts.
func (n *node) assertAttached(id string, dirs ...string) {
	n.t.Helper()
	loops, err := flextest.LoopsOf(n.Backing(id))
	require.NoError(n.t, err)
	assert.Len(n.t, loops, 1, "exactly one session (loop device)")
	assert.Equal(n.t, []string{n.InitiatorName}, n.ACL(id), "exactly one ACL entry")
	rec, err := flex.State{Dir: n.StateDir}.Load(id)
	require.NoError(n.t, err)
	require.NotNil(n.t, rec, "volume record")
	assert.Equal(n.t, flexstate.PhaseMounted, rec.Phase)
	assert.ElementsMatch(n.t, dirs, rec.Mounts)
	mounts := n.Mounts()
	for _, d := range dirs {
		assert.Contains(n.t, mounts, d)
	}
	assert.Contains(n.t, mounts, filepath.Join(n.GlobalDir, id))
}

// assertDetached checks that nothing of the volume is left on the node or in the ACL.
func (n *node) assertDetached(id string) {
	n.t.Helper()
	loops, err := flextest.LoopsOf(n.Backing(id))
	require.NoError(n.t, err)
	assert.Empty(n.t, loops, "no loop device (session) left")
	assert.Empty(n.t, n.ACL(id), "no ACL entry left")
	_, err = os.Stat(filepath.Join(n.StateDir, id+".json"))
	assert.True(n.t, os.IsNotExist(err), "no metadata file left")
	_, err = os.Stat(filepath.Join(n.StateDir, "credentials", id+".json"))
	assert.True(n.t, os.IsNotExist(err), "no stored credentials left")
	assert.Empty(n.t, n.Mounts(), "no mount left")
	links, _ := filepath.Glob(filepath.Join(n.ByPathDir, "*"))
	assert.Empty(n.t, links, "no by-path link left")
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
}

func readFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	require.NoError(t, err)
	return string(b)
}

func TestMountWriteUnmountMountAgain(t *testing.T) {
	for _, fs := range []string{"xfs", "ext4"} {
		t.Run(fs, func(t *testing.T) {
			n := newNode(t, flextest.EnvOptions{})
			id := "pv-life-" + fs
			opts := n.Options(id, map[string]string{"kubernetes.io/fsType": fs})
			a, b := n.PodDir("a"), n.PodDir("b")

			n.mustMount(a, opts)
			n.assertAttached(id, a)
			writeFile(t, a, "data.txt", "hello from pod a")
			out, err := exec.Command("blkid", "-o", "value", "-s", "TYPE", n.Backing(id)).Output()
			require.NoError(t, err)
			assert.Equal(t, fs, strings.TrimSpace(string(out)))
			n.mustUnmount(a)
			n.assertDetached(id)
			_, err = os.Stat(a)
			assert.True(t, os.IsNotExist(err), "pod directory removed")

			n.mustMount(b, opts)
			assert.Equal(t, "hello from pod a", readFile(t, b, "data.txt"), "data intact after remount")
			n.mustUnmount(b)
			n.assertDetached(id)
			// Unmount is idempotent.
			n.mustUnmount(b)
			assert.Equal(t, 1, strings.Count(n.LogText(), `"event":"format"`), "formatted exactly once")
		})
	}
}

func TestSecondPodKeepsVolumeAttached(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	id := "pv-shared"
	opts := n.Options(id, nil)
	a, b := n.PodDir("a"), n.PodDir("b")
	n.mustMount(a, opts)
	n.mustMount(b, opts)
	n.assertAttached(id, a, b)
	writeFile(t, a, "f", "x")
	n.mustUnmount(a)
	n.assertAttached(id, b)
	assert.Equal(t, "x", readFile(t, b, "f"), "the other pod still sees the data")
	n.mustUnmount(b)
	n.assertDetached(id)
}

func TestExistingFilesystemIsNeverReformatted(t *testing.T) {
	for _, tc := range []struct{ existing, requested string }{{"ext4", "xfs"}, {"xfs", "ext4"}, {"ext4", "ext4"}} {
		t.Run(tc.existing+"-as-"+tc.requested, func(t *testing.T) {
			n := newNode(t, flextest.EnvOptions{})
			id := "pv-keep"
			a := n.PodDir("a")
			// First use creates the volume; then write a filesystem with data behind the driver's back.
			n.mustMount(a, n.Options(id, map[string]string{"kubernetes.io/fsType": "xfs"}))
			n.mustUnmount(a)
			backing := n.Backing(id)
			mkfs := exec.Command("mkfs."+tc.existing, "-q", "-f", backing)
			if tc.existing == "ext4" {
				mkfs = exec.Command("mkfs.ext4", "-q", "-F", backing)
			}
			out, err := mkfs.CombinedOutput()
			require.NoError(t, err, "%s", out)
			seed := filepath.Join(n.Root, "seed")
			require.NoError(t, os.MkdirAll(seed, 0o755))
			out, err = exec.Command("mount", "-o", "loop", backing, seed).CombinedOutput()
			require.NoError(t, err, "%s", out)
			writeFile(t, seed, "precious", "do not lose me")
			out, err = exec.Command("umount", seed).CombinedOutput()
			require.NoError(t, err, "%s", out)
			require.NoError(t, flextest.DetachBacking(t.Context(), backing))

			n.mustMount(a, n.Options(id, map[string]string{"kubernetes.io/fsType": tc.requested}))
			assert.Equal(t, "do not lose me", readFile(t, a, "precious"))
			rec, err := flex.State{Dir: n.StateDir}.Load(id)
			require.NoError(t, err)
			assert.Equal(t, tc.existing, rec.FSType, "mounted as what it is")
			n.mustUnmount(a)
			assert.Equal(t, 1, strings.Count(n.LogText(), `"event":"format"`), "only the first, blank use formatted")
		})
	}
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	// The first 64 MiB hold every signature and superblock a mkfs would write first.
	h := sha256.New()
	_, err = io.Copy(h, io.LimitReader(f, 64<<20))
	require.NoError(t, err)
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestUnknownDataIsRefusedAndRolledBack(t *testing.T) {
	for _, tc := range []struct{ name, msg string }{
		{"data without signature", "data without a signature"},
		{"partition table", "a partition table (dos)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, flextest.EnvOptions{})
			id := "pv-odd"
			a := n.PodDir("a")
			n.mustMount(a, n.Options(id, nil))
			n.mustUnmount(a)
			backing := n.Backing(id)
			f, err := os.OpenFile(backing, os.O_WRONLY, 0)
			require.NoError(t, err)
			block := make([]byte, 1<<20)
			switch tc.name {
			case "data without signature":
				for i := range block {
					block[i] = byte(i*7 + 1)
				}
			default: // an MBR with one Linux partition
				copy(block[446:], []byte{0x00, 0x20, 0x21, 0x00, 0x83, 0x14, 0x2c, 0x00, 0x00, 0x08, 0, 0, 0x00, 0x10, 0, 0})
				block[510], block[511] = 0x55, 0xaa
			}
			_, err = f.WriteAt(block, 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			before := fileHash(t, backing)

			r := n.mount(a, n.Options(id, nil))
			assert.Equal(t, flex.StatusFailure, r.Reply.Status)
			assert.Contains(t, r.Reply.Message, "refusing to format")
			assert.Contains(t, r.Reply.Message, tc.msg)
			assert.Equal(t, before, fileHash(t, backing), "device untouched")
			n.assertDetached(id) // rolled back: no session, no ACL entry, no record
		})
	}
}

func TestConcurrentMountsOfOneVolume(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	id := "pv-busy"
	opts := n.Options(id, nil)
	const pods = 20
	dirs := make([]string, pods)
	var wg sync.WaitGroup
	results := make([]result, pods)
	for i := range pods {
		dirs[i] = n.PodDir(fmt.Sprintf("p%02d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = n.mount(dirs[i], opts)
		}()
	}
	wg.Wait()
	for i, r := range results {
		require.Equal(t, flex.StatusSuccess, r.Reply.Status, "pod %d: %s", i, r.Reply.Message)
	}
	n.assertAttached(id, dirs...)
	assert.Equal(t, 1, flextest.Logins(n.TargetsDir, n.IQN(id)), "one login")
	assert.Equal(t, 1, strings.Count(n.LogText(), `"event":"format"`), "one format")
	writeFile(t, dirs[3], "shared", "seen by all")
	assert.Equal(t, "seen by all", readFile(t, dirs[17], "shared"))

	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = n.unmount(dirs[i])
		}()
	}
	wg.Wait()
	for i, r := range results {
		require.Equal(t, flex.StatusSuccess, r.Reply.Status, "pod %d: %s", i, r.Reply.Message)
	}
	n.assertDetached(id)
}

func TestDifferentVolumesMountInParallel(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	var wg sync.WaitGroup
	errs := make([]string, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("pv-par-%d", i)
			if r := n.mount(n.PodDir(id), n.Options(id, nil)); r.Reply.Status != flex.StatusSuccess {
				errs[i] = r.Reply.Message
				return
			}
			if r := n.unmount(n.PodDir(id)); r.Reply.Status != flex.StatusSuccess {
				errs[i] = r.Reply.Message
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, make([]string, 4), errs)
	for i := range 4 {
		n.assertDetached(fmt.Sprintf("pv-par-%d", i))
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	id := "pv-secret"
	chapPass := "chapPassw0rd-9931"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	opts := n.Options(id, map[string]string{
		"kubernetes.io/secret/node.session.auth.username": b64("chapuser"),
		"kubernetes.io/secret/node.session.auth.password": b64(chapPass),
	})
	a := n.PodDir("a")
	n.mustMount(a, opts)
	n.mustUnmount(a)
	// A failing login to Datera (wrong password) goes through the error paths.
	bad := n.Options(id, map[string]string{"kubernetes.io/secret/password": b64("Wrong_" + flextest.Password)})
	r := n.mount(a, bad)
	require.Equal(t, flex.StatusFailure, r.Reply.Status)
	assert.NotContains(t, r.Reply.Message, "Wrong_")
	log := n.LogText()
	require.Contains(t, log, `"verb":"mount"`)
	for _, secret := range []string{flextest.Password, b64(flextest.Password), chapPass, b64(chapPass), "Wrong_"} {
		assert.NotContains(t, log, secret)
	}
	stored, err := os.ReadDir(filepath.Join(n.StateDir, "credentials"))
	require.NoError(t, err)
	assert.Empty(t, stored, "stored credentials are removed with the volume")
}

func TestDateraFailureRollsBack(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	var aclRoute string
	for _, r := range n.Sim.Routes() {
		if strings.HasPrefix(r, "PUT ") && strings.HasSuffix(r, "/acl_policy/initiators") {
			aclRoute = r
		}
	}
	require.NotEmpty(t, aclRoute)
	id := "pv-fault"
	a := n.PodDir("a")
	n.Sim.SetFault(aclRoute, fakeFault422())
	r := n.mount(a, n.Options(id, nil))
	require.Equal(t, flex.StatusFailure, r.Reply.Status)
	assert.Contains(t, r.Reply.Message, "granting this node access")
	n.assertDetached(id)
	// The next try, with Datera healthy again, works.
	n.mustMount(a, n.Options(id, nil))
	n.mustUnmount(a)
	n.assertDetached(id)
}
