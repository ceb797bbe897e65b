package datera_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// The contract suite: every client operation against the simulator, which follows the research
// notes. A change on either side that breaks the wire contract fails here.

func TestVolumeLifecycle(t *testing.T) {
	s := newSim(t, fake.Options{Portals: []string{"192.0.2.10", "192.0.2.11"}})
	c := newClient(t, s)
	ctx := context.Background()

	ai, err := c.CreateAppInstance(ctx, datera.CreateVolumeRequest{
		Name: "pvc-lifecycle", SizeGiB: 5, ReplicaCount: 2, PlacementMode: datera.PlacementAllFlash,
	})
	require.NoError(t, err)
	assert.Equal(t, "pvc-lifecycle", ai.Name)
	assert.Equal(t, "/app_instances/"+ai.ID, ai.Path, "paths use the id, not the name")
	assert.Equal(t, "deny_all", ai.AccessControlMode)
	si, v, ok := ai.Volume()
	require.True(t, ok)
	assert.Equal(t, datera.StorageInstanceName, si.Name)
	assert.Equal(t, datera.VolumeName, v.Name)
	assert.EqualValues(t, 5, v.Size)
	assert.Equal(t, 2, v.ReplicaCount)
	assert.Equal(t, datera.PlacementAllFlash, v.PlacementMode)
	assert.Equal(t, "/access_network_ip_pools/default", si.IPPool.Path)

	got, err := c.GetAppInstance(ctx, "pvc-lifecycle")
	require.NoError(t, err)
	assert.Equal(t, ai.ID, got.ID)
	byID, err := c.GetAppInstance(ctx, ai.ID)
	require.NoError(t, err, "the :id slot also takes the id")
	assert.Equal(t, "pvc-lifecycle", byID.Name)

	_, err = c.Access(ctx, "pvc-lifecycle")
	require.ErrorIs(t, err, datera.ErrNotReady, "an offline volume has no usable access")

	in, err := c.RegisterInitiator(ctx, testIQN, "node-a", true)
	require.NoError(t, err)
	assert.Equal(t, "/initiators/"+testIQN, in.Path)
	assert.Equal(t, "/root", in.Tenant)
	require.NoError(t, c.AddInitiatorToACL(ctx, "pvc-lifecycle", datera.StorageInstanceName, testIQN))

	on, err := c.SetAdminState(ctx, "pvc-lifecycle", datera.Online, false)
	require.NoError(t, err)
	assert.Equal(t, datera.Online, on.AdminState)
	avail, err := c.WaitAvailable(ctx, "pvc-lifecycle")
	require.NoError(t, err)
	asi, _, _ := avail.Volume()
	assert.Equal(t, datera.OpStateAvailable, asi.OpState)
	assert.True(t, asi.ACLPolicy.HasInitiator(testIQN))

	target, err := c.Access(ctx, "pvc-lifecycle")
	require.NoError(t, err)
	assert.Regexp(t, `^iqn\.2013-05\.com\.daterainc:tc:01:sn:[0-9a-f]{16}$`, target.IQN)
	assert.Equal(t, []string{"192.0.2.10:3260", "192.0.2.11:3260"}, target.Portals)

	pp, err := c.SetPerformancePolicy(ctx, "pvc-lifecycle", datera.PerformancePolicy{TotalIOPSMax: 1000, TotalBandwidthMax: 2048})
	require.NoError(t, err)
	assert.EqualValues(t, 1000, pp.TotalIOPSMax)
	assert.EqualValues(t, 2048, pp.TotalBandwidthMax)

	grown, err := c.Resize(ctx, "pvc-lifecycle", 8)
	require.NoError(t, err)
	assert.EqualValues(t, 8, grown.SizeGiB())
	assert.Equal(t, datera.Online, grown.AdminState, "resize works online")

	require.NoError(t, c.RemoveInitiatorFromACL(ctx, "pvc-lifecycle", datera.StorageInstanceName, testIQN))
	acl, err := c.GetACL(ctx, "pvc-lifecycle", datera.StorageInstanceName)
	require.NoError(t, err)
	assert.Empty(t, acl.Initiators)

	require.NoError(t, c.DeleteAppInstance(ctx, "pvc-lifecycle"), "delete offlines an online volume first")
	_, err = c.GetAppInstance(ctx, "pvc-lifecycle")
	require.ErrorIs(t, err, datera.ErrNotFound)
	require.NoError(t, c.DeleteAppInstance(ctx, "pvc-lifecycle"), "deleting a missing volume is success")
}

