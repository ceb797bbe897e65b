package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

func pvNames(tpls []string, sts string, ordinals ...int) []string {
	var out []string
	for _, tpl := range tpls {
		for _, n := range ordinals {
			out = append(out, mutate.PVName("shop", mutate.ClaimName(tpl, sts, n)))
		}
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string { sort.Strings(s); return s }

// threeTemplates is a StatefulSet with two Datera templates and one of another storage.
func threeTemplates(replicas int32) *appsv1.StatefulSet {
	return statefulSet("shop", "web", replicas,
		dateraTemplate("data", "datera-gold", "10Gi"),
		dateraTemplate("logs", "standard", "1Gi"),
		dateraTemplate("wal", "datera", "2Gi"))
}

// TestStatefulSetCreate: CREATE pins the Datera templates (patch) and pre-creates exactly the
// PVs of ordinals 0..replicas-1, each the PV mutate decides.
func TestStatefulSetCreate(t *testing.T) {
	f := newFixture(t)
	sts := threeTemplates(3)
	req := stsRequest(t, admissionv1.Create, sts, nil)
	resp := f.admit(t, PathStatefulSets, req)
	require.True(t, resp.Allowed)
	require.NotEmpty(t, resp.Patch)
	assert.Empty(t, resp.Warnings)

	var stored appsv1.StatefulSet
	require.NoError(t, json.Unmarshal(applyPatch(t, req.Object.Raw, resp.Patch), &stored))
	assert.Equal(t, "datera-gold", *stored.Spec.VolumeClaimTemplates[0].Spec.StorageClassName)
	assert.Equal(t, "standard", *stored.Spec.VolumeClaimTemplates[1].Spec.StorageClassName)
	assert.Empty(t, stored.Spec.VolumeClaimTemplates[1].Annotations, "not Datera's: untouched")
	assert.Equal(t, "web", stored.Spec.VolumeClaimTemplates[2].Annotations[mutate.AnnStatefulSet])

	assert.Equal(t, pvNames([]string{"data", "wal"}, "web", 0, 1, 2), sorted(f.pvs.names()))
	for _, tpl := range []string{"data", "wal"} {
		for n := range 3 {
			want := expectedPV(t, sts, nil, tpl, n)
			assert.Equal(t, want, f.pvs.get(want.Name))
		}
	}
	assert.Equal(t, 6.0, testutil.ToFloat64(f.srv.metrics.pvCreated))

	// Reinvocation (or a retry after a timeout): the stored object needs no patch, and the
	// existing PVs are this claim's: allowed, nothing new.
	again := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, &stored, nil))
	assert.True(t, again.Allowed)
	assert.Empty(t, again.Patch)
	assert.Len(t, f.pvs.names(), 6)
}

// TestStatefulSetCreateBlogManifest: the 2016 CockroachDB PetSet (translated to apps/v1, alpha
// annotation "anything") in an opted-in namespace, through the handler.
func TestStatefulSetCreateBlogManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "mutate", "testdata", "cockroachdb.yaml"))
	require.NoError(t, err)
	var sts appsv1.StatefulSet
	require.NoError(t, yaml.Unmarshal(b, &sts))
	require.Equal(t, "blog", sts.Namespace)
	f := newFixture(t)
	req := stsRequest(t, admissionv1.Create, &sts, nil)
	req.Object.Raw, err = yaml.YAMLToJSON(b) // the bytes as the apiserver would send them
	require.NoError(t, err)
	resp := f.admit(t, PathStatefulSets, req)
	require.True(t, resp.Allowed)
	var stored appsv1.StatefulSet
	require.NoError(t, json.Unmarshal(applyPatch(t, req.Object.Raw, resp.Patch), &stored))
	assert.Equal(t, "datera", *stored.Spec.VolumeClaimTemplates[0].Spec.StorageClassName)
	assert.Equal(t, "anything", stored.Spec.VolumeClaimTemplates[0].Annotations[mutate.AlphaClassAnnotation])
	var names []string
	for n := range 5 {
		names = append(names, "datera-blog.datadir-cockroachdb-"+fmt.Sprint(n))
	}
	assert.Equal(t, names, sorted(f.pvs.names()))
}

