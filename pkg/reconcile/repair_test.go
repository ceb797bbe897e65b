package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Issue 9 #8: replicas is an int32 any user with StatefulSet access sets. With the webhook
// down (failurePolicy Ignore) nothing denied replicas: 2147483647; the old loop then created
// PVs for ever. Now it creates none at or above the ceiling, and reports that once.
func TestLoopNeverCreatesPVsAboveOrdinalCeiling(t *testing.T) {
	gold := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	tests := []struct {
		name      string
		sts       *appsv1.StatefulSet
		ceiling   int
		want      []int
		wantEvent string
	}{
		{name: "replicas 2147483647: only the ordinals below the ceiling", sts: statefulSet("web", 2147483647), ceiling: 5,
			want: []int{0, 1, 2, 3, 4}, wantEvent: "ordinals 5 to 2147483646 of 2147483647 reach the ceiling of 5 Datera ordinals per StatefulSet"},
		{name: "spec.ordinals.start above the ceiling: none", sts: func() *appsv1.StatefulSet {
			s := statefulSet("web", 3)
			s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 10}
			return s
		}(), ceiling: 5, wantEvent: "ordinals 10 to 12 of 3 reach the ceiling of 5"},
		{name: "below the ceiling: all, no warning", sts: statefulSet("web", 3), ceiling: 5, want: []int{0, 1, 2}},
		{name: "default ceiling (1000) applies when unset", sts: func() *appsv1.StatefulSet {
			s := statefulSet("web", 5)
			s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 998}
			return s
		}(), want: []int{998, 999}, wantEvent: "ordinals 1000 to 1002 of 5 reach the ceiling of 1000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, []runtime.Object{namespace(testNS, nil), gold, tc.sts}, func(o *Options) { o.Mutate.MaxOrdinals = tc.ceiling }).start()
			start := time.Now()
			require.NoError(t, e.c.syncStatefulSet(context.Background(), testNS+"/web"))
			assert.Less(t, time.Since(start), 10*time.Second, "bounded work")
			var want []string
			for _, n := range tc.want {
				want = append(want, pvName(mutate.ClaimName("data", "web", n)))
			}
			assert.ElementsMatch(t, want, e.pvNames())
			require.NoError(t, e.c.syncStatefulSet(context.Background(), testNS+"/web"), "a second pass (a resync)")
			evs := eventsWith(e.events(), "Warning "+EventOrdinalCeiling)
			if tc.wantEvent == "" {
				assert.Empty(t, evs)
				assert.Zero(t, testutil.ToFloat64(e.r.metrics.ordinalCeiling))
				return
			}
			require.Len(t, evs, 1, "reported once, not per resync")
			assert.Contains(t, evs[0], tc.wantEvent)
			assert.Contains(t, evs[0], "--max-ordinals")
			assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.ordinalCeiling))
		})
	}
}