func TestCreateAppInstance(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	first, err := c.CreateAppInstance(ctx, vol("pvc-create", 10))
	require.NoError(t, err)

	tests := []struct {
		name    string
		req     datera.CreateVolumeRequest
		wantErr error
		sent    bool // whether a request reaches the server
	}{
		{"same name and size is success", vol("pvc-create", 10), nil, true},
		{"same name, other size is a conflict", vol("pvc-create", 11), datera.ErrConflict, true},
		{"name too short", vol("ab", 1), datera.ErrValidation, false},
		{"name starting with a digit", vol("1abc", 1), datera.ErrValidation, false},
		{"name with a slash", vol("a/bcd", 1), datera.ErrValidation, false},
		{"name of 65 characters", vol("a"+fmt.Sprintf("%064d", 0), 1), datera.ErrValidation, false},
		{"size 0", vol("pvc-zero", 0), datera.ErrValidation, false},
		{"size above 32768 GiB", vol("pvc-huge", 32769), datera.ErrValidation, false},
		{"replica 6", datera.CreateVolumeRequest{Name: "pvc-r6", SizeGiB: 1, ReplicaCount: 6}, datera.ErrValidation, false},
		{"replica -1", datera.CreateVolumeRequest{Name: "pvc-rneg", SizeGiB: 1, ReplicaCount: -1}, datera.ErrValidation, false},
		{"unknown placement", datera.CreateVolumeRequest{Name: "pvc-pm", SizeGiB: 1, PlacementMode: "fast"}, datera.ErrValidation, false},
		{"bad ip pool name", datera.CreateVolumeRequest{Name: "pvc-pool", SizeGiB: 1, IPPool: "x"}, datera.ErrValidation, false},
		{"unknown ip pool is the server's 404", datera.CreateVolumeRequest{Name: "pvc-pool2", SizeGiB: 1, IPPool: "nopool"}, datera.ErrNotFound, true},
		{"replica 1 and defaults", datera.CreateVolumeRequest{Name: "pvc-r1", SizeGiB: 1, ReplicaCount: 1}, nil, true},
		{"64-character name", vol("a"+fmt.Sprintf("%063d", 0), 1), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.ResetRequests()
			ai, err := c.CreateAppInstance(ctx, tt.req)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.Nil(t, ai)
			} else {
				require.NoError(t, err)
				assert.EqualValues(t, tt.req.SizeGiB, ai.SizeGiB())
			}
			assert.Equal(t, tt.sent, s.Requests(fake.AllRoutes) > 0, "requests sent")
		})
	}

	again, err := c.CreateAppInstance(ctx, vol("pvc-create", 10))
	require.NoError(t, err)
	assert.Equal(t, first.ID, again.ID, "an idempotent create returns the existing app_instance")
	_, err = c.CreateAppInstance(ctx, vol("pvc-create", 11))
	assert.ErrorContains(t, err, "already exists with 10 GiB, requested 11 GiB")

	r1, err := c.GetAppInstance(ctx, "pvc-r1")
	require.NoError(t, err)
	_, v, _ := r1.Volume()
	assert.Equal(t, 1, v.ReplicaCount)
	assert.Equal(t, datera.PlacementHybrid, v.PlacementMode, "placement defaults to hybrid")
	d, err := c.CreateAppInstance(ctx, datera.CreateVolumeRequest{Name: "pvc-default-replica", SizeGiB: 1})
	require.NoError(t, err)
	_, v, _ = d.Volume()
	assert.Equal(t, 3, v.ReplicaCount, "replica count defaults to 3")
}

// A create that loses the race between its probe and its POST (409 without any connection
// error) resolves by reading the winner, with the same size rule.
func TestCreateRaceConflict(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-race", 4))
	require.NoError(t, err)

	// Make the probe miss, as if the other creator had not finished yet.
	s.SetFault("GET /app_instances/{ai}", fake.Fault{Burst: 1, Status: 404})
	ai, err := c.CreateAppInstance(ctx, vol("pvc-race", 4))
	require.NoError(t, err)
	assert.EqualValues(t, 4, ai.SizeGiB())
	assert.Equal(t, 2, s.Requests("POST /app_instances"), "the second create did POST and got 409")

	s.SetFault("GET /app_instances/{ai}", fake.Fault{Burst: 1, Status: 404})
	_, err = c.CreateAppInstance(ctx, vol("pvc-race", 5))
	require.ErrorIs(t, err, datera.ErrConflict)
}

func TestCreateFromTemplate(t *testing.T) {
	s := newSim(t, fake.Options{})
	require.NoError(t, s.AddAppTemplate("/root", fake.AppTemplate{
		Name: "gold",
		StorageTemplates: []fake.StorageTemplate{{Name: "target-a", VolumeTemplates: []fake.VolumeTemplate{
			{Name: "lun-a", SizeGiB: 16, ReplicaCount: 3, PlacementMode: "all_flash"},
		}}},
	}))
	c := newClient(t, s)
	ctx := context.Background()

	tests := []struct {
		name     string
		req      datera.CreateVolumeRequest
		wantSize int64
		wantErr  error
	}{
		{"template size", datera.CreateVolumeRequest{Name: "pvc-gold-a", Template: "gold"}, 16, nil},
		{"size override", datera.CreateVolumeRequest{Name: "pvc-gold-b", Template: "gold", SizeGiB: 40}, 40, nil},
		{"missing template", datera.CreateVolumeRequest{Name: "pvc-gold-c", Template: "silver", SizeGiB: 40}, 0, datera.ErrNotFound},
		{"missing template without override", datera.CreateVolumeRequest{Name: "pvc-gold-d", Template: "silver"}, 0, datera.ErrNotFound},
		{"bad template name", datera.CreateVolumeRequest{Name: "pvc-gold-e", Template: "a b"}, 0, datera.ErrValidation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ai, err := c.CreateAppInstance(ctx, tt.req)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "/app_templates/gold", ai.AppTemplate.Path)
			si, v, ok := ai.Volume()
			require.True(t, ok)
			assert.Equal(t, "target-a", si.Name, "template names are kept")
			assert.Equal(t, tt.wantSize, v.Size)

			// The other operations find the template's storage_instance and volume.
			_, err = c.SetAdminState(ctx, tt.req.Name, datera.Online, false)
			require.NoError(t, err)
			target, err := c.Access(ctx, tt.req.Name)
			require.NoError(t, err)
			assert.Equal(t, "target-a", target.StorageInstance)
			grown, err := c.Resize(ctx, tt.req.Name, tt.wantSize+1)
			require.NoError(t, err)
			assert.Equal(t, tt.wantSize+1, grown.SizeGiB())
			_, err = c.SetPerformancePolicy(ctx, tt.req.Name, datera.PerformancePolicy{TotalIOPSMax: 5})
			require.NoError(t, err)
		})
	}
}

