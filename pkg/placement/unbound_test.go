package placement

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestUnboundClaimDecidesAsBound: with a WaitForFirstConsumer class kube-scheduler asks the
// extender while a pet's claim is still unbound (or not yet in the extender's cache); the
// claim's PV is the one pre-bound to it by claimRef (namespace and name; the UID only when
// set, as the PV controller matches). The filter's decision must be the one it makes once
// the claim is bound: same nodes passing, same failures with the same messages.
func TestUnboundClaimDecidesAsBound(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	st := NewIndex()
	report := func(node string, portals map[string]PortalReport, attached ...string) {
		if attached == nil {
			attached = []string{}
		}
		st.SetReport(&NodeReport{Node: node, ObservedAt: now, TTL: time.Minute, RenewTime: now,
			Report: &Report{Version: ReportVersion, Initiator: "iqn.x:" + node, ProbedAt: now, Attached: attached,
				Backstores: map[string]BackstoreReport{bsA: {Portals: portals}}}})
	}
	ok := PortalReport{OK: true, RTTMicros: 100}
	refused := PortalReport{Error: "connection refused"}
	report("reaches", map[string]PortalReport{"10.0.0.1:3260": ok, "10.0.0.2:3260": ok})
	report("half", map[string]PortalReport{"10.0.0.1:3260": ok, "10.0.0.2:3260": refused})
	report("holder", map[string]PortalReport{"10.0.0.1:3260": ok, "10.0.0.2:3260": ok}, "vol-other")
	nodes := []string{"reaches", "half", "holder", "silent"}

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-0"}, Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-db-0"}}},
		{Name: "logs", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "logs-db-0"}}},
	}}}
	pv := func(name, claim, volumeID string, uid types.UID) *corev1.PersistentVolume {
		p := datersPV(name, volumeID, "db", 0, 0)
		p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "shop", Name: claim, UID: uid}
		return p
	}
	claim := func(name, volumeName string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name)},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: volumeName}}
	}
	decide := func(lk mapLookup) Decision {
		vols, err := PodVolumes(pod, lk)
		require.NoError(t, err)
		require.Len(t, vols, 2, "both pre-bound PVs resolved")
		return Filter(now, vols, nodes, st, AllPortals)
	}

	bound := decide(mapLookup{
		claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", "pv-data"), "shop/logs-db-0": claim("logs-db-0", "pv-logs")},
		pvs: map[string]*corev1.PersistentVolume{
			"pv-data": pv("pv-data", "data-db-0", "vol-data", "uid-data-db-0"),
			"pv-logs": pv("pv-logs", "logs-db-0", "vol-other", "uid-logs-db-0"),
		},
	})
	require.Equal(t, []int{2}, bound.Pass, "only the node that holds the pod's ReadWriteOnce volume vol-other (and reaches every portal) passes")
	require.Len(t, bound.Failed, 3)

	for _, tc := range []struct {
		name string
		lk   mapLookup
	}{
		{"claims unbound, PVs pre-bound without UID (the webhook's)", mapLookup{
			claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", ""), "shop/logs-db-0": claim("logs-db-0", "")},
			pvs: map[string]*corev1.PersistentVolume{
				"pv-data": pv("pv-data", "data-db-0", "vol-data", ""),
				"pv-logs": pv("pv-logs", "logs-db-0", "vol-other", ""),
			},
		}},
		{"claims unbound, PV controller already wrote the UIDs", mapLookup{
			claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", ""), "shop/logs-db-0": claim("logs-db-0", "")},
			pvs: map[string]*corev1.PersistentVolume{
				"pv-data": pv("pv-data", "data-db-0", "vol-data", "uid-data-db-0"),
				"pv-logs": pv("pv-logs", "logs-db-0", "vol-other", "uid-logs-db-0"),
			},
		}},
		{"claims not in the cache yet", mapLookup{pvs: map[string]*corev1.PersistentVolume{
			"pv-data": pv("pv-data", "data-db-0", "vol-data", ""),
			"pv-logs": pv("pv-logs", "logs-db-0", "vol-other", ""),
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, bound, decide(tc.lk))
		})
	}
}
