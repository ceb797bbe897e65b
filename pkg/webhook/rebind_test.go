package webhook

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// A claim re-created after its StatefulSet and claim were deleted must find its Retain PV (and
// so its data) again: the PVC hook drops the old claim's UID from the Released PV. A Delete
// PV is left to the reconcile loop, and a PV changed meanwhile is not overwritten.
func TestClaimHookReleasesRetainPVForRecreatedClaim(t *testing.T) {
	sts := statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi"))
	claim := claimOf(pinned(t, newFixture(t), sts), 0, 0)
	cases := []struct {
		name       string
		reclaim    corev1.PersistentVolumeReclaimPolicy
		phase      corev1.PersistentVolumePhase
		staleRV    bool
		wantUID    string
		wantDenied bool
	}{
		{name: "released Retain PV is freed for the claim", reclaim: corev1.PersistentVolumeReclaimRetain, phase: corev1.VolumeReleased, wantUID: ""},
		{name: "Delete PV is the reconcile loop's", reclaim: corev1.PersistentVolumeReclaimDelete, phase: corev1.VolumeReleased, wantUID: "old-uid"},
		{name: "bound PV is not touched", reclaim: corev1.PersistentVolumeReclaimRetain, phase: corev1.VolumeBound, wantUID: "old-uid"},
		{name: "a PV changed meanwhile is not overwritten", reclaim: corev1.PersistentVolumeReclaimRetain, phase: corev1.VolumeReleased, staleRV: true, wantUID: "old-uid", wantDenied: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			resp := f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claim))
			require.True(t, resp.Allowed)
			pvName := mutate.PVName("shop", claim.Name)
			pv := f.pvs.get(pvName).DeepCopy()
			pv.Spec.ClaimRef.UID = "old-uid"
			pv.Spec.PersistentVolumeReclaimPolicy = tc.reclaim
			pv.Status.Phase = tc.phase
			pv.ResourceVersion = "7"
			f.pvs.put(pv)
			if tc.staleRV {
				f.pvs.beforeGet = func(got *corev1.PersistentVolume) { got.ResourceVersion = "6" }
			}

			resp = f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claim))
			assert.Equal(t, !tc.wantDenied, resp.Allowed, "%+v", resp.Result)
			got := f.pvs.get(pvName)
			assert.Equal(t, tc.wantUID, string(got.Spec.ClaimRef.UID))
			assert.Equal(t, claim.Name, got.Spec.ClaimRef.Name)
			assert.Equal(t, "shop", got.Spec.ClaimRef.Namespace)
		})
	}
}