func TestSetAdminState(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-state", 1))
	require.NoError(t, err)

	tests := []struct {
		name    string
		state   datera.AdminState
		force   bool
		active  []string
		wantErr error
		want    datera.AdminState
	}{
		{"online", datera.Online, false, nil, nil, datera.Online},
		{"online again is harmless", datera.Online, false, nil, nil, datera.Online},
		{"offline with a logged-in initiator needs force", datera.Offline, false, []string{testIQN}, datera.ErrValidation, datera.Online},
		{"forced offline", datera.Offline, true, []string{testIQN}, nil, datera.Offline},
		{"offline again", datera.Offline, false, nil, nil, datera.Offline},
		{"bad state", "paused", false, nil, datera.ErrValidation, datera.Offline},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.active != nil {
				require.NoError(t, s.SetActiveInitiators("/root", "pvc-state", datera.StorageInstanceName, tt.active))
			}
			_, err := c.SetAdminState(ctx, "pvc-state", tt.state, tt.force)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			ai, err := c.GetAppInstance(ctx, "pvc-state")
			require.NoError(t, err)
			assert.Equal(t, tt.want, ai.AdminState)
			si, _, _ := ai.Volume()
			if tt.want == datera.Offline {
				assert.Equal(t, "unavailable", si.OpState)
				assert.Empty(t, si.Access.IPs, "an offline target has no portals")
			}
		})
	}

	var apiErr *datera.APIError
	require.NoError(t, s.SetActiveInitiators("/root", "pvc-state", datera.StorageInstanceName, nil))
	_, err = c.SetAdminState(ctx, "pvc-state", datera.Online, false)
	require.NoError(t, err)
	require.NoError(t, s.SetActiveInitiators("/root", "pvc-state", datera.StorageInstanceName, []string{testIQN}))
	_, err = c.SetAdminState(ctx, "pvc-state", datera.Offline, false)
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, datera.NameInvalidRequest, apiErr.Name)
	assert.Equal(t, 400, apiErr.Status)
	assert.NotZero(t, apiErr.Code)
	assert.Contains(t, apiErr.Message, "override this warning")

	_, err = c.SetAdminState(ctx, "pvc-missing", datera.Online, false)
	require.ErrorIs(t, err, datera.ErrNotFound)
}

