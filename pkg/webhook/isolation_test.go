package webhook

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Attack and scenario tests of issue 9 (tenant isolation, data safety) at the handler level.

// Namespace "team" + claim "a-data-db-0" used to map to the same PV name as namespace
// "team-a" + claim "data-db-0" (datera-team-a-data-db-0), so one tenant could squat another's
// PV name and get that StatefulSet denied.
func TestLookalikeClaimInOtherNamespaceCannotSquatPVName(t *testing.T) {
	f := newFixture(t)
	squatter := statefulSet("team", "db", 1, dateraTemplate("a-data", "datera-gold", "1Gi"))
	require.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, squatter, nil)).Allowed)

	victim := statefulSet("team-a", "db", 1, dateraTemplate("data", "datera-gold", "1Gi"))
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, victim, nil))
	require.True(t, resp.Allowed, "victim denied: %v", resp.Result)
	assert.Len(t, f.pvs.names(), 2)
	for _, c := range []struct{ ns, claim string }{{"team", "a-data-db-0"}, {"team-a", "data-db-0"}} {
		pv := f.pvs.get(mutate.PVName(c.ns, c.claim))
		require.NotNil(t, pv, "%s/%s has no PV", c.ns, c.claim)
		assert.Equal(t, c.ns, pv.Spec.ClaimRef.Namespace)
		assert.Equal(t, c.claim, pv.Spec.ClaimRef.Name)
	}
}

// A 1 GiB claim (what ResourceQuota counts) annotated petfabric.io/size: 32768 used to get a
// 32 TiB volume.
func TestSizeAnnotationCannotExceedClaimRequest(t *testing.T) {
	f := newFixture(t)
	tpl := dateraTemplate("data", "datera-gold", "1Gi")
	tpl.Annotations = map[string]string{"petfabric.io/size": "32768"}
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, statefulSet("shop", "web", 1, tpl), nil))
	assert.False(t, resp.Allowed, "a 1Gi claim got a PV of %v", pvSizes(f))
	assert.Empty(t, f.pvs.names())
}

func pvSizes(f *fixture) []string {
	var out []string
	for _, n := range f.pvs.names() {
		out = append(out, f.pvs.get(n).Spec.PersistentVolumeSource.FlexVolume.Options["size"])
	}
	return out
}

// replicas: 2147483647 on a Datera-bound StatefulSet used to be admitted (the webhook capped
// only the creates of one call) and left the reconcile loop creating PVs forever.
func TestHugeReplicasDeniedAboveOrdinalCeiling(t *testing.T) {
	f := newFixture(t)
	sts := statefulSet("shop", "web", 2147483647, dateraTemplate("data", "datera-gold", "1Gi"))
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	assert.False(t, resp.Allowed, "admitted, %d PVs created", len(f.pvs.names()))
	assert.Empty(t, f.pvs.names())
}

// An UPDATE that adds ordinals but that the apiserver will reject (here: it also changes
// spec.serviceName, which is immutable) used to leave the new ordinals' PVs behind.
func TestDeniedUpdateLeavesNoPVsBehind(t *testing.T) {
	f := newFixture(t)
	stored := pinned(t, f, statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi")))
	up := stored.DeepCopy()
	up.Spec.Replicas = ptr.To[int32](5)
	up.Spec.ServiceName = "other"
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, up, stored))
	assert.False(t, resp.Allowed)
	assert.Empty(t, f.pvs.names(), "PVs created for an update that is never stored")
}

// A template asking for ReadWriteMany used to get a PV with ReadWriteMany: a local filesystem
// on one LUN, mounted read-write by several nodes, is corrupted.
func TestReadWriteManyTemplateDenied(t *testing.T) {
	f := newFixture(t)
	tpl := dateraTemplate("data", "datera-gold", "1Gi")
	tpl.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, statefulSet("shop", "web", 1, tpl), nil))
	assert.False(t, resp.Allowed)
	assert.Empty(t, f.pvs.names())
}

