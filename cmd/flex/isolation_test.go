package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
	"github.com/petfabric/petfabric/pkg/pvoptions"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// Tenant isolation and data safety of the driver (issue 9): each test runs the scenario of an
// attack or an accident through the real binary, the Datera simulator and loop devices.

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// secretOpts replaces the secretRef values kubelet would pass.
func secretOpts(user, password string) map[string]string {
	return map[string]string{"kubernetes.io/secret/username": b64(user), "kubernetes.io/secret/password": b64(password)}
}

// ownerOpts are the contract-v2 owner options of claim ns/claim in a namespace of UID uid, with
// kubelet's pvOrVolumeName set to the PV name petfabric gives that claim.
func ownerOpts(ns, claim, uid string) map[string]string {
	return map[string]string{
		pvoptions.OptClusterID: "k0123456789abcdef", pvoptions.OptClaimNamespace: ns, pvoptions.OptClaimName: claim,
		pvoptions.OptNamespaceUID: uid, "kubernetes.io/pvOrVolumeName": pvoptions.PVName(ns, claim),
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// sub runs f as a subtest with the node's test switched to it.
func (n *node) sub(name string, f func(t *testing.T)) {
	parent := n.t
	parent.Run(name, func(t *testing.T) {
		n.t = t
		defer func() { n.t = parent }()
		f(t)
	})
}

// record loads the node's record of id (nil when none).
func (n *node) record(id string) *flexstate.Record {
	n.t.Helper()
	rec, err := flex.State{Dir: n.StateDir}.Load(id)
	require.NoError(n.t, err)
	return rec
}

// logins counts this node's logins to volume id (0 when the volume does not exist).
func (n *node) logins(id string) int {
	if _, err := n.Client.GetAppInstance(context.Background(), id); err != nil {
		return 0
	}
	return flextest.LoginsBy(n.TargetsDir, n.IQN(id), n.InitiatorName)
}

// assertLeftNothing checks that a refused mount left no trace of this node: no record, no
// stored credentials, no mount, no by-path link, no ACL entry, no login by this node beyond
// the loginsBefore it had made before.
func (n *node) assertLeftNothing(id, dir string, loginsBefore int) {
	n.t.Helper()
	assert.Nil(n.t, n.record(id), "no volume record")
	_, err := os.Stat(filepath.Join(n.StateDir, "credentials", id+".json"))
	assert.True(n.t, os.IsNotExist(err), "no stored credentials")
	assert.NotContains(n.t, n.Mounts(), dir, "no bind mount")
	assert.NotContains(n.t, n.Mounts(), filepath.Join(n.GlobalDir, id), "no global mount")
	links, _ := filepath.Glob(filepath.Join(n.ByPathDir, "*"))
	assert.Empty(n.t, links, "no by-path link")
	if _, err := n.Client.GetAppInstance(context.Background(), id); err == nil {
		assert.NotContains(n.t, n.ACL(id), n.InitiatorName, "no ACL entry of this node")
	}
	assert.Equal(n.t, loginsBefore, n.logins(id), "no login by this node")
}

func (n *node) assertNoAppInstance(id string) {
	n.t.Helper()
	_, err := n.Client.GetAppInstance(context.Background(), id)
	assert.ErrorIs(n.t, err, datera.ErrNotFound, "nothing created on Datera")
}

func (n *node) writeConfig(kv map[string]any) {
	for k, v := range kv {
		if v == nil {
			delete(n.Config, k)
		} else {
			n.Config[k] = v
		}
	}
	n.WriteConfig()
}

const (
	teamBUser     = "teambuser"
	teamBPassword = "TeamB_pw.1"
)

// withTeamB adds a valid Datera user confined to tenant /root/team-b.
func withTeamB(o *fake.Options) {
	o.Users[teamBUser] = teamBPassword
	o.Tenants = append(o.Tenants, "/root/team-b")
	o.UserTenants = map[string]string{teamBUser: "/root/team-b"}
}

// TestMountAttachedVolumeRefusesForeignCredentials is issue 9 item 1: with tenant A's volume
// attached on the node, a pod of tenant B names A's volumeID in an inline flexVolume with
// made-up credentials, or with valid credentials of another Datera tenant. The mount must fail
// without a bind mount, and A's mount, record and ACL entry must stay as they were.
func TestMountAttachedVolumeRefusesForeignCredentials(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{Sim: withTeamB})
	id := "pv-victim"
	a := n.PodDir("victim")
	n.mustMount(a, n.Options(id, nil))
	writeFile(t, a, "secret.txt", "tenant A's data")
	before := n.record(id)

	for _, tc := range []struct{ name, user, password, msg string }{
		{"made-up credentials", "nosuchuser", "Made_up_pw.9", "invalid user name or password"},
		{"valid credentials of another tenant", teamBUser, teamBPassword, "may not access tenant /root"},
	} {
		n.sub(tc.name, func(t *testing.T) {
			evil := n.PodDir("evil-" + strings.ReplaceAll(tc.name, " ", "-"))
			r := n.mount(evil, n.Options(id, merge(secretOpts(tc.user, tc.password),
				map[string]string{"kubernetes.io/pod.namespace": "tenant-b", "kubernetes.io/pvOrVolumeName": "data"})))
			require.Equal(t, flex.StatusFailure, r.Reply.Status, "the attack must fail: %s", r.Reply.Message)
			assert.Contains(t, r.Reply.Message, "cannot access volume "+id)
			assert.Contains(t, r.Reply.Message, tc.user)
			assert.Contains(t, r.Reply.Message, tc.msg)
			assert.NotContains(t, r.Reply.Message, tc.password)
			assert.NotContains(t, n.Mounts(), evil, "no bind mount for the attacker")
			_, err := os.Stat(evil)
			assert.True(t, os.IsNotExist(err), "not even the pod directory was created")
			// Nothing of A's attachment disturbed.
			n.assertAttached(id, a)
			after := n.record(id)
			assert.Equal(t, before.Mounts, after.Mounts)
			assert.Equal(t, before.Device, after.Device)
			assert.Equal(t, "tenant A's data", readFile(t, a, "secret.txt"))
			assert.NotContains(t, n.LogText(), tc.password, "the attacker's password is not logged either")
		})
	}
	n.mustUnmount(a)
	n.assertDetached(id)
}

// TestMountRefusesBackstoreNotInAllowlist is issue 9 item 1 (node config): a volume naming a
// backstore the node is not configured to talk to fails naming allowedBackstores and the
// value, before any request leaves the node (the credentials would go to that host).
func TestMountRefusesBackstoreNotInAllowlist(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	u, err := url.Parse(n.SimURL)
	require.NoError(t, err)
	sim := u.Host // 127.0.0.1:<port>
	for i, tc := range []struct {
		name   string
		config map[string]any
		msg    []string
	}{
		{"empty allowlist denies every volume", map[string]any{"allowedBackstores": nil, "allowInsecureHTTP": true},
			[]string{"allowedBackstores", "no backstore", sim}},
		{"another backstore", map[string]any{"allowedBackstores": []string{"192.0.2.50:7718"}, "allowInsecureHTTP": true},
			[]string{"allowedBackstores", sim, "192.0.2.50:7718"}},
		{"plain http needs allowInsecureHTTP", map[string]any{"allowedBackstores": []string{sim}, "allowInsecureHTTP": nil},
			[]string{"allowInsecureHTTP", "http://" + sim}},
	} {
		n.sub(tc.name, func(t *testing.T) {
			n.writeConfig(tc.config)
			id := fmt.Sprintf("pv-allow-%d", i)
			dir := n.PodDir(id)
			s := n.Sim.Requests(fake.AllRoutes)
			r := n.mount(dir, n.Options(id, nil))
			require.Equal(t, flex.StatusFailure, r.Reply.Status, "must be refused: %s", r.Reply.Message)
			for _, m := range tc.msg {
				assert.Contains(t, r.Reply.Message, m)
			}
			assert.Equal(t, s, n.Sim.Requests(fake.AllRoutes), "no request reached the backstore")
			n.assertNoAppInstance(id)
			n.assertLeftNothing(id, dir, 0)
		})
	}
	n.sub("malformed allowlist entry", func(t *testing.T) {
		n.writeConfig(map[string]any{"allowedBackstores": []string{"https://x:7718"}})
		r := n.mount(n.PodDir("m"), n.Options("pv-malformed", nil))
		require.Equal(t, flex.StatusFailure, r.Reply.Status)
		assert.Contains(t, r.Reply.Message, "allowedBackstores")
		assert.Contains(t, r.Reply.Message, "https://x:7718")
	})
	n.sub("allowed", func(t *testing.T) {
		n.writeConfig(map[string]any{"allowedBackstores": []string{"192.0.2.50:7718", sim}, "allowInsecureHTTP": true})
		dir := n.PodDir("ok")
		n.mustMount(dir, n.Options("pv-allowed", nil))
		n.mustUnmount(dir)
		n.assertDetached("pv-allowed")
	})
}

// TestInlineVolumeCannotUseNodeCredentialsFile is issue 9 item 1: the node's credentialsFile
// logs in as whoever the admin configured; an inline flexVolume (a pod's own volume, named
// with a DNS label) without a secret must not borrow it.
func TestInlineVolumeCannotUseNodeCredentialsFile(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	credFile := filepath.Join(n.Root, "datera-credentials.json")
	b, _ := json.Marshal(map[string]string{"username": flextest.User, "password": flextest.Password})
	require.NoError(t, os.WriteFile(credFile, b, 0o600))
	n.writeConfig(map[string]any{"credentialsFile": credFile})
	noSecret := map[string]string{"kubernetes.io/secret/username": "", "kubernetes.io/secret/password": ""}

	for _, tc := range []struct{ name, pvName string }{
		{"inline volume", "data"},
		{"inline volume named like a v1 PV", "datera-ns-data-db-0"},
		{"PV name of another claim", pvoptions.PVName("ns", "other-claim")},
	} {
		n.sub(tc.name, func(t *testing.T) {
			id := "pv-inline"
			dir := n.PodDir("inline")
			opts := merge(noSecret, ownerOpts("ns", "data-db-0", "uid-1"), map[string]string{"kubernetes.io/pvOrVolumeName": tc.pvName})
			if tc.name != "PV name of another claim" {
				for _, k := range []string{pvoptions.OptClusterID, pvoptions.OptClaimNamespace, pvoptions.OptClaimName, pvoptions.OptNamespaceUID} {
					opts[k] = ""
				}
			}
			r := n.mount(dir, n.Options(id, opts))
			require.Equal(t, flex.StatusFailure, r.Reply.Status, "must be refused: %s", r.Reply.Message)
			assert.Contains(t, r.Reply.Message, "credentials file serves only petfabric PersistentVolumes")
			assert.Contains(t, r.Reply.Message, tc.pvName)
			n.assertNoAppInstance(id)
			n.assertLeftNothing(id, dir, 0)
		})
	}
	n.sub("petfabric PV", func(t *testing.T) {
		id := "pv-petfabric"
		dir := n.PodDir("pet")
		n.mustMount(dir, n.Options(id, merge(noSecret, ownerOpts("ns", "data-db-0", "uid-1"))))
		n.mustUnmount(dir)
		n.assertDetached(id)
	})
}

// TestMountRefusesVolumeOfAnotherOwner is issue 9 item 5: a namespace is deleted and created
// again with the same name (new UID); its claim maps to the same volumeID. The retained volume
// must not be handed to the new owner, and this node's ACL entry must not even be added.
func TestMountRefusesVolumeOfAnotherOwner(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	ctx := context.Background()
	id := "pv-owned"
	a := n.PodDir("a")
	u1 := ownerOpts("team", "data-db-0", "11111111-1111-1111-1111-111111111111")
	u2 := ownerOpts("team", "data-db-0", "22222222-2222-2222-2222-222222222222")
	n.mustMount(a, n.Options(id, u1))
	writeFile(t, a, "f", "first tenant")
	md, err := n.Client.GetMetadata(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{pvoptions.MetaCluster: "k0123456789abcdef", pvoptions.MetaNamespace: "team",
		pvoptions.MetaClaim: "data-db-0", pvoptions.MetaNamespaceUID: "11111111-1111-1111-1111-111111111111"}, md,
		"the first mount records the owner")

	n.sub("attached on this node", func(t *testing.T) {
		b := n.PodDir("b")
		r := n.mount(b, n.Options(id, u2))
		require.Equal(t, flex.StatusFailure, r.Reply.Status, "must be refused: %s", r.Reply.Message)
		assert.Contains(t, r.Reply.Message, "belongs to claim team/data-db-0 (namespace uid 11111111-1111-1111-1111-111111111111")
		assert.Contains(t, r.Reply.Message, "22222222-2222-2222-2222-222222222222")
		assert.NotContains(t, n.Mounts(), b)
		n.assertAttached(id, a)
	})
	n.mustUnmount(a)
	n.assertDetached(id)

	n.sub("not attached", func(t *testing.T) {
		b := n.PodDir("b")
		logins := n.logins(id)
		s := n.Sim.Requests("PUT /app_instances/{ai}/storage_instances/{si}/acl_policy/initiators")
		r := n.mount(b, n.Options(id, u2))
		require.Equal(t, flex.StatusFailure, r.Reply.Status, "must be refused: %s", r.Reply.Message)
		assert.Contains(t, r.Reply.Message, "belongs to claim team/data-db-0 (namespace uid 11111111-1111-1111-1111-111111111111")
		assert.Equal(t, s, n.Sim.Requests("PUT /app_instances/{ai}/storage_instances/{si}/acl_policy/initiators"), "the ACL was never touched")
		assert.Empty(t, n.ACL(id))
		n.assertLeftNothing(id, b, logins)
		md2, err := n.Client.GetMetadata(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, md, md2, "the recorded owner is unchanged")
	})
	n.sub("same owner again", func(t *testing.T) {
		n.mustMount(a, n.Options(id, u1))
		assert.Equal(t, "first tenant", readFile(t, a, "f"))
		n.mustUnmount(a)
	})
	n.sub("v1 PV without owner options mounts with a warning", func(t *testing.T) {
		n.mustMount(a, n.Options(id, nil))
		assert.Contains(t, n.LogText(), "no owner options")
		n.mustUnmount(a)
		n.assertDetached(id)
	})
}

// twoNodes returns node-a and node-b on one Datera cluster (one simulator, one set of loop
// targets); the ACL decides which of them may log in.
func twoNodes(t *testing.T, sim func(*fake.Options)) (*node, *node) {
	a := newNode(t, flextest.EnvOptions{Sim: sim})
	b := newNode(t, flextest.EnvOptions{Share: a.Env, NodeName: "node-b", InitiatorName: "iqn.1993-08.org.debian:01:petfabrictestb"})
	return a, b
}

// TestRWOMountRefusedWhileAnotherNodeHoldsIt is issue 9 item 4: a ReadWriteOnce volume is
// mounted on node-a; node-b's mount (a pod with spec.nodeName, past the extender) fails naming
// the holder, leaves nothing, and works once node-a has unmounted.
func TestRWOMountRefusedWhileAnotherNodeHoldsIt(t *testing.T) {
	na, nb := twoNodes(t, nil)
	id := "pv-rwo"
	da, db := na.PodDir("a"), nb.PodDir("b")
	opts := na.Options(id, nil)
	na.mustMount(da, opts)
	writeFile(t, da, "f", "written on node-a")

	r := nb.mount(db, opts)
	require.Equal(t, flex.StatusFailure, r.Reply.Status, "a second node must not mount a RWO volume: %s", r.Reply.Message)
	assert.Contains(t, r.Reply.Message, "ReadWriteOnce")
	assert.Contains(t, r.Reply.Message, na.InitiatorName)
	assert.Contains(t, r.Reply.Message, `node "node-a"`)
	assert.Contains(t, r.Reply.Message, "unmounts it or is fenced")
	nb.assertLeftNothing(id, db, 0)
	na.assertAttached(id, da)

	na.mustUnmount(da)
	nb.mustMount(db, opts)
	assert.Equal(t, "written on node-a", readFile(t, db, "f"))
	assert.Equal(t, []string{nb.InitiatorName}, nb.ACL(id))
	nb.mustUnmount(db)
	assert.Empty(t, nb.ACL(id))
}

// TestRWORaceHasExactlyOneWinner is issue 9 item 4: two nodes mount one RWO volume at the same
// instant, round after round. Exactly one wins each round; the loser leaves no ACL entry, no
// login and no state. Run with the ACL read back in grant order and newest first: the driver
// must not depend on an order the API does not document.
func TestRWORaceHasExactlyOneWinner(t *testing.T) {
	for _, newestFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("newestFirst=%v", newestFirst), func(t *testing.T) {
			na, nb := twoNodes(t, func(o *fake.Options) { o.ACLNewestFirst = newestFirst })
			id := "pv-race"
			opts := na.Options(id, nil)
			const rounds = 4
			wins := map[string]int{}
			for round := range rounds {
				nodes := []*node{na, nb}
				dirs := []string{na.PodDir(fmt.Sprintf("a%d", round)), nb.PodDir(fmt.Sprintf("b%d", round))}
				logins := []int{na.logins(id), nb.logins(id)}
				results := make([]result, 2)
				var ready, wg sync.WaitGroup
				start := make(chan struct{})
				ready.Add(2)
				for i := range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						cmd := exec.Command(driverBin, "mount", dirs[i], opts)
						cmd.Env = append(os.Environ(), flex.EnvConfig+"="+nodes[i].ConfigFile)
						ready.Done()
						<-start // barrier: both processes start together
						out, err := cmd.CombinedOutput()
						results[i] = parseResult(t, out, err)
					}()
				}
				ready.Wait()
				close(start)
				wg.Wait()
				var winner, loser int
				switch {
				case results[0].Reply.Status == flex.StatusSuccess && results[1].Reply.Status == flex.StatusFailure:
					winner, loser = 0, 1
				case results[1].Reply.Status == flex.StatusSuccess && results[0].Reply.Status == flex.StatusFailure:
					winner, loser = 1, 0
				default:
					t.Fatalf("round %d: want exactly one winner, got %q (%s) and %q (%s)", round,
						results[0].Reply.Status, results[0].Reply.Message, results[1].Reply.Status, results[1].Reply.Message)
				}
				w, l := nodes[winner], nodes[loser]
				wins[w.NodeName]++
				assert.Contains(t, results[loser].Reply.Message, w.InitiatorName, "the loser names the holder")
				assert.Equal(t, []string{w.InitiatorName}, w.ACL(id), "round %d: only the winner in the ACL", round)
				assert.Nil(t, l.record(id), "round %d: the loser keeps no record", round)
				assert.NotContains(t, l.Mounts(), dirs[loser])
				assert.Equal(t, logins[loser], l.logins(id), "round %d: the loser never logged in", round)
				links, _ := filepath.Glob(filepath.Join(l.ByPathDir, "*"))
				assert.Empty(t, links)
				writeFile(t, dirs[winner], fmt.Sprintf("round%d", round), w.NodeName)
				r := run(t, w.ConfigFile, nil, "unmount", dirs[winner])
				require.Equal(t, flex.StatusSuccess, r.Reply.Status, r.Reply.Message)
				assert.Empty(t, w.ACL(id))
			}
			var waits, withdrawals int
			for _, nd := range []*node{na, nb} {
				waits += strings.Count(nd.LogText(), "another node raced into the ACL; waiting for it to withdraw")
				withdrawals += strings.Count(nd.LogText(), `"addedByThisCall":true`)
			}
			t.Logf("wins: %v; after their own add, nodes saw the other in the ACL and waited %d times and withdrew %d times", wins, waits, withdrawals)
		})
	}
}