func TestWaitAvailable(t *testing.T) {
	s := newSim(t, fake.Options{OnlineDelay: 40 * time.Millisecond})
	c := newClient(t, s, func(cfg *datera.Config) { cfg.PollInterval = 5 * time.Millisecond })
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-wait", 1))
	require.NoError(t, err)

	_, err = c.WaitAvailable(ctx, "pvc-wait")
	require.ErrorIs(t, err, datera.ErrNotReady, "waiting on an offline volume fails fast")

	_, err = c.SetAdminState(ctx, "pvc-wait", datera.Online, false)
	require.NoError(t, err)
	_, err = c.Access(ctx, "pvc-wait")
	require.ErrorIs(t, err, datera.ErrNotReady, "right after online the target is not yet available")

	s.ResetRequests()
	start := time.Now()
	ai, err := c.WaitAvailable(ctx, "pvc-wait")
	require.NoError(t, err)
	assert.GreaterOrEqual(t, s.Requests("GET /app_instances/{ai}"), 2, "it polled")
	assert.Less(t, time.Since(start), time.Second)
	si, _, _ := ai.Volume()
	assert.Equal(t, datera.OpStateAvailable, si.OpState)
	assert.NotEmpty(t, si.Access.IPs)

	// Bounded by the caller's context.
	_, err = c.SetAdminState(ctx, "pvc-wait", datera.Offline, true)
	require.NoError(t, err)
	_, err = c.SetAdminState(ctx, "pvc-wait", datera.Online, false)
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = c.WaitAvailable(short, "pvc-wait")
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestInitiators(t *testing.T) {
	s := newSim(t, fake.Options{Tenants: []string{"/root/team-a"}})
	root := newClient(t, s)
	team := newClient(t, s, func(cfg *datera.Config) { cfg.Tenant = "team-a" })
	ctx := context.Background()
	assert.Equal(t, "/root/team-a", team.Tenant())

	_, err := root.RegisterInitiator(ctx, testIQN, "node-a", false)
	var apiErr *datera.APIError
	require.ErrorAs(t, err, &apiErr, "the first initiator of a tenant needs force (DAT-15931)")
	assert.Contains(t, apiErr.Message, "override this warning")
	require.ErrorIs(t, err, datera.ErrValidation)

	in, err := root.RegisterInitiator(ctx, testIQN, "node-a", true)
	require.NoError(t, err)
	assert.Equal(t, "/root", in.Tenant)
	again, err := root.RegisterInitiator(ctx, testIQN, "node-a", true)
	require.NoError(t, err, "registering twice is success")
	assert.Equal(t, in, again)

	inherited, err := team.GetInitiator(ctx, testIQN)
	require.NoError(t, err)
	assert.Equal(t, "/root", inherited.Tenant, "a sub-tenant sees /root's initiators")
	local, err := team.RegisterInitiator(ctx, testIQN, "node-a", false)
	require.NoError(t, err, "in a sub-tenant the client forces by itself")
	assert.Equal(t, "/root/team-a", local.Tenant, "an inherited initiator gets a local registration")

	_, err = root.GetInitiator(ctx, testIQN2)
	require.ErrorIs(t, err, datera.ErrNotFound)

	for _, bad := range []struct{ iqn, name string }{
		{"iqn.1993-08.org", "node"},             // too short
		{"iqn.93-08.org.debian:x", "node"},      // year
		{"iqn.1993-08.org/debian:01:x", "node"}, // slash
		{"naa.0123456789abcdef", "node"},        // not iqn/eui
		{testIQN, "n"},                          // label too short
		{testIQN, "1node"},                      // label starts with a digit
	} {
		_, err := root.RegisterInitiator(ctx, bad.iqn, bad.name, true)
		require.ErrorIs(t, err, datera.ErrValidation, "%s %s", bad.iqn, bad.name)
	}
	_, err = root.RegisterInitiator(ctx, "eui.0123456789ABCDEF", "eui-node", true)
	require.NoError(t, err, "EUI-64 ids are valid")
}

func TestACL(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-acl", 1))
	require.NoError(t, err)

	const n = 12
	iqns := make([]string, n)
	for i := range iqns {
		iqns[i] = fmt.Sprintf("iqn.1993-08.org.debian:01:node-%02d", i)
		_, err := c.RegisterInitiator(ctx, iqns[i], fmt.Sprintf("node-%02d", i), true)
		require.NoError(t, err)
	}

	// Concurrent grants for different nodes must all land (no lost update).
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, iqn := range iqns {
		wg.Go(func() { errs <- c.AddInitiatorToACL(ctx, "pvc-acl", datera.StorageInstanceName, iqn) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	acl, err := c.GetACL(ctx, "pvc-acl", datera.StorageInstanceName)
	require.NoError(t, err)
	require.Len(t, acl.Initiators, n)
	for _, iqn := range iqns {
		assert.True(t, acl.HasInitiator(iqn), iqn)
	}
	assert.Equal(t, "/root", acl.Initiators[0].Tenant, "GET returns more than the path")

	errs = make(chan error, n/2)
	for _, iqn := range iqns[:n/2] {
		wg.Go(func() { errs <- c.RemoveInitiatorFromACL(ctx, "pvc-acl", datera.StorageInstanceName, iqn) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	acl, err = c.GetACL(ctx, "pvc-acl", datera.StorageInstanceName)
	require.NoError(t, err)
	require.Len(t, acl.Initiators, n/2)
	for i, iqn := range iqns {
		assert.Equal(t, i >= n/2, acl.HasInitiator(iqn), iqn)
	}

	tests := []struct {
		name    string
		op      func() error
		wantErr error
	}{
		{"add present is success", func() error { return c.AddInitiatorToACL(ctx, "pvc-acl", datera.StorageInstanceName, iqns[n-1]) }, nil},
		{"remove absent is success", func() error { return c.RemoveInitiatorFromACL(ctx, "pvc-acl", datera.StorageInstanceName, iqns[0]) }, nil},
		{"add unregistered initiator", func() error { return c.AddInitiatorToACL(ctx, "pvc-acl", datera.StorageInstanceName, testIQN2) }, datera.ErrNotFound},
		{"add on missing volume", func() error { return c.AddInitiatorToACL(ctx, "pvc-nope", datera.StorageInstanceName, iqns[0]) }, datera.ErrNotFound},
		{"remove on missing volume", func() error { return c.RemoveInitiatorFromACL(ctx, "pvc-nope", datera.StorageInstanceName, iqns[0]) }, datera.ErrNotFound},
		{"remove on missing storage instance", func() error { return c.RemoveInitiatorFromACL(ctx, "pvc-acl", "storage-9", iqns[0]) }, datera.ErrNotFound},
		{"bad iqn", func() error { return c.AddInitiatorToACL(ctx, "pvc-acl", datera.StorageInstanceName, "node-a") }, datera.ErrValidation},
		{"bad storage instance name", func() error { return c.AddInitiatorToACL(ctx, "pvc-acl", "s", iqns[0]) }, datera.ErrValidation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.op()
			if tt.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
}

func TestResize(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-resize", 10))
	require.NoError(t, err)

	tests := []struct {
		name     string
		to       int64
		wantErr  error
		wantSize int64
		wantPUT  bool
	}{
		{"grow", 12, nil, 12, true},
		{"same size is a no-op", 12, nil, 12, false},
		{"shrink is refused", 11, datera.ErrValidation, 12, false},
		{"zero", 0, datera.ErrValidation, 12, false},
		{"beyond the maximum", 32769, datera.ErrValidation, 12, false},
		{"to the maximum", 32768, nil, 32768, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.ResetRequests()
			ai, err := c.Resize(ctx, "pvc-resize", tt.to)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
				assert.Equal(t, tt.wantSize, ai.SizeGiB())
			}
			assert.Equal(t, tt.wantPUT, s.Requests("PUT /app_instances/{ai}/storage_instances/{si}/volumes/{vol}") == 1)
			cur, err := c.GetAppInstance(ctx, "pvc-resize")
			require.NoError(t, err)
			assert.Equal(t, tt.wantSize, cur.SizeGiB())
		})
	}
	_, err = c.Resize(ctx, "pvc-missing", 20)
	require.ErrorIs(t, err, datera.ErrNotFound)
}

func TestPerformancePolicy(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-qos", 1))
	require.NoError(t, err)

	tests := []struct {
		name    string
		policy  datera.PerformancePolicy
		wantErr error
	}{
		{"create", datera.PerformancePolicy{TotalIOPSMax: 500}, nil},
		{"replace", datera.PerformancePolicy{TotalIOPSMax: 800, TotalBandwidthMax: 10240}, nil},
		{"unlimited", datera.PerformancePolicy{}, nil},
		{"maximum values", datera.PerformancePolicy{TotalIOPSMax: datera.MaxIOPS, WriteBandwidthMax: datera.MaxBandwidthKiB}, nil},
		{"iops too high", datera.PerformancePolicy{ReadIOPSMax: datera.MaxIOPS + 1}, datera.ErrValidation},
		{"negative bandwidth", datera.PerformancePolicy{TotalBandwidthMax: -1}, datera.ErrValidation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.SetPerformancePolicy(ctx, "pvc-qos", tt.policy)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.policy.TotalIOPSMax, got.TotalIOPSMax)
			ai, err := c.GetAppInstance(ctx, "pvc-qos")
			require.NoError(t, err)
			_, v, _ := ai.Volume()
			require.NotNil(t, v.PerformancePolicy)
			assert.Equal(t, tt.policy.TotalIOPSMax, v.PerformancePolicy.TotalIOPSMax)
			assert.Equal(t, tt.policy.TotalBandwidthMax, v.PerformancePolicy.TotalBandwidthMax)
			assert.Equal(t, tt.policy.WriteBandwidthMax, v.PerformancePolicy.WriteBandwidthMax)
		})
	}
}

func TestDeleteAppInstance(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-delete", 1))
	require.NoError(t, err)
	_, err = c.SetAdminState(ctx, "pvc-delete", datera.Online, false)
	require.NoError(t, err)
	require.NoError(t, s.SetActiveInitiators("/root", "pvc-delete", datera.StorageInstanceName, []string{testIQN}))

	require.NoError(t, c.DeleteAppInstance(ctx, "pvc-delete"), "online with a session: offlined with force, then deleted")
	_, err = c.GetAppInstance(ctx, "pvc-delete")
	require.ErrorIs(t, err, datera.ErrNotFound)
	require.NoError(t, c.DeleteAppInstance(ctx, "pvc-delete"))
	require.ErrorIs(t, c.DeleteAppInstance(ctx, "x"), datera.ErrValidation)
}

func TestErrorClasses(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-errors", 1))
	require.NoError(t, err)

	tests := []struct {
		name       string
		fault      fake.Fault
		wantClass  error
		wantName   string
		wantStatus int
	}{
		{"404 NotFoundError", fake.Fault{Burst: 1, Status: 404}, datera.ErrNotFound, datera.NameNotFound, 404},
		{"409 ConflictError", fake.Fault{Burst: 1, Status: 409}, datera.ErrConflict, datera.NameConflict, 409},
		{"400 InvalidRequestError", fake.Fault{Burst: 1, Status: 400}, datera.ErrValidation, datera.NameInvalidRequest, 400},
		{"422 ValidationFailedError", fake.Fault{Burst: 1, Status: 422}, datera.ErrValidation, datera.NameValidationFailed, 422},
		{"503 that never clears", fake.Fault{ErrorRate: 1}, datera.ErrUnavailable, "", 503},
		{"500 still initializing that never clears", fake.Fault{ErrorRate: 1, Status: 500}, datera.ErrUnavailable, "", 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.SetFault("GET /app_instances/{ai}", tt.fault)
			defer s.SetFault("GET /app_instances/{ai}", fake.Fault{})
			s.ResetRequests()
			_, err := c.GetAppInstance(ctx, "pvc-errors")
			require.ErrorIs(t, err, tt.wantClass)
			var apiErr *datera.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, tt.wantStatus, apiErr.Status)
			assert.Equal(t, tt.wantName, apiErr.Name)
			assert.NotEmpty(t, apiErr.Message)
			if tt.wantName != "" {
				assert.NotZero(t, apiErr.Code, "Datera's code is carried")
			}
			for _, other := range []error{datera.ErrNotFound, datera.ErrConflict, datera.ErrValidation, datera.ErrUnavailable, datera.ErrAuth} {
				if other != tt.wantClass {
					assert.NotErrorIs(t, err, other)
				}
			}
			want := 1
			if tt.wantClass == datera.ErrUnavailable {
				want = fastRetry.Attempts
			}
			assert.Equal(t, want, s.Requests("GET /app_instances/{ai}"), "only unavailability is retried")
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		bad := newClient(t, s, func(cfg *datera.Config) { cfg.Password = "wrong-password" })
		s.ResetRequests()
		_, err := bad.GetAppInstance(ctx, "pvc-errors")
		require.ErrorIs(t, err, datera.ErrAuth)
		var apiErr *datera.APIError
		require.ErrorAs(t, err, &apiErr)
		assert.Equal(t, datera.NameAuthFailed, apiErr.Name)
		assert.Equal(t, 1, s.Requests("PUT /login"), "a failed login is not retried")
		assert.Zero(t, s.Requests("GET /app_instances/{ai}"))
	})
}

func TestTokenExpiryMidSequence(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()

	_, err := c.CreateAppInstance(ctx, vol("pvc-expiry", 1))
	require.NoError(t, err)
	assert.Equal(t, 1, s.Requests("PUT /login"), "lazy login happened once")

	s.ExpireSessions()
	_, err = c.SetAdminState(ctx, "pvc-expiry", datera.Online, false)
	require.NoError(t, err)
	assert.Equal(t, 2, s.Requests("PUT /login"), "one re-login after expiry")

	// Expiry on a specific route in the middle of the sequence.
	s.SetFault("PUT /app_instances/{ai}/storage_instances/{si}/acl_policy/initiators", fake.Fault{ExpireSessions: 1})
	_, err = c.RegisterInitiator(ctx, testIQN, "node-a", true)
	require.NoError(t, err)
	require.NoError(t, c.AddInitiatorToACL(ctx, "pvc-expiry", datera.StorageInstanceName, testIQN))
	assert.Equal(t, 3, s.Requests("PUT /login"))
	assert.Equal(t, 2, s.Requests("PUT /app_instances/{ai}/storage_instances/{si}/acl_policy/initiators"), "the request was replayed once")
	acl, err := c.GetACL(ctx, "pvc-expiry", datera.StorageInstanceName)
	require.NoError(t, err)
	assert.True(t, acl.HasInitiator(testIQN))

	// A resource that keeps answering 401 although login succeeds is not retried forever.
	s.SetFault("GET /app_instances/{ai}", fake.Fault{ExpireSessions: 1000})
	s.ResetRequests()
	_, err = c.GetAppInstance(ctx, "pvc-expiry")
	require.ErrorIs(t, err, datera.ErrAuth)
	assert.Equal(t, 1, s.Requests("PUT /login"), "exactly one re-login")
	assert.Equal(t, 2, s.Requests("GET /app_instances/{ai}"), "exactly one replay")
}

func TestTokenTTL(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }

	s := newSim(t, fake.Options{Now: clock})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-ttl", 1))
	require.NoError(t, err)
	advance(14 * time.Minute)
	_, err = c.GetAppInstance(ctx, "pvc-ttl")
	require.NoError(t, err)
	assert.Equal(t, 1, s.Requests("PUT /login"), "still valid after 14 minutes")
	advance(2 * time.Minute)
	_, err = c.GetAppInstance(ctx, "pvc-ttl")
	require.NoError(t, err)
	assert.Equal(t, 2, s.Requests("PUT /login"), "the 15-minute session expired and the client logged in again")
}

func TestConcurrentReloginIsSingleFlight(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-herd", 1))
	require.NoError(t, err)

	// Slow logins widen the window in which the 401s pile up.
	s.SetFault("PUT /login", fake.Fault{Latency: 20 * time.Millisecond})
	s.ExpireSessions()
	s.ResetRequests()
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := c.GetAppInstance(ctx, "pvc-herd")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 1, s.Requests("PUT /login"), "32 concurrent 401s cost one login")
	assert.Equal(t, 1, s.SessionCount())
}

// stormWorkload runs every client operation on a few volumes.
func stormWorkload(t *testing.T, c *datera.Client, prefix string) {
	ctx := context.Background()
	for i := range 5 {
		name := fmt.Sprintf("%s-%d", prefix, i)
		_, err := c.CreateAppInstance(ctx, vol(name, 2))
		require.NoError(t, err)
		_, err = c.RegisterInitiator(ctx, testIQN, "node-a", true)
		require.NoError(t, err)
		require.NoError(t, c.AddInitiatorToACL(ctx, name, datera.StorageInstanceName, testIQN))
		_, err = c.SetAdminState(ctx, name, datera.Online, false)
		require.NoError(t, err)
		_, err = c.WaitAvailable(ctx, name)
		require.NoError(t, err)
		target, err := c.Access(ctx, name)
		require.NoError(t, err)
		assert.NotEmpty(t, target.Portals)
		_, err = c.Resize(ctx, name, 3)
		require.NoError(t, err)
		_, err = c.SetPerformancePolicy(ctx, name, datera.PerformancePolicy{TotalIOPSMax: 100})
		require.NoError(t, err)
		require.NoError(t, c.RemoveInitiatorFromACL(ctx, name, datera.StorageInstanceName, testIQN))
		require.NoError(t, c.DeleteAppInstance(ctx, name))
		_, err = c.GetAppInstance(ctx, name)
		require.ErrorIs(t, err, datera.ErrNotFound)
	}
}

func TestStorm503Converges(t *testing.T) {
	storm := newSim(t, fake.Options{Seed: 7})
	c := newClient(t, storm, func(cfg *datera.Config) {
		cfg.Retry = datera.Retry{Initial: time.Millisecond, Max: 2 * time.Millisecond, Attempts: 40}
	})
	storm.SetFault(fake.AllRoutes, fake.Fault{ErrorRate: 0.5})
	stormWorkload(t, c, "pvc-storm")

	quiet := newSim(t, fake.Options{})
	stormWorkload(t, newClient(t, quiet), "pvc-quiet")

	ratio := float64(storm.Requests(fake.AllRoutes)) / float64(quiet.Requests(fake.AllRoutes))
	t.Logf("requests: %d under a 50%% 503 storm, %d without (x%.2f)", storm.Requests(fake.AllRoutes), quiet.Requests(fake.AllRoutes), ratio)
	assert.Greater(t, ratio, 1.5, "about every other request was refused and retried")
	assert.Less(t, ratio, 3.0)
}

func TestInitializing500IsRetried(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	s.SetFault(fake.AllRoutes, fake.Fault{Burst: 3, Status: 500})
	_, err := c.CreateAppInstance(context.Background(), vol("pvc-init", 1))
	require.NoError(t, err)
	assert.Equal(t, 4, s.Requests("PUT /login"), "the lazy login met the three 500s and was retried")
	assert.Equal(t, 1, s.Requests("POST /app_instances"))
}

// A POST whose response was lost (the connection closed after the server acted) is retried; the
// retry's 409 then resolves by GET, for app_instances and initiators.
func TestRetriedPOSTResolvesByGET(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()

	s.SetFault("POST /app_instances", fake.Fault{DropResponses: 1})
	ai, err := c.CreateAppInstance(ctx, vol("pvc-dropped", 3))
	require.NoError(t, err)
	assert.Equal(t, "pvc-dropped", ai.Name)
	assert.EqualValues(t, 3, ai.SizeGiB())
	assert.Equal(t, 2, s.Requests("POST /app_instances"), "first POST took effect but lost its answer; the retry got 409")

	s.SetFault("POST /initiators", fake.Fault{DropResponses: 1})
	in, err := c.RegisterInitiator(ctx, testIQN, "node-a", true)
	require.NoError(t, err)
	assert.Equal(t, testIQN, in.ID)
	assert.Equal(t, 2, s.Requests("POST /initiators"))

	// Dropped before handling: the retries simply succeed.
	s.SetFault("POST /app_instances", fake.Fault{DropRequests: 2})
	s.ResetRequests()
	_, err = c.CreateAppInstance(ctx, vol("pvc-dropped-2", 3))
	require.NoError(t, err)
	assert.Equal(t, 3, s.Requests("POST /app_instances"))
}

func TestContextCancellationStopsRetries(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s, func(cfg *datera.Config) {
		cfg.Retry = datera.Retry{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Attempts: 1000}
	})
	_, err := c.CreateAppInstance(context.Background(), vol("pvc-cancel", 1))
	require.NoError(t, err)
	s.SetFault(fake.AllRoutes, fake.Fault{ErrorRate: 1})

	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.GetAppInstance(ctx, "pvc-cancel")
		elapsed := time.Since(start)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, datera.ErrUnavailable, "the last error is kept")
		assert.Less(t, elapsed, 600*time.Millisecond, "stops promptly at the deadline, not after 1000 attempts")
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(60*time.Millisecond, cancel)
		start := time.Now()
		_, err := c.GetAppInstance(ctx, "pvc-cancel")
		require.ErrorIs(t, err, context.Canceled)
		assert.Less(t, time.Since(start), 500*time.Millisecond)
	})
	t.Run("slow server", func(t *testing.T) {
		s.SetFault(fake.AllRoutes, fake.Fault{Latency: 5 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 80*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.GetAppInstance(ctx, "pvc-cancel")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), time.Second, "an in-flight attempt is abandoned (the server would take 5 s)")
	})
}