// A forged PVC-CREATE review posted straight to the webhook (no apiserver) used to free a
// Released Retain PV: its claimRef UID was dropped, so whoever creates that claim name next
// binds the old data.
func TestForgedClaimReviewDoesNotFreeReleasedPV(t *testing.T) {
	f := newFixture(t)
	sts := pinned(t, f, statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi")))
	claim := claimOf(sts, 0, 0)
	require.True(t, f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claim)).Allowed)
	pvName := mutate.PVName("shop", claim.Name)
	pv := f.pvs.get(pvName).DeepCopy()
	pv.Spec.ClaimRef.UID = "old-uid"
	pv.Status.Phase = corev1.VolumeReleased
	pv.ResourceVersion = "7"
	f.pvs.put(pv)

	f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claim)) // forged: no such claim, no StatefulSet
	assert.Equal(t, "old-uid", string(f.pvs.get(pvName).Spec.ClaimRef.UID), "the Released PV was freed by a forged review")
}

// A forged PVC-CREATE review naming a StatefulSet that does not exist used to create a PV.
func TestForgedClaimReviewCreatesNoPVWithoutLiveStatefulSet(t *testing.T) {
	f := newFixture(t)
	sts := pinned(t, f, statefulSet("shop", "ghost", 1, dateraTemplate("data", "datera-gold", "1Gi")))
	f.lookup.mu.Lock()
	delete(f.lookup.sts, "shop/ghost") // never stored: the review is forged
	f.lookup.mu.Unlock()
	f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(sts, 0, 3)))
	assert.Empty(t, f.pvs.names(), "a PV was created for a StatefulSet that does not exist")
}

// Every user-settable option is capped by what the admin's class grants. Before, a template
// annotation won over the class whatever its value.
func TestTemplateOptionsCannotExceedClassGrant(t *testing.T) {
	classes := map[string]mutate.Class{
		"capped": {Name: "capped", ReclaimPolicy: corev1.PersistentVolumeReclaimRetain, Parameters: map[string]string{
			"replica": "2", "maxIops": "1000", "maxBW": "5000", "template": "small", "placementMode": "hybrid", "ipPool": "tenant-a",
		}},
	}
	cases := map[string]map[string]string{
		"more replicas than the class":        {"petfabric.io/replica": "5"},
		"unlimited IOPS under a capped class": {"petfabric.io/maxIops": "0"},
		"more IOPS than the class":            {"petfabric.io/maxIops": "1000000"},
		"more bandwidth than the class":       {"petfabric.io/maxBW": "9999999"},
		"another app_template":                {"petfabric.io/template": "huge"},
		"all_flash on a hybrid class":         {"petfabric.io/placementMode": "all_flash"},
		"another tenant's ip pool":            {"petfabric.io/ipPool": "tenant-b"},
	}
	for name, ann := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.lookup.classes = classes
			tpl := dateraTemplate("data", "capped", "1Gi")
			tpl.Annotations = ann
			resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, statefulSet("shop", "web", 1, tpl), nil))
			assert.False(t, resp.Allowed, "admitted; PV options %v", pvOptions(f))
			assert.Empty(t, f.pvs.names())
		})
	}
}

func pvOptions(f *fixture) []map[string]string {
	var out []map[string]string
	for _, n := range f.pvs.names() {
		out = append(out, f.pvs.get(n).Spec.PersistentVolumeSource.FlexVolume.Options)
	}
	return out
}

// Every PV records its owner (cluster, claim namespace and name, namespace UID) and access
// mode; without them the driver and the loop cannot tell a re-created namespace's claim from
// the previous tenant's. An empty cluster ID made two clusters on one backstore share volumes.
func TestEveryPVRecordsOwnerAndAccessMode(t *testing.T) {
	f := newFixture(t)
	require.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi")), nil)).Allowed)
	opts := f.pvs.get(mutate.PVName("shop", "data-web-0")).Spec.FlexVolume.Options
	for _, k := range []string{"clusterID", "claimNamespace", "claimName", "namespaceUID", "accessMode"} {
		assert.NotEmpty(t, opts[k], "PV option %s", k)
	}

	noCluster := testCfg
	noCluster.ClusterID = ""
	g := newFixture(t, func(o *Options) { o.Mutate = noCluster })
	resp := g.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi")), nil))
	assert.False(t, resp.Allowed, "PV made without a cluster ID: %v", pvOptions(g))
}