// TestStatefulSetOrdinalsStart: spec.ordinals.start shifts the ordinals.
func TestStatefulSetOrdinalsStart(t *testing.T) {
	f := newFixture(t)
	sts := statefulSet("shop", "web", 2, dateraTemplate("data", "datera-gold", "1Gi"))
	sts.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 5}
	f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	assert.Equal(t, pvNames([]string{"data"}, "web", 5, 6), sorted(f.pvs.names()))
}

// TestStatefulSetNoDatera: nothing Datera-bound: allowed, no patch, no PV.
func TestStatefulSetNoDatera(t *testing.T) {
	f := newFixture(t)
	for name, sts := range map[string]*appsv1.StatefulSet{
		"no templates":                      statefulSet("shop", "web", 3),
		"other storage":                     statefulSet("shop", "web", 3, dateraTemplate("data", "standard", "1Gi")),
		"classless, namespace not opted in": statefulSet("shop", "web", 3, dateraTemplate("data", "", "1Gi")),
	} {
		t.Run(name, func(t *testing.T) {
			resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
			assert.True(t, resp.Allowed)
			assert.Empty(t, resp.Patch)
		})
	}
	opted := statefulSet("blog", "web", 3, dateraTemplate("data", "datera-gold", "1Gi"))
	opted.Labels = map[string]string{mutate.InjectLabel: "disabled"}
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, opted, nil))
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch)
	assert.Empty(t, f.pvs.names())
}

// TestStatefulSetInvalid: invalid options are denied (422) with the field and allowed values,
// before anything is created.
func TestStatefulSetInvalid(t *testing.T) {
	f := newFixture(t)
	sts := threeTemplates(3)
	sts.Spec.VolumeClaimTemplates[2].Annotations = map[string]string{"petfabric.io/placementMode": "fastest"}
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusUnprocessableEntity), resp.Result.Code)
	assert.Equal(t, metav1.StatusReasonInvalid, resp.Result.Reason)
	assert.Equal(t, `petfabric: spec.volumeClaimTemplates[2].metadata.annotations[petfabric.io/placementMode]: invalid value "fastest": one of hybrid, single_flash, all_flash`, resp.Result.Message)
	assert.Empty(t, f.pvs.names())

	req := stsRequest(t, admissionv1.Create, sts, nil)
	req.Object.Raw = []byte(`{"spec":{"replicas":"three"}}`)
	resp = f.admit(t, PathStatefulSets, req)
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusBadRequest), resp.Result.Code)
	assert.Contains(t, resp.Result.Message, "petfabric: decode StatefulSet")
}

// TestDryRun: on dryRun the patch is still returned (kubectl --dry-run=server shows the
// mutation) but nothing is written, on every route.
func TestDryRun(t *testing.T) {
	f := newFixture(t)
	sts := threeTemplates(3)
	req := stsRequest(t, admissionv1.Create, sts, nil)
	req.DryRun = ptr.To(true)
	resp := f.admit(t, PathStatefulSets, req)
	assert.True(t, resp.Allowed)
	assert.NotEmpty(t, resp.Patch)

	stored := pinned(t, f, sts)
	more := stored.DeepCopy()
	more.Spec.Replicas = ptr.To[int32](6)
	upd := stsRequest(t, admissionv1.Update, more, stored)
	upd.DryRun = ptr.To(true)
	assert.True(t, f.admit(t, PathStatefulSets, upd).Allowed)

	f.lookup.put(stored)
	sc := scaleRequest(t, "shop", "web", 3, 9)
	sc.DryRun = ptr.To(true)
	assert.True(t, f.admit(t, PathScale, sc).Allowed)

	cl := claimRequest(t, admissionv1.Create, claimOf(stored, 0, 0))
	cl.DryRun = ptr.To(true)
	assert.True(t, f.admit(t, PathClaims, cl).Allowed)

	assert.Empty(t, f.pvs.names(), "dry run writes nothing")
	assert.Zero(t, f.pvs.creates.Load())
}