func TestConnectionErrorsAreRetried(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.CreateAppInstance(ctx, vol("pvc-conn", 1))
	require.NoError(t, err)

	s.SetFault("PUT /app_instances/{ai}", fake.Fault{DropRequests: 3})
	_, err = c.SetAdminState(ctx, "pvc-conn", datera.Online, false)
	require.NoError(t, err)
	assert.Equal(t, 4, s.Requests("PUT /app_instances/{ai}"))

	// Nothing listens: refused connections are retried Attempts times, then reported.
	dead := newSim(t, fake.Options{})
	url := dead.http.URL
	dead.http.Close()
	var logs syncBuffer
	dc, err := datera.New(datera.Config{Endpoint: url, Username: "admin", Password: "password", Retry: fastRetry, Logger: debugLogger(&logs)})
	require.NoError(t, err)
	_, err = dc.GetAppInstance(ctx, "pvc-conn")
	require.Error(t, err)
	assert.ErrorContains(t, err, "giving up after 8 attempts")
	assert.ErrorContains(t, err, "connection refused")
	assert.Equal(t, 8, strings.Count(logs.String(), `"msg":"datera request"`), "eight attempts (of the login) were made")
}

func TestRequestHeaders(t *testing.T) {
	s, err := fake.New(fake.Options{Tenants: []string{"/root/team-a"}})
	require.NoError(t, err)
	rec := &headerRecorder{next: s}
	hs := newHTTPServer(t, rec)
	c, err := datera.New(datera.Config{Endpoint: hs, Username: "admin", Password: "password", Tenant: "team-a",
		DriverName: "petfabric-test/1.0", Retry: fastRetry})
	require.NoError(t, err)
	_, err = c.CreateAppInstance(context.Background(), vol("pvc-headers", 1))
	require.NoError(t, err)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.GreaterOrEqual(t, len(rec.seen), 3)
	for i, h := range rec.seen {
		assert.Equal(t, "petfabric-test/1.0", h.Get("Datera-Driver"), rec.urls[i])
		if rec.urls[i] == "PUT /v2.2/login" {
			assert.Empty(t, h.Get("Auth-Token"), "login carries no token")
			assert.Empty(t, h.Get("tenant"), "login carries no tenant")
			continue
		}
		assert.Regexp(t, `^[0-9a-f]{32}$`, h.Get("Auth-Token"), rec.urls[i])
		assert.Equal(t, "/root/team-a", h.Get("tenant"), rec.urls[i])
	}
	assert.Equal(t, "PUT /v2.2/login", rec.urls[0], "login is lazy: first request is the login")
}