// parseResult is run's decoding for a command run by the caller.
func parseResult(t *testing.T, out []byte, err error) result {
	r := result{Raw: string(out)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.Killed = true
			return r
		}
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Errorf("running the driver: %v", err)
		return r
	}
	if err := json.Unmarshal(out, &r.Reply); err != nil {
		t.Errorf("output must be one JSON reply: %q", out)
	}
	return r
}

// TestReadOnlyManyVolume is issue 9 item 4 (ReadOnlyMany): any number of nodes, every mount
// read-only even when kubelet asks for rw, no fence, and a blank volume is never formatted.
func TestReadOnlyManyVolume(t *testing.T) {
	na, nb := twoNodes(t, nil)
	id := "pv-rox"
	da, db := na.PodDir("a"), nb.PodDir("b")
	// ext4: the two stand-in nodes share one host, where XFS refuses a second device with the
	// same filesystem UUID; real nodes each see their own.
	na.mustMount(da, na.Options(id, map[string]string{"kubernetes.io/fsType": "ext4"})) // populate it read-write first (RWO)
	writeFile(t, da, "shared", "for every reader")
	na.mustUnmount(da)

	rox := na.Options(id, map[string]string{pvoptions.OptAccessMode: pvoptions.AccessReadOnlyMany, "kubernetes.io/readwrite": "rw",
		"kubernetes.io/fsType": "ext4"})
	na.mustMount(da, rox)
	nb.mustMount(db, rox)
	assert.ElementsMatch(t, []string{na.InitiatorName, nb.InitiatorName}, na.ACL(id), "no fence for ReadOnlyMany")
	for _, d := range []string{da, db} {
		assert.Equal(t, "for every reader", readFile(t, d, "shared"))
		err := os.WriteFile(filepath.Join(d, "w"), []byte("x"), 0o644)
		require.Error(t, err, "every ReadOnlyMany mount is read-only")
		assert.ErrorIs(t, err, syscall.EROFS)
	}
	na.mustUnmount(da)
	nb.mustUnmount(db)
	assert.Empty(t, na.ACL(id))

	na.sub("missing volume is never created", func(t *testing.T) {
		d := na.PodDir("missing")
		r := na.mount(d, na.Options("pv-rox-missing", map[string]string{pvoptions.OptAccessMode: pvoptions.AccessReadOnlyMany}))
		require.Equal(t, flex.StatusFailure, r.Reply.Status, "must be refused: %s", r.Reply.Message)
		assert.Contains(t, r.Reply.Message, "ReadOnlyMany")
		assert.Contains(t, r.Reply.Message, "does not exist")
		na.assertNoAppInstance("pv-rox-missing")
		na.assertLeftNothing("pv-rox-missing", d, 0)
	})
	na.sub("blank volume is never formatted", func(t *testing.T) {
		blank := "pv-rox-blank"
		_, err := na.Client.CreateAppInstance(context.Background(), datera.CreateVolumeRequest{Name: blank, SizeGiB: 1, ReplicaCount: 1})
		require.NoError(t, err)
		d := na.PodDir("blank")
		r := na.mount(d, na.Options(blank, map[string]string{pvoptions.OptAccessMode: pvoptions.AccessReadOnlyMany}))
		require.Equal(t, flex.StatusFailure, r.Reply.Status, "must be refused: %s", r.Reply.Message)
		assert.Contains(t, r.Reply.Message, "ReadOnlyMany")
		assert.Contains(t, r.Reply.Message, "blank")
		for _, line := range strings.Split(na.LogText(), "\n") {
			assert.False(t, strings.Contains(line, `"event":"format"`) && strings.Contains(line, blank), "not formatted: %s", line)
		}
		out, _ := exec.Command("blkid", "-p", na.Backing(blank)).CombinedOutput()
		assert.Empty(t, strings.TrimSpace(string(out)), "still blank")
		loginsAfter := na.logins(blank) // the probe needs the device, so node-a logged in once
		na.assertLeftNothing(blank, d, loginsAfter)
		assert.Empty(t, na.ACL(blank))
	})
	na.sub("unknown access mode", func(t *testing.T) {
		d := na.PodDir("rwx")
		r := na.mount(d, na.Options("pv-rwx", map[string]string{pvoptions.OptAccessMode: "ReadWriteMany"}))
		require.Equal(t, flex.StatusFailure, r.Reply.Status)
		assert.Contains(t, r.Reply.Message, `option accessMode "ReadWriteMany"`)
		na.assertNoAppInstance("pv-rwx")
	})
}