// TestStatefulSetUpdate: an UPDATE raising replicas (kubectl patch) pre-creates PVs for the new
// ordinals only, and never patches; scaling down or other updates create nothing.
func TestStatefulSetUpdate(t *testing.T) {
	f := newFixture(t)
	stored := pinned(t, f, threeTemplates(2))

	up := stored.DeepCopy()
	up.Spec.Replicas = ptr.To[int32](5)
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, up, stored))
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch, "templates are immutable: UPDATE never patches")
	assert.Equal(t, pvNames([]string{"data", "wal"}, "web", 2, 3, 4), sorted(f.pvs.names()))
	for _, n := range []int{2, 3, 4} {
		want := expectedPV(t, stored, nil, "wal", n)
		assert.Equal(t, want, f.pvs.get(want.Name))
	}

	before := f.pvs.creates.Load()
	down := up.DeepCopy()
	down.Spec.Replicas = ptr.To[int32](1)
	assert.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, down, up)).Allowed)
	image := up.DeepCopy()
	image.Spec.Template.Spec.Containers[0].Image = "nginx:2"
	assert.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, image, up)).Allowed)
	assert.Equal(t, before, f.pvs.creates.Load(), "scale down and image updates create nothing")

	// A StatefulSet stored without the webhook (templates never pinned): its claims would
	// never bind to PVs of a class they do not name, so none are made.
	unpinned := statefulSet("blog", "old", 1, dateraTemplate("data", "", "1Gi"))
	bigger := unpinned.DeepCopy()
	bigger.Spec.Replicas = ptr.To[int32](3)
	resp = f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, bigger, unpinned))
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch)
	assert.Equal(t, before, f.pvs.creates.Load())

	// Undecodable old object.
	req := stsRequest(t, admissionv1.Update, up, stored)
	req.OldObject.Raw = []byte(`{"spec":{"replicas":"x"}}`)
	resp = f.admit(t, PathStatefulSets, req)
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusBadRequest), resp.Result.Code)
}

// TestScale: the statefulsets/scale subresource (kubectl scale) raising replicas pre-creates
// PVs for the new ordinals, from the StatefulSet the lookup returns.
func TestScale(t *testing.T) {
	f := newFixture(t)
	stored := pinned(t, f, threeTemplates(2))
	f.lookup.put(stored)

	resp := f.admit(t, PathScale, scaleRequest(t, "shop", "web", 2, 4))
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch)
	assert.Equal(t, pvNames([]string{"data", "wal"}, "web", 2, 3), sorted(f.pvs.names()))
	want := expectedPV(t, stored, nil, "data", 3)
	assert.Equal(t, want, f.pvs.get(want.Name))

	before := f.pvs.creates.Load()
	assert.True(t, f.admit(t, PathScale, scaleRequest(t, "shop", "web", 4, 1)).Allowed, "scale down")
	assert.True(t, f.admit(t, PathScale, scaleRequest(t, "shop", "web", 4, 4)).Allowed, "no change")
	assert.True(t, f.admit(t, PathScale, scaleRequest(t, "shop", "absent", 1, 4)).Allowed, "no such StatefulSet: the apiserver will say so")
	other := scaleRequest(t, "shop", "web", 1, 9)
	other.SubResource = "status"
	assert.True(t, f.admit(t, PathScale, other).Allowed, "not the scale subresource")
	create := scaleRequest(t, "shop", "web", 1, 9)
	create.Operation = admissionv1.Create
	assert.True(t, f.admit(t, PathScale, create).Allowed)
	assert.Equal(t, before, f.pvs.creates.Load())

	// Scale from 4 to 6 where the old object said 4: PVs 4 and 5 only (2 and 3 exist).
	f.admit(t, PathScale, scaleRequest(t, "shop", "web", 4, 6))
	assert.Equal(t, pvNames([]string{"data", "wal"}, "web", 2, 3, 4, 5), sorted(f.pvs.names()))

	bad := scaleRequest(t, "shop", "web", 1, 2)
	bad.Object.Raw = []byte(`{"spec":{"replicas":"x"}}`)
	resp = f.admit(t, PathScale, bad)
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusBadRequest), resp.Result.Code)
}

// TestScaleLookupError: a lookup failure other than NotFound is an error (failurePolicy
// decides), not a silent allow.
func TestScaleLookupError(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Lookup = errLookup{newLookup()} })
	resp := f.admit(t, PathScale, scaleRequest(t, "shop", "web", 1, 2))
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusInternalServerError), resp.Result.Code)
	assert.Contains(t, resp.Result.Message, "etcd is sad")
}

type errLookup struct{ *staticLookup }

func (errLookup) StatefulSet(context.Context, string, string) (*appsv1.StatefulSet, error) {
	return nil, errors.New("etcd is sad")
}