// An existing PV pre-bound to the claim used to count as success whatever it held: another
// class, a smaller size, other access modes. Now the admission warns.
func TestExistingMismatchedPVIsReported(t *testing.T) {
	f := newFixture(t)
	sts := statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "10Gi"))
	require.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil)).Allowed)
	pv := f.pvs.get(mutate.PVName("shop", "data-web-0")).DeepCopy()
	pv.Spec.StorageClassName = "datera"
	pv.Spec.Capacity[corev1.ResourceStorage] = *getQty("1Gi")
	f.pvs.put(pv)
	rec := record.NewFakeRecorder(10)
	f.srv.recorder = rec
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	assert.NotEmpty(t, resp.Warnings, "a PV of another class and 1Gi accepted silently for a 10Gi claim")
	require.True(t, resp.Allowed)
	require.Len(t, resp.Warnings, 1)
	assert.Contains(t, resp.Warnings[0], "storage_class: PV datera-shop.data-web-0 has class \"datera\", the claim needs \"datera-gold\"")
	assert.Contains(t, resp.Warnings[0], "capacity: PV datera-shop.data-web-0 holds 1Gi, the claim requests 10Gi")
	assert.Equal(t, 1.0, testutil.ToFloat64(f.srv.metrics.pvMismatch.WithLabelValues(mutate.MismatchStorageClass)))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.srv.metrics.pvMismatch.WithLabelValues(mutate.MismatchCapacity)))
	require.Len(t, rec.Events, 2)
	assert.Contains(t, <-rec.Events, "Warning PersistentVolumeMismatch does not fit claim shop/data-web-0")
	assert.Equal(t, pv, f.pvs.get(pv.Name), "the PV is reported, not changed")

	// The PVC hook reports it too.
	resp = f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(pinned(t, newFixture(t), sts), 0, 0)))
	assert.True(t, resp.Allowed)
	assert.Len(t, resp.Warnings, 1)
}

// A namespace deleted and re-created under the same name is another owner: the PV the old
// namespace's claim left behind (same claim name) is reported as an owner mismatch.
func TestRecreatedNamespaceOwnerMismatchReported(t *testing.T) {
	f := newFixture(t)
	sts := statefulSet("t", "db", 1, dateraTemplate("data", "datera-gold", "1Gi"))
	require.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil)).Allowed)
	f.lookup.nsUIDs = map[string]string{"t": "uid-of-the-new-t"}
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	require.True(t, resp.Allowed)
	require.Len(t, resp.Warnings, 1)
	assert.Contains(t, resp.Warnings[0], "owner: PV datera-t.data-db-0 was made for claim t/data-db-0 of namespace uid uid-of-t")
	assert.Equal(t, 1.0, testutil.ToFloat64(f.srv.metrics.pvMismatch.WithLabelValues(mutate.MismatchOwner)))
}

// After an upgrade, a claim whose PV has the version 1 name (datera-<ns>-<claim>) keeps it:
// the webhook finds PVs by claimRef and makes no second one. A version 1 PV squatting
// another claim's old name does not stop the other claim from getting its own PV.
func TestVersion1PVFoundByClaimNotDuplicated(t *testing.T) {
	f := newFixture(t)
	sts := statefulSet("shop", "web", 2, dateraTemplate("data", "datera-gold", "1Gi"))
	v1 := expectedPV(t, sts, nil, "data", 0)
	v1.Name = mutate.LegacyPVName("shop", "data-web-0")
	for _, k := range []string{"accessMode", "clusterID", "claimNamespace", "claimName", "namespaceUID"} {
		delete(v1.Spec.FlexVolume.Options, k)
	}
	v1.Spec.FlexVolume.Options["volumeID"] = "shop_data-web-0" // made without a cluster ID
	f.pvs.put(v1)
	squat := v1.DeepCopy()
	squat.Name = mutate.LegacyPVName("team", "a-data-db-0") // == datera-team-a-data-db-0
	squat.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "team", Name: "a-data-db-0"}
	f.pvs.put(squat)

	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	require.True(t, resp.Allowed)
	assert.Empty(t, resp.Warnings, "a version 1 PV fits its claim")
	assert.ElementsMatch(t, []string{v1.Name, squat.Name, mutate.PVName("shop", "data-web-1")}, f.pvs.names())

	victim := statefulSet("team-a", "db", 1, dateraTemplate("data", "datera-gold", "1Gi"))
	resp = f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, victim, nil))
	require.True(t, resp.Allowed, "%v", resp.Result)
	assert.NotNil(t, f.pvs.get(mutate.PVName("team-a", "data-db-0")))
}