// Issue 9 #9: an existing PV of a claim counted as success whatever its class, size or access
// modes, so a retained PV that no longer fits stranded its pet without a word. Now a mismatch
// is reported (event + petfabric_reconcile_pv_mismatch_total{reason}), and replaced only when
// that is safe: Available, never bound, its claim not created yet, and its Datera volume not
// created yet or recording this claim as its owner.
func TestMismatchingPVReportedAndReplacedOnlyWhenSafe(t *testing.T) {
	gold := storageClass(testClass, corev1.PersistentVolumeReclaimRetain, nil)
	big := func(modes ...corev1.PersistentVolumeAccessMode) *appsv1.StatefulSet {
		tpl := claimTemplate("data", ptr.To(testClass))
		tpl.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("2Gi")
		if len(modes) > 0 {
			tpl.Spec.AccessModes = modes
		}
		return statefulSet("web", 1, tpl)
	}
	small := func(phase corev1.PersistentVolumePhase) *corev1.PersistentVolume {
		pv := managedPV(t, statefulSet("web", 1), gold, 0, phase, t0.Add(-time.Hour)) // 1Gi
		return pv
	}
	ownerMeta := pvoptions.Owner{ClusterID: testCluster, Namespace: testNS, Claim: "data-web-0", NamespaceUID: nsUID}.Metadata()
	claim := pendingClaim("data-web-0", "c1")
	tests := []struct {
		name        string
		sts         *appsv1.StatefulSet
		pv          *corev1.PersistentVolume
		meta        map[string]string // the Datera volume's metadata; nil: no volume
		extra       []runtime.Object
		wantReason  string
		wantReplace bool
		wantWhy     string
	}{
		{name: "too small, never bound, no claim, no Datera volume: replaced", sts: big(), pv: small(corev1.VolumeAvailable),
			wantReason: mutate.MismatchCapacity, wantReplace: true},
		{name: "too small, Datera volume recording this claim: replaced", sts: big(), pv: small(corev1.VolumeAvailable), meta: ownerMeta,
			wantReason: mutate.MismatchCapacity, wantReplace: true},
		{name: "too small, Datera volume recording no owner: reported only", sts: big(), pv: small(corev1.VolumeAvailable), meta: map[string]string{},
			wantReason: mutate.MismatchCapacity, wantWhy: "records no owner"},
		{name: "too small, its claim exists: reported only", sts: big(), pv: small(corev1.VolumeAvailable), extra: []runtime.Object{claim},
			wantReason: mutate.MismatchCapacity, wantWhy: "its claim exists already"},
		{name: "too small and Bound: reported only", sts: big(), pv: func() *corev1.PersistentVolume {
			pv := small(corev1.VolumeBound)
			pv.Spec.ClaimRef.UID = "c1"
			return pv
		}(), wantReason: mutate.MismatchCapacity, wantWhy: "it is Bound"},
		{name: "served a claim before (freed): reported only", sts: big(), pv: func() *corev1.PersistentVolume {
			pv := small(corev1.VolumeAvailable)
			pv.Annotations[AnnReleasedFrom] = "c0"
			return pv
		}(), wantReason: mutate.MismatchCapacity, wantWhy: "served a claim before"},
		{name: "access modes: ReadOnlyMany template, ReadWriteOnce PV: replaced", sts: func() *appsv1.StatefulSet {
			s := big(corev1.ReadOnlyMany)
			s.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("1Gi")
			return s
		}(), pv: small(corev1.VolumeAvailable), wantReason: mutate.MismatchAccessModes, wantReplace: true},
		{name: "class changed: reported (Released)", sts: statefulSet("web", 1), pv: func() *corev1.PersistentVolume {
			pv := small(corev1.VolumeReleased)
			pv.Spec.ClaimRef.UID = "c0"
			pv.Spec.StorageClassName = "datera-old"
			return pv
		}(), wantReason: mutate.MismatchStorageClass, wantWhy: "it is Released"},
		{name: "a matching PV: nothing", sts: statefulSet("web", 1), pv: small(corev1.VolumeAvailable)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, append([]runtime.Object{namespace(testNS, nil), gold, tc.sts, tc.pv}, tc.extra...)).start()
			if tc.meta != nil {
				e.datera.meta = map[string]map[string]string{tc.pv.Spec.FlexVolume.Options["volumeID"]: tc.meta}
			}
			e.waitFor("PV in cache", func() bool { _, err := e.c.pvLister.Get(tc.pv.Name); return err == nil })
			require.NoError(t, e.c.syncStatefulSet(context.Background(), testNS+"/web"))
			evs := e.events()
			got := e.getPV(tc.pv.Name)
			if tc.wantReason == "" {
				assert.Empty(t, eventsWith(evs, EventPVMismatch))
				assert.Equal(t, tc.pv.UID, got.UID)
				return
			}
			assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.pvMismatch.WithLabelValues(tc.wantReason)), "counted under reason %s", tc.wantReason)
			want := planned(t, tc.sts, gold, "data", 0)
			if tc.wantReplace {
				assert.NotEqual(t, tc.pv.UID, got.UID, "a new PV object")
				assert.Equal(t, want.Spec, got.Spec, "exactly the PV the claim needs")
				assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.pvsReplaced))
				assert.Len(t, eventsWith(evs, "Normal "+EventReplacedPV), 1, "%q", evs)
			} else {
				assert.Equal(t, tc.pv.UID, got.UID, "left as it is")
				assert.Equal(t, tc.pv.Spec, got.Spec)
				warns := eventsWith(evs, "Warning "+EventPVMismatch)
				assert.Len(t, warns, 2, "on the StatefulSet and the PV: %q", evs)
				assert.Len(t, eventsWith(warns, tc.wantWhy), 2, "%q", warns)
				assert.Zero(t, testutil.ToFloat64(e.r.metrics.pvsReplaced))
			}
			// A second pass (once the cache caught up) repeats no report and counts nothing twice.
			e.waitFor("cache", func() bool { p, err := e.c.pvLister.Get(tc.pv.Name); return err == nil && p.UID == got.UID })
			require.NoError(t, e.c.syncStatefulSet(context.Background(), testNS+"/web"))
			assert.Empty(t, eventsWith(e.events(), EventPVMismatch))
			assert.Equal(t, 1.0, testutil.ToFloat64(e.r.metrics.pvMismatch.WithLabelValues(tc.wantReason)))
		})
	}
}