// TestClaimCreate: the PVC hook writes exactly the claim's PV, identical to the one the
// StatefulSet hook writes for that ordinal, for a claim of an ordinal the live StatefulSet has.
func TestClaimCreate(t *testing.T) {
	f := newFixture(t)
	stored := pinned(t, f, threeTemplates(2))
	up := stored.DeepCopy()
	up.Spec.Replicas = ptr.To[int32](8)
	f.lookup.put(up) // scaled to 8 meanwhile (e.g. while the webhook was down)

	pvc := claimOf(stored, 0, 7)
	resp := f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, pvc))
	assert.True(t, resp.Allowed)
	assert.Empty(t, resp.Patch)
	assert.Empty(t, resp.Warnings)
	want := expectedPV(t, stored, nil, "data", 7)
	assert.Equal(t, []string{want.Name}, f.pvs.names())
	assert.Equal(t, want, f.pvs.get(want.Name))

	// The same claim again (a retry, or the StatefulSet hook got there first): success.
	resp = f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, pvc))
	assert.True(t, resp.Allowed)
	assert.Len(t, f.pvs.names(), 1)

	// And the StatefulSet hook, scaling 2 → 8, finds it and is content.
	assert.True(t, f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Update, up, stored)).Allowed)
	assert.Len(t, f.pvs.names(), 12)

	before := f.pvs.creates.Load()
	for name, c := range map[string]*corev1.PersistentVolumeClaim{
		"not Datera's": claimOf(stored, 1, 0),
		"no name (generateName)": func() *corev1.PersistentVolumeClaim {
			c := claimOf(stored, 0, 1)
			c.Name, c.GenerateName = "", "x-"
			return c
		}(),
		"already bound": func() *corev1.PersistentVolumeClaim {
			c := claimOf(stored, 0, 20)
			c.Spec.VolumeName = "some-pv"
			return c
		}(),
		"an ordinal the StatefulSet does not have": claimOf(stored, 0, 8),
		"a claim of no StatefulSet": func() *corev1.PersistentVolumeClaim {
			c := claimOf(stored, 0, 1)
			c.Name, c.Annotations = "standalone", nil
			return c
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			resp := f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, c))
			assert.True(t, resp.Allowed)
		})
	}
	upd := f.admit(t, PathClaims, claimRequest(t, admissionv1.Update, claimOf(stored, 0, 3)))
	assert.True(t, upd.Allowed, "only CREATE matters")
	assert.Equal(t, before, f.pvs.creates.Load())

	// Namespace from the request when the object has none.
	c := claimOf(stored, 0, 1)
	f.pvs.mu.Lock()
	delete(f.pvs.pvs, mutate.PVName("shop", c.Name))
	f.pvs.mu.Unlock()
	req := claimRequest(t, admissionv1.Create, c)
	c.Namespace = ""
	req.Object = raw(t, c)
	assert.True(t, f.admit(t, PathClaims, req).Allowed)
	assert.NotNil(t, f.pvs.get(mutate.PVName("shop", c.Name)))
}

// TestClaimNotServedWarns: a Datera claim the hook makes no PV for is allowed with a warning
// saying why (it would otherwise stay Pending without a word).
func TestClaimNotServedWarns(t *testing.T) {
	f := newFixture(t)
	stored := pinned(t, f, threeTemplates(2))
	standalone := claimOf(stored, 0, 0)
	standalone.Name, standalone.Annotations = "scratch", nil
	resp := f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, standalone))
	assert.True(t, resp.Allowed)
	require.Len(t, resp.Warnings, 1)
	assert.Contains(t, resp.Warnings[0], "StatefulSet templates only")
	resp = f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(stored, 0, 5)))
	assert.True(t, resp.Allowed)
	require.Len(t, resp.Warnings, 1)
	assert.Contains(t, resp.Warnings[0], "has no ordinal 5")
	assert.Empty(t, f.pvs.names())
}

