package reconcile

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Issue 9 #5: reclaim Delete reads the owner recorded on the Datera volume first and never
// deletes a volume recorded as someone else's (another cluster sharing the backstore, or the
// previous tenant of a re-created namespace). A volume recording no owner (made before owners
// were recorded) is deleted as before. Against the Datera simulator through the default client.
func TestReclaimDeleteRefusesAnotherOwnersVolume(t *testing.T) {
	ownerOf := func(pv *corev1.PersistentVolume) pvoptions.Owner {
		o, ok := pvoptions.OwnerFromOptions(pv.Spec.FlexVolume.Options)
		require.True(t, ok, "the PV records its owner")
		return o
	}
	tests := []struct {
		name       string
		recorded   func(pvoptions.Owner) map[string]string // nil: no metadata set
		noVolume   bool
		wantDelete bool
	}{
		{name: "recorded owner is the PV's: deleted", recorded: func(o pvoptions.Owner) map[string]string { return o.Metadata() }, wantDelete: true},
		{name: "no owner recorded (an older volume): deleted as before", wantDelete: true},
		{name: "Datera volume already gone: the PV is deleted", noVolume: true, wantDelete: true},
		{name: "another cluster sharing the backstore owns it: kept", recorded: func(o pvoptions.Owner) map[string]string {
			o.ClusterID = "kotherclusterid00"
			return o.Metadata()
		}},
		{name: "the previous tenant of a re-created namespace owns it: kept", recorded: func(o pvoptions.Owner) map[string]string {
			o.NamespaceUID = "6a0c3a1e-0000-4000-8000-0000000000ff"
			return o.Metadata()
		}},
		{name: "another claim owns it: kept", recorded: func(o pvoptions.Owner) map[string]string {
			o.Claim = "data-other-0"
			return o.Metadata()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, backstore := simulator(t)
			del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, map[string]string{pvoptions.OptBackstoreServer: backstore})
			pv := releasedPV(t, del, 1, corev1.VolumeReleased)
			volumeID := pv.Spec.FlexVolume.Options["volumeID"]
			admin, err := datera.New(datera.Config{Endpoint: "http://" + backstore, Username: fake.DefaultUser, Password: fake.DefaultPassword})
			require.NoError(t, err)
			ctx := context.Background()
			if !tc.noVolume {
				_, err = admin.CreateAppInstance(ctx, datera.CreateVolumeRequest{Name: volumeID, SizeGiB: 1})
				require.NoError(t, err)
			}
			if tc.recorded != nil {
				_, err = admin.SetMetadata(ctx, volumeID, tc.recorded(ownerOf(pv)))
				require.NoError(t, err)
			}
			e := newEnv(t, []runtime.Object{namespace(testNS, nil), del, pv, credentials(fake.DefaultUser, fake.DefaultPassword)},
				func(o *Options) { o.DateraFor = nil }).start()
			e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(pv.Name); return err == nil })
			for range 2 { // the second pass repeats no event
				_, err = e.c.syncPV(ctx, pv.Name)
				require.NoError(t, err)
			}
			_, getErr := admin.GetAppInstance(ctx, volumeID)
			evs := e.events()
			if tc.wantDelete {
				assert.ErrorIs(t, getErr, datera.ErrNotFound)
				assert.False(t, e.pvExists(pv.Name))
				assert.Empty(t, eventsWith(evs, EventOwnerMismatch))
				return
			}
			require.NoError(t, getErr, "another owner's volume is never deleted")
			assert.True(t, e.pvExists(pv.Name), "the PV is kept for an administrator")
			warns := eventsWith(evs, "Warning "+EventOwnerMismatch+" not deleting Datera volume "+volumeID)
			assert.Len(t, warns, 1, "reported once: %q", evs)
			assert.Contains(t, warns[0], "belongs to claim")
			assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.ownerRefused.WithLabelValues(OwnerRefusedDelete)))
			assert.Zero(t, testutil.ToFloat64(e.r.metrics.dateraDeleted))
		})
	}
}
