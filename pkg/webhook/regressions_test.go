package webhook

import (
	"context"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Regression tests of bugs found in review of this package (all fixed): each describes the bug
// and the behaviour now expected.

// TestRegressionHugeReplicas: replicas is an int32 the apiserver has not validated yet (mutating
// admission runs first; it has no upper bound anyway). handlers.go materialised every ordinal
// (ordinalRange: make([]int, 0, replicas), newOrdinals appends to another slice) before even
// looking at dryRun, and newOrdinals was quadratic (slices.Contains per ordinal) on UPDATE.
// Measured: dryRun CREATE with 2^24 replicas allocates 861 MiB; UPDATE 20000→40000 takes
// 0.43 s of CPU; 2^31-1 replicas is an OOM kill of the webhook — by any user who may create a
// StatefulSet with a Datera template. Expected: ordinals computed as ranges ([start,
// start+replicas) minus the old range), PV pre-creation capped per admission call (the rest
// deferred with the warning), constant memory.
//
// Since issue 9 the default ordinal ceiling (mutate.DefaultMaxOrdinals) denies such a
// StatefulSet outright (TestHugeReplicasDeniedAboveOrdinalCeiling); this test raises the
// ceiling past int32 so the per-call cap and the constant memory are still proven.
func TestRegressionHugeReplicas(t *testing.T) {
	cfg := testCfg
	cfg.MaxOrdinals = 1 << 32
	f := newFixture(t, func(o *Options) { o.CreateBudget = 200 * time.Millisecond; o.Mutate = cfg })
	sts := statefulSet("shop", "web", 2147483647, dateraTemplate("data", "datera-gold", "1Gi"))
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	req := stsRequest(t, admissionv1.Create, sts, nil)
	req.DryRun = ptr.To(true)
	assert.True(t, f.admit(t, PathStatefulSets, req).Allowed)
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	assert.True(t, resp.Allowed)
	assert.NotEmpty(t, resp.Warnings, "most PVs deferred")

	stored := pinned(t, f, statefulSet("shop", "db", 1000000, dateraTemplate("data", "datera-gold", "1Gi")))
	up := stored.DeepCopy()
	up.Spec.Replicas = ptr.To[int32](2000000)
	upd := stsRequest(t, admissionv1.Update, up, stored)
	upd.DryRun = ptr.To(true)
	assert.True(t, f.admit(t, PathStatefulSets, upd).Allowed)
	runtime.ReadMemStats(&m1)
	assert.Less(t, time.Since(start), 3*time.Second)
	assert.Less(t, m1.TotalAlloc-m0.TotalAlloc, uint64(256<<20))
}

// TestRegressionPanicInPVCreate: ensureOrdinals runs each PV create in an errgroup goroutine;
// errgroup (x/sync v0.19.0) does not propagate panics, and admitSafely's recover only covers
// the request goroutine, so a panic in PersistentVolume() or in the PVStore (a client-go bug,
// a nil map in a future change) kills the whole webhook process — every replica, on the same
// input — instead of answering an Errored review. Expected: recover in the goroutine, turn it
// into an error (500, "internal error in petfabric webhook").
func TestRegressionPanicInPVCreate(t *testing.T) {
	f := newFixture(t)
	f.pvs.beforeCreate = func(context.Context, *corev1.PersistentVolume) error { panic("store exploded") }
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, statefulSet("shop", "web", 2, dateraTemplate("data", "datera-gold", "1Gi")), nil))
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusInternalServerError), resp.Result.Code)
	assert.Contains(t, resp.Result.Message, "internal error in petfabric webhook")
}

// TestRegressionUpdateDeniedWithoutNewOrdinals: admitStatefulSet runs mutate.Decide on every UPDATE
// and denies on its error before checking whether the update adds ordinals at all. When the
// decision became invalid after CREATE (here: the webhook's default credentials Secret was
// removed from its configuration; likewise a default class or backstore change), every
// UPDATE of such a StatefulSet is denied with 422 — image rollouts and scale-downs included,
// which need no PV. Expected: compute the new ordinals first and allow when there are none;
// deny only when PVs are actually needed.
func TestRegressionUpdateDeniedWithoutNewOrdinals(t *testing.T) {
	old := newFixture(t)
	stored := pinned(t, old, statefulSet("shop", "web", 3, dateraTemplate("data", "datera-gold", "1Gi")))

	cfg := testCfg
	cfg.Defaults = map[string]string{pvoptions.OptBackstoreServer: "datera-mgmt.example.com:7718"}
	f := newFixture(t, func(o *Options) { o.Mutate = cfg })
	image := stored.DeepCopy()
	image.Spec.Template.Spec.Containers[0].Image = "nginx:2"
	down := stored.DeepCopy()
	down.Spec.Replicas = ptr.To[int32](1)
	for name, upd := range map[string]*admissionv1.AdmissionRequest{
		"image rollout": stsRequest(t, admissionv1.Update, image, stored),
		"scale down":    stsRequest(t, admissionv1.Update, down, stored),
	} {
		resp := f.admit(t, PathStatefulSets, upd)
		require.True(t, resp.Allowed, "%s: %v", name, resp.Result)
	}
}