// TestClaimInvalid: the claim's own annotations are not trusted — the PV comes from the live
// StatefulSet's template; a live template whose options are invalid is denied (422) naming
// the field.
func TestClaimInvalid(t *testing.T) {
	f := newFixture(t)
	stored := pinned(t, f, statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi")))
	pvc := claimOf(stored, 0, 0)
	pvc.Annotations["petfabric.io/backstoreServer"] = "evil.example:7717"
	pvc.Annotations["petfabric.io/replica"] = "5"
	resp := f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, pvc))
	require.True(t, resp.Allowed)
	opts := f.pvs.get(mutate.PVName("shop", pvc.Name)).Spec.FlexVolume.Options
	assert.Equal(t, testCfg.Defaults[pvoptions.OptBackstoreServer], opts["backstoreServer"])
	assert.Equal(t, "3", opts["replica"])

	bad := stored.DeepCopy()
	bad.Spec.VolumeClaimTemplates[0].Annotations["petfabric.io/replica"] = "9"
	f.lookup.put(bad)
	resp = f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(bad, 0, 0)))
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusUnprocessableEntity), resp.Result.Code)
	assert.Contains(t, resp.Result.Message, "spec.volumeClaimTemplates[0].metadata.annotations[petfabric.io/replica]")

	req := claimRequest(t, admissionv1.Create, pvc)
	req.Object.Raw = []byte(`{"metadata":{"name":3}}`)
	resp = f.admit(t, PathClaims, req)
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusBadRequest), resp.Result.Code)
}

// TestConflict: a PV of the name a claim maps to that belongs to another claim is never
// reused: 409, naming the other claim — on both routes.
func TestConflict(t *testing.T) {
	for name, holder := range map[string]*corev1.ObjectReference{
		"pre-bound to another claim": {Namespace: "elsewhere", Name: "someone"},
		"not pre-bound":              nil,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			taken := mutate.PVName("shop", "data-web-1")
			f.pvs.put(&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: taken}, Spec: corev1.PersistentVolumeSpec{ClaimRef: holder}})
			wantHolder := "(none: it is not pre-bound)"
			if holder != nil {
				wantHolder = "elsewhere/someone"
			}
			want := fmt.Sprintf("petfabric: persistentvolume %s for claim shop/data-web-1 already exists and belongs to claim %s", taken, wantHolder)

			sts := statefulSet("shop", "web", 3, dateraTemplate("data", "datera-gold", "1Gi"))
			resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
			assert.False(t, resp.Allowed)
			assert.Equal(t, int32(http.StatusConflict), resp.Result.Code)
			assert.Equal(t, metav1.StatusReasonConflict, resp.Result.Reason)
			assert.Contains(t, resp.Result.Message, want)

			stored := pinned(t, newFixture(t), sts)
			f.lookup.put(stored)
			resp = f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(stored, 0, 1)))
			assert.False(t, resp.Allowed)
			assert.Equal(t, int32(http.StatusConflict), resp.Result.Code)
			assert.Contains(t, resp.Result.Message, want)
		})
	}
}

// TestStoreErrors: a failing PV write is an error (500, failurePolicy decides), on both routes.
func TestStoreErrors(t *testing.T) {
	f := newFixture(t)
	f.pvs.beforeCreate = func(context.Context, *corev1.PersistentVolume) error {
		return apierrors.NewForbidden(corev1.Resource("persistentvolumes"), "x", errors.New("RBAC says no"))
	}
	sts := statefulSet("shop", "web", 3, dateraTemplate("data", "datera-gold", "1Gi"))
	resp := f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusInternalServerError), resp.Result.Code)
	assert.Contains(t, resp.Result.Message, "RBAC says no")
	stored := pinned(t, newFixture(t), sts)
	f.lookup.put(stored)
	resp = f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(stored, 0, 0)))
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusInternalServerError), resp.Result.Code)
}

// TestSlowStoreDefers: PV creation that does not finish within the budget is left to the PVC
// hook and the reconcile loop: the request is allowed (with its patch) and warns with the
// counts; the deferred ones are counted in the metric.
func TestSlowStoreDefers(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.CreateBudget = 300 * time.Millisecond; o.Concurrency = 2 })
	f.pvs.beforeCreate = slowUntil(2)
	sts := threeTemplates(3) // 2 Datera templates × 3 = 6 PVs
	req := stsRequest(t, admissionv1.Create, sts, nil)
	start := time.Now()
	w := post(f.h, PathStatefulSets+"?timeout=2s", reviewBody(t, req), "application/json")
	took := time.Since(start)
	resp := checkReview(t, w, req.UID)
	assert.True(t, resp.Allowed)
	assert.NotEmpty(t, resp.Patch, "the templates are still pinned")
	require.Len(t, resp.Warnings, 1)
	assert.Contains(t, resp.Warnings[0], "pre-created 2 of 6 PersistentVolumes within the admission call")
	assert.Len(t, f.pvs.names(), 2)
	assert.Equal(t, 4.0, testutil.ToFloat64(f.srv.metrics.pvPending))
	assert.Less(t, took, 1400*time.Millisecond, "the budget (300ms), not the apiserver's timeout (1.5s after the margin), bounds the call")
	assert.GreaterOrEqual(t, took, 300*time.Millisecond)
}