// ReadOnlyMany templates get accessMode ReadOnlyMany; the rest ReadWriteOnce.
func TestAccessModeOptionWritten(t *testing.T) {
	f := newFixture(t)
	rox := dateraTemplate("shared", "datera-gold", "1Gi")
	rox.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}
	rwop := dateraTemplate("own", "datera-gold", "1Gi")
	rwop.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}
	require.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, statefulSet("shop", "web", 1, rox, rwop), nil)).Allowed)
	shared := f.pvs.get(mutate.PVName("shop", "shared-web-0"))
	assert.Equal(t, pvoptions.AccessReadOnlyMany, shared.Spec.FlexVolume.Options[pvoptions.OptAccessMode])
	assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}, shared.Spec.AccessModes)
	assert.Equal(t, pvoptions.AccessReadWriteOnce, f.pvs.get(mutate.PVName("shop", "own-web-0")).Spec.FlexVolume.Options[pvoptions.OptAccessMode])
}

// The ceiling holds on every path: UPDATE and the scale subresource, dry run included; an
// update that stays below it, or adds no ordinals, is not affected.
func TestOrdinalCeilingOnEveryPath(t *testing.T) {
	cfg := testCfg
	cfg.MaxOrdinals = 5
	f := newFixture(t, func(o *Options) { o.Mutate = cfg })
	stored := pinned(t, f, statefulSet("shop", "web", 3, dateraTemplate("data", "datera-gold", "1Gi")))
	up := stored.DeepCopy()
	up.Spec.Replicas = ptr.To[int32](6)
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, up, stored))
	assert.False(t, resp.Allowed)
	assert.Contains(t, resp.Result.Message, "spec.replicas: invalid value \"6\": at most 5")
	dry := stsRequest(t, admissionv1.Update, up, stored)
	dry.DryRun = ptr.To(true)
	assert.False(t, f.admit(t, PathStatefulSets, dry).Allowed)
	resp = f.admit(t, PathScale, scaleRequest(t, "shop", "web", 3, 6))
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusUnprocessableEntity), resp.Result.Code)
	assert.Empty(t, f.pvs.names())

	up.Spec.Replicas = ptr.To[int32](5)
	assert.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, up, stored)).Allowed)
	assert.Len(t, f.pvs.names(), 2, "ordinals 3 and 4")
	// Already above the ceiling (stored while the webhook was down): scaling down is fine.
	huge := stored.DeepCopy()
	huge.Spec.Replicas = ptr.To[int32](2147483647)
	assert.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, stored, huge)).Allowed)
}

// The PVC hook makes no PV for an ordinal at or above the ceiling, even if the live
// StatefulSet has it (stored while the webhook was down).
func TestClaimHookHonoursCeiling(t *testing.T) {
	cfg := testCfg
	cfg.MaxOrdinals = 2
	f := newFixture(t, func(o *Options) { o.Mutate = cfg })
	stored := pinned(t, newFixture(t), statefulSet("shop", "web", 10, dateraTemplate("data", "datera-gold", "1Gi")))
	f.lookup.put(stored)
	resp := f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(stored, 0, 7)))
	assert.True(t, resp.Allowed)
	assert.Contains(t, resp.Warnings[0], "ceiling")
	assert.Empty(t, f.pvs.names())
	assert.True(t, f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(stored, 0, 1))).Allowed)
	assert.Len(t, f.pvs.names(), 1)
}

// The claim of a scale-up can reach the hook before the webhook's cache has seen the scale:
// the hook then asks the API before refusing, and makes the PV.
func TestClaimHookReadsLiveStatefulSetWhenCacheLags(t *testing.T) {
	f := newFixture(t)
	stored := pinned(t, f, statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi")))
	scaled := stored.DeepCopy()
	scaled.Spec.Replicas = ptr.To[int32](3)
	f.lookup.live = map[string]*appsv1.StatefulSet{"shop/web": scaled}
	resp := f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(stored, 0, 2)))
	require.True(t, resp.Allowed)
	assert.Empty(t, resp.Warnings)
	assert.NotNil(t, f.pvs.get(mutate.PVName("shop", "data-web-2")))
}