// TestCrashHooksAreNotInProductionBuild is issue 9 (Smaller): the binary built without test
// tags ignores PETFABRIC_FLEX_CRASH_AT. The production build cannot use the loop stand-in, so a
// stand-in iscsiadm on PATH answers the initiator's commands; the mount passes the login step
// it was told to die at and fails later, waiting for a device that never appears.
func TestCrashHooksAreNotInProductionBuild(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	dir := t.TempDir()
	prod := filepath.Join(dir, "iscsi")
	out, err := exec.Command("go", "build", "-o", prod, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	script := "#!/bin/sh\n# iscsiadm stand-in: no sessions, every other command succeeds\n" +
		"case \"$*\" in *'-m session'*) exit 21;; esac\nexit 0\n"
	require.NoError(t, os.WriteFile(filepath.Join(bin, "iscsiadm"), []byte(script), 0o755))
	n.writeConfig(map[string]any{"initiator": nil, "initiatorDir": nil, "deviceWaitTimeout": "1s"})

	id := "pv-prod"
	cmd := exec.Command(prod, "mount", n.PodDir("p"), n.Options(id, nil))
	cmd.Env = append(os.Environ(), flex.EnvConfig+"="+n.ConfigFile, flex.EnvCrashAt+"="+flex.StepLogin,
		"PATH="+bin+":"+os.Getenv("PATH"))
	out, err = cmd.CombinedOutput()
	r := parseResult(t, out, err)
	require.False(t, r.Killed, "the production build must not die at a crash point")
	require.Equal(t, flex.StatusFailure, r.Reply.Status, "%s", out)
	assert.Contains(t, r.Reply.Message, "waiting for the volume's device", "it went past the login step")
	assert.Nil(t, n.record(id), "and rolled back")
}

// crash simulates the sudden death of a node: its mounts and sessions vanish (as at power loss)
// while its state directory and its ACL entry stay.
func (n *node) crash(id string) {
	n.t.Helper()
	mounts := n.Mounts()
	for i := len(mounts) - 1; i >= 0; i-- {
		out, err := exec.Command("umount", "-l", mounts[i]).CombinedOutput()
		require.NoError(n.t, err, "%s", out)
	}
	require.NoError(n.t, flextest.DetachBacking(context.Background(), n.Backing(id)))
	links, _ := filepath.Glob(filepath.Join(n.ByPathDir, "*"))
	for _, l := range links {
		require.NoError(n.t, os.Remove(l))
	}
}

// TestRWOFencedHolder is issue 9 item 4 from the driver's side of fencing: node-a holds a RWO
// volume; petfabric's reconcile loop fences it (removes its initiator from the ACL). From then
// on node-a gives the volume to no new pod; node-b's mount proceeds, and logs in only after
// node-a's entry is gone; node-a's later cleanup removes only its own entry, never node-b's.
func TestRWOFencedHolder(t *testing.T) {
	na, nb := twoNodes(t, nil)
	id := "pv-fenced"
	opts := na.Options(id, nil)
	a1, a2, b1 := na.PodDir("a1"), na.PodDir("a2"), nb.PodDir("b1")
	na.mustMount(a1, opts)
	writeFile(t, a1, "f", "written on node-a")
	r := nb.mount(b1, opts)
	require.Equal(t, flex.StatusFailure, r.Reply.Status, "a live holder is never overridden: %s", r.Reply.Message)

	// The loop fences node-a.
	require.NoError(t, na.Client.RemoveInitiatorFromACL(context.Background(), id, datera.StorageInstanceName, na.InitiatorName))
	na.writeConfig(map[string]any{"accessCheckCacheTTL": "0s"}) // the last check of node-a is still cached otherwise
	r = na.mount(a2, opts)
	require.Equal(t, flex.StatusFailure, r.Reply.Status, "a fenced node must not give the volume to a new pod: %s", r.Reply.Message)
	assert.Contains(t, r.Reply.Message, "no longer in its ACL")
	assert.NotContains(t, na.Mounts(), a2)
	assert.Contains(t, na.Mounts(), a1, "the refusal leaves node-a's existing mount alone")

	// node-a dies; node-b takes over.
	na.crash(id)
	loginsBefore := nb.logins(id)
	nb.mustMount(b1, opts)
	assert.Equal(t, "written on node-a", readFile(t, b1, "f"))
	assert.Equal(t, []string{nb.InitiatorName}, nb.ACL(id))
	assert.Equal(t, loginsBefore+1, nb.logins(id))

	// node-a comes back and kubelet cleans up its old pod: only node-a's own traces go.
	na.mustUnmount(a1)
	assert.Nil(t, na.record(id))
	assert.Equal(t, []string{nb.InitiatorName}, nb.ACL(id), "node-a's cleanup never removes node-b")
	nb.assertAttached(id, b1)
	nb.mustUnmount(b1)
	assert.Empty(t, nb.ACL(id))
}

// TestHalfDoneAttachmentRefusesForeignCredentials is issue 9 item 1 on a volume whose attach
// was interrupted (the driver died after logging in; kubelet has not retried yet): a foreign
// mount of the same volumeID must not finish the attachment, nor roll it back with its own
// credentials (logging the node out, storing its credentials in place of the real ones).
func TestHalfDoneAttachmentRefusesForeignCredentials(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{Sim: withTeamB})
	id := "pv-half"
	a := n.PodDir("a")
	opts := n.Options(id, nil)
	r := n.mount(a, opts, flex.EnvCrashAt+"="+flex.StepLogin)
	require.True(t, r.Killed, "the driver must die after logging in")
	stored := readFile(t, filepath.Join(n.StateDir, "credentials"), id+".json")
	loops, err := flextest.LoopsOf(n.Backing(id))
	require.NoError(t, err)
	require.Len(t, loops, 1)

	for _, tc := range []struct{ name, user, password string }{
		{"made-up credentials", "nosuchuser", "Made_up_pw.9"},
		{"valid credentials of another tenant", teamBUser, teamBPassword},
	} {
		n.sub(tc.name, func(t *testing.T) {
			evil := n.PodDir("evil")
			r := n.mount(evil, n.Options(id, secretOpts(tc.user, tc.password)))
			require.Equal(t, flex.StatusFailure, r.Reply.Status, "the attack must fail: %s", r.Reply.Message)
			assert.Contains(t, r.Reply.Message, "cannot access volume "+id)
			assert.NotContains(t, n.Mounts(), evil)
			now, err := flextest.LoopsOf(n.Backing(id))
			require.NoError(t, err)
			assert.Equal(t, loops, now, "the interrupted session is not logged out")
			assert.Equal(t, []string{n.InitiatorName}, n.ACL(id), "nor the ACL entry removed")
			assert.Equal(t, stored, readFile(t, filepath.Join(n.StateDir, "credentials"), id+".json"), "the stored credentials are the real ones")
			require.NotNil(t, n.record(id))
			assert.Equal(t, flexstate.PhaseAttaching, n.record(id).Phase)
		})
	}
	n.mustMount(a, opts) // kubelet's retry finishes the attachment
	n.assertAttached(id, a)
	n.mustUnmount(a)
	n.assertDetached(id)
}