// TestBudgetFromTimeout: the apiserver's ?timeout= cuts a longer budget, minus a margin
// (2s → 1.5s), so the answer arrives before the apiserver gives up.
func TestBudgetFromTimeout(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.CreateBudget = 10 * time.Second })
	f.pvs.beforeCreate = slowUntil(0)
	f.lookup.put(pinned(t, f, threeTemplates(1)))
	req := scaleRequest(t, "shop", "web", 1, 3)
	start := time.Now()
	w := post(f.h, PathScale+"?timeout=2s", reviewBody(t, req), "application/json")
	took := time.Since(start)
	resp := checkReview(t, w, req.UID)
	assert.True(t, resp.Allowed)
	require.Len(t, resp.Warnings, 1)
	assert.Contains(t, resp.Warnings[0], "pre-created 0 of 4")
	// 1.5 s: neither the 10 s budget nor the 100 ms floor (slack for a loaded machine).
	assert.GreaterOrEqual(t, took, 1450*time.Millisecond)
	assert.Less(t, took, 3*time.Second)

	for q, want := range map[string]time.Duration{
		"":             10 * time.Second,
		"?timeout=10s": 8 * time.Second,
		"?timeout=30s": 10 * time.Second,
		"?timeout=1s":  500 * time.Millisecond,
		"?timeout=1ms": 100 * time.Millisecond,
		"?timeout=abc": 10 * time.Second,
		"?timeout=-5s": 10 * time.Second,
	} {
		r, _ := http.NewRequest(http.MethodPost, "https://x"+PathScale+q, nil)
		assert.Equal(t, want, f.srv.budget(r), q)
	}

	// On the PVC route too: the one create waits for the budget, then is an error (the
	// claim's PV must exist before the claim is stored; failurePolicy decides).
	pvc := claimOf(pinned(t, f, threeTemplates(10)), 0, 9)
	req = claimRequest(t, admissionv1.Create, pvc)
	start = time.Now()
	w = post(f.h, PathClaims+"?timeout=1s", reviewBody(t, req), "application/json")
	resp = checkReview(t, w, req.UID)
	assert.False(t, resp.Allowed)
	assert.Equal(t, int32(http.StatusInternalServerError), resp.Result.Code)
	took = time.Since(start)
	assert.GreaterOrEqual(t, took, 450*time.Millisecond)
	assert.Less(t, took, 2*time.Second)
}

// TestConcurrentRequests runs creates, scale-ups and claim creates for overlapping claims at
// once (meant for -race): every claim ends with exactly its PV, and racing writers of the same
// PV all succeed.
func TestConcurrentRequests(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Concurrency = 4 })
	const sets = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	var denials []string
	do := func(path string, req *admissionv1.AdmissionRequest) {
		defer wg.Done()
		body := reviewBody(t, req)
		if resp := f.admitAsync(t, path, body, req.UID); resp != nil && !resp.Allowed {
			mu.Lock()
			denials = append(denials, resp.Result.Message)
			mu.Unlock()
		}
	}
	stored := make([]*appsv1.StatefulSet, sets)
	for i := range sets {
		stored[i] = pinned(t, f, statefulSet("shop", fmt.Sprintf("web%d", i), 4,
			dateraTemplate("data", "datera-gold", "1Gi"), dateraTemplate("wal", "datera", "1Gi")))
		f.lookup.put(stored[i])
	}
	for i := range sets {
		sts := stored[i]
		wg.Add(2 + 12)
		go do(PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
		go do(PathScale, scaleRequest(t, "shop", sts.Name, 2, 6))
		for n := range 6 {
			for tpl := range 2 {
				go do(PathClaims, claimRequest(t, admissionv1.Create, claimOf(sts, tpl, n)))
			}
		}
	}
	wg.Wait()
	assert.Empty(t, denials)
	assert.Len(t, f.pvs.names(), sets*2*6)
	assert.Equal(t, int64(sets*2*6), f.pvs.creates.Load())
	for i := range sets {
		for n := range 6 {
			want := expectedPV(t, stored[i], nil, "wal", n)
			assert.Equal(t, want, f.pvs.get(want.Name))
		}
	}
}
