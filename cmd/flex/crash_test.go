package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// TestKillDuringMountConverges SIGKILLs the real driver process right after each step of a first
// mount (fresh, blank volume), then runs the same mount again without the hook: it must succeed
// with exactly one session and one ACL entry, the data must survive unmount and remount, and the
// final unmount must leave nothing behind.
func TestKillDuringMountConverges(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	for i, step := range flex.MountSteps {
		t.Run(step, func(t *testing.T) {
			n.t = t
			fs := []string{"xfs", "ext4"}[i%2]
			id := fmt.Sprintf("pv-kill-m%d", i)
			opts := n.Options(id, map[string]string{"kubernetes.io/fsType": fs})
			a, b := n.PodDir(id+"-a"), n.PodDir(id+"-b")

			r := n.mount(a, opts, flex.EnvCrashAt+"="+step)
			require.True(t, r.Killed, "the driver must die at %s, got %+v", step, r)

			n.mustMount(a, opts)
			n.assertAttached(id, a)
			writeFile(t, a, "data", "survives "+step)
			n.mustUnmount(a)
			n.assertDetached(id)
			n.mustMount(b, opts)
			assert.Equal(t, "survives "+step, readFile(t, b, "data"))
			n.assertAttached(id, b)
			n.mustUnmount(b)
			n.assertDetached(id)
			formats := 0
			for _, line := range strings.Split(n.LogText(), "\n") {
				if strings.Contains(line, `"event":"format"`) && strings.Contains(line, `"volumeID":"`+id+`"`) {
					formats++
				}
			}
			assert.Equal(t, 1, formats, "formatted once, never again after the kill")
			// Two attaches, two logins: a retry after a kill past "login" reuses the session.
			assert.Equal(t, 2, flextest.Logins(n.TargetsDir, n.IQN(id)), "one login per attach")
		})
	}
}

// TestKillDuringUnmountConverges SIGKILLs the driver after each unmount step of the last pod
// using a volume, re-runs unmount, and checks that nothing is left and the data is intact on the
// next mount. It also kills after each step with a second pod still using the volume: the
// volume must stay attached for that pod.
func TestKillDuringUnmountConverges(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	for i, step := range flex.UnmountSteps {
		t.Run(step, func(t *testing.T) {
			n.t = t
			id := fmt.Sprintf("pv-kill-u%d", i)
			opts := n.Options(id, nil)
			a, b := n.PodDir(id+"-a"), n.PodDir(id+"-b")
			n.mustMount(a, opts)
			writeFile(t, a, "data", "kept through "+step)

			r := n.unmount(a, flex.EnvCrashAt+"="+step)
			require.True(t, r.Killed, "the driver must die at %s, got %+v", step, r)
			n.mustUnmount(a)
			n.assertDetached(id)
			_, err := os.Stat(a)
			assert.True(t, os.IsNotExist(err))

			n.mustMount(b, opts)
			assert.Equal(t, "kept through "+step, readFile(t, b, "data"))
			n.mustUnmount(b)
			n.assertDetached(id)
		})
	}
	// With another pod on the volume only the first two steps exist; the volume stays attached.
	for _, step := range []string{flex.StepUnmountBind, flex.StepMetadataUpdate} {
		t.Run("shared-"+step, func(t *testing.T) {
			n.t = t
			id := "pv-kill-shared-" + step
			opts := n.Options(id, nil)
			a, b := n.PodDir(id+"-a"), n.PodDir(id+"-b")
			n.mustMount(a, opts)
			n.mustMount(b, opts)
			r := n.unmount(a, flex.EnvCrashAt+"="+step)
			require.True(t, r.Killed)
			n.mustUnmount(a)
			n.assertAttached(id, b)
			n.mustUnmount(b)
			n.assertDetached(id)
		})
	}
}

// TestKillLeavesRecordForAgent: after a crash mid-mount the volume's metadata file exists (the
// node agent must count the volume as attached here), and it names what unmount needs.
func TestKillLeavesRecordForAgent(t *testing.T) {
	n := newNode(t, flextest.EnvOptions{})
	id := "pv-agent"
	r := n.mount(n.PodDir("a"), n.Options(id, nil), flex.EnvCrashAt+"="+flex.StepLogin)
	require.True(t, r.Killed)
	rec, err := flex.State{Dir: n.StateDir}.Load(id)
	require.NoError(t, err)
	require.NotNil(t, rec)
	assert.Equal(t, flexstate.PhaseAttaching, rec.Phase)
	assert.Equal(t, n.IQN(id), rec.IQN)
	assert.Equal(t, []string{"192.0.2.1:3260"}, rec.Portals)
	assert.Equal(t, flextest.InitiatorName, rec.InitiatorName)
	assert.Equal(t, filepath.Join(n.GlobalDir, id), rec.GlobalMountPath)
	entries, _ := os.ReadDir(n.StateDir)
	var jsonFiles []string
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".json" && e.Type().IsRegular() {
			jsonFiles = append(jsonFiles, e.Name())
		}
	}
	assert.Equal(t, []string{id + ".json"}, jsonFiles, "exactly one metadata file per volume, locks kept elsewhere")
	n.mustMount(n.PodDir("a"), n.Options(id, nil))
	n.mustUnmount(n.PodDir("a"))
	n.assertDetached(id)
}