func TestSubTenantIsolation(t *testing.T) {
	s := newSim(t, fake.Options{Tenants: []string{"/root/team-a", "/root/team-b"}})
	a := newClient(t, s, func(cfg *datera.Config) { cfg.Tenant = "/root/team-a" })
	b := newClient(t, s, func(cfg *datera.Config) { cfg.Tenant = "team-b" })
	ctx := context.Background()
	_, err := a.CreateAppInstance(ctx, vol("pvc-tenant", 1))
	require.NoError(t, err)
	_, err = b.GetAppInstance(ctx, "pvc-tenant")
	require.ErrorIs(t, err, datera.ErrNotFound, "app_instances are tenant-scoped")
	_, err = b.CreateAppInstance(ctx, vol("pvc-tenant", 2))
	require.NoError(t, err, "the same name in another tenant is another volume")

	unknown := newClient(t, s, func(cfg *datera.Config) { cfg.Tenant = "team-zz" })
	_, err = unknown.GetAppInstance(ctx, "pvc-tenant")
	require.ErrorIs(t, err, datera.ErrNotFound)
}

func TestConcurrentClientUse(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	_, err := c.RegisterInitiator(ctx, testIQN, "node-a", true)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			name := fmt.Sprintf("pvc-par-%02d", i)
			if _, err := c.CreateAppInstance(ctx, vol(name, 1)); err != nil {
				errs <- err
				return
			}
			if err := c.AddInitiatorToACL(ctx, name, datera.StorageInstanceName, testIQN); err != nil {
				errs <- err
				return
			}
			if i == 5 {
				s.ExpireSessions() // one expiry while the others are in flight
			}
			if _, err := c.SetAdminState(ctx, name, datera.Online, false); err != nil {
				errs <- err
				return
			}
			if _, err := c.Access(ctx, name); err != nil {
				errs <- err
				return
			}
			errs <- c.DeleteAppInstance(ctx, name)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestValidationBeforeSending(t *testing.T) {
	s := newSim(t, fake.Options{})
	c := newClient(t, s)
	ctx := context.Background()
	long := fmt.Sprintf("a%064d", 0)
	calls := map[string]func() error{
		"get":      func() error { _, err := c.GetAppInstance(ctx, "a"); return err },
		"state":    func() error { _, err := c.SetAdminState(ctx, long, datera.Online, false); return err },
		"wait":     func() error { _, err := c.WaitAvailable(ctx, "-bad"); return err },
		"access":   func() error { _, err := c.Access(ctx, "bad name"); return err },
		"resize":   func() error { _, err := c.Resize(ctx, "ab", 2); return err },
		"delete":   func() error { return c.DeleteAppInstance(ctx, "") },
		"qos":      func() error { _, err := c.SetPerformancePolicy(ctx, ".ab", datera.PerformancePolicy{}); return err },
		"acl":      func() error { return c.RemoveInitiatorFromACL(ctx, "pvc-ok", "storage-1", "iqn.bad") },
		"register": func() error { _, err := c.RegisterInitiator(ctx, "", "node", true); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			require.ErrorIs(t, err, datera.ErrValidation)
			var ve *datera.ValidationError
			require.ErrorAs(t, err, &ve)
			assert.NotEmpty(t, ve.Reason)
		})
	}
	assert.Zero(t, s.Requests(fake.AllRoutes), "nothing was sent")
}
