package reconcile

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
)

func pvName(claim string) string { return mutate.PVName(testNS, claim) }

func TestSyncStatefulSet(t *testing.T) {
	gold := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	web := statefulSet("web", 3)
	claim := func(name, class, volume string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
			Spec:       corev1.PersistentVolumeClaimSpec{StorageClassName: &class, VolumeName: volume},
		}
	}
	otherClaimPV := func(n int, managed bool) *corev1.PersistentVolume {
		pv := planned(t, web, gold, "data", n)
		pv.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "other", Name: "thief"}
		if !managed {
			pv.Labels = nil
		}
		return pv
	}

	tests := []struct {
		name    string
		sts     *appsv1.StatefulSet
		nsLabel map[string]string
		extra   []runtime.Object
		// wantCreated are the ordinals of template "data" whose PV the sync must create.
		wantCreated []int
		wantEvents  []string // substrings, each in one event
		noEvents    []string // reasons that must not appear
	}{
		{
			name:        "missing ordinals are created, one aggregated event",
			sts:         web,
			wantCreated: []int{0, 1, 2},
			wantEvents:  []string{"Normal CreatedPersistentVolume created 3 PersistentVolumes the webhook had not: template data ordinals 0-2"},
		},
		{
			name: "spec.ordinals.start is respected",
			sts: func() *appsv1.StatefulSet {
				s := statefulSet("web", 2)
				s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 5}
				return s
			}(),
			wantCreated: []int{5, 6},
			wantEvents:  []string{"template data ordinals 5-6"},
		},
		{
			name:        "an existing PV for the same claim is a no-op",
			sts:         web,
			extra:       []runtime.Object{planned(t, web, gold, "data", 0), planned(t, web, gold, "data", 2)},
			wantCreated: []int{1},
			wantEvents:  []string{"Normal CreatedPersistentVolume created PersistentVolume " + pvName("data-web-1")},
			noEvents:    []string{EventPVConflict},
		},
		{
			name: "an existing unmanaged PV pre-bound to the same claim is a no-op (AlreadyExists path)",
			sts:  web,
			extra: []runtime.Object{func() *corev1.PersistentVolume {
				pv := planned(t, web, gold, "data", 1)
				pv.Labels = nil
				return pv
			}()},
			wantCreated: []int{0, 2},
			noEvents:    []string{EventPVConflict},
		},
		{
			name:        "a managed PV of that name serving another claim: warning, untouched",
			sts:         web,
			extra:       []runtime.Object{otherClaimPV(1, true)},
			wantCreated: []int{0, 2},
			wantEvents:  []string{"Warning PersistentVolumeConflict PersistentVolume " + pvName("data-web-1") + ", wanted for claim app/data-web-1, is taken by claim other/thief; left untouched"},
		},
		{
			name:        "an unmanaged PV of that name serving another claim: warning after AlreadyExists, untouched",
			sts:         web,
			extra:       []runtime.Object{otherClaimPV(2, false)},
			wantCreated: []int{0, 1},
			wantEvents:  []string{"is taken by claim other/thief"},
		},
		{
			name:        "a claim bound to another PV gets none",
			sts:         web,
			extra:       []runtime.Object{claim("data-web-0", testClass, "someone-elses-pv")},
			wantCreated: []int{1, 2},
		},
		{
			name:        "a pending claim of the Datera class gets its PV",
			sts:         web,
			extra:       []runtime.Object{claim("data-web-0", testClass, "")},
			wantCreated: []int{0, 1, 2},
		},
		{
			name:        "a claim of another class gets none, with a warning",
			sts:         web,
			extra:       []runtime.Object{claim("data-web-2", "standard", "")},
			wantCreated: []int{0, 1},
			wantEvents:  []string{`Warning ClaimClassMismatch claim app/data-web-2 has class "standard"`},
		},
		{
			name: "invalid options: warning with the message, no PVs",
			sts: func() *appsv1.StatefulSet {
				tpl := claimTemplate("data", ptr.To(testClass))
				tpl.Annotations = map[string]string{"petfabric.io/replica": "9"}
				return statefulSet("web", 3, tpl)
			}(),
			wantEvents: []string{`Warning InvalidDateraOptions Datera volumes not created: spec.volumeClaimTemplates[0].metadata.annotations[petfabric.io/replica]: invalid value "9"`},
			noEvents:   []string{EventCreatedPV},
		},
		{
			name:       "a template of another class is not ours",
			sts:        statefulSet("web", 3, claimTemplate("data", ptr.To("standard"))),
			noEvents:   []string{EventCreatedPV, EventNotPinned},
			wantEvents: nil,
		},
		{
			name:       "opted-in namespace, classless template the webhook never pinned: warning, no PVs",
			sts:        statefulSet("web", 2, claimTemplate("data", nil)),
			nsLabel:    map[string]string{mutate.InjectLabel: "enabled"},
			wantEvents: []string{`Warning DateraTemplateNotPinned claim template "data" should get Datera class "datera-gold"`},
			noEvents:   []string{EventCreatedPV},
		},
		{
			name: "a template pinned by the webhook (beta annotation rewritten) is served",
			sts: func() *appsv1.StatefulSet {
				tpl := claimTemplate("data", ptr.To(testClass))
				tpl.Annotations = map[string]string{mutate.BetaClassAnnotation: testClass, mutate.AnnStatefulSet: "web", mutate.AnnClaimTemplate: "data"}
				return statefulSet("web", 1, tpl)
			}(),
			wantCreated: []int{0},
		},
		{
			name:        "zero replicas: nothing",
			sts:         statefulSet("web", 0),
			wantCreated: nil,
			noEvents:    []string{EventCreatedPV},
		},
		{
			name: "a StatefulSet being deleted gets nothing",
			sts: func() *appsv1.StatefulSet {
				s := statefulSet("web", 2)
				s.DeletionTimestamp = ptr.To(metav1.Now())
				s.Finalizers = []string{"test"}
				return s
			}(),
			noEvents: []string{EventCreatedPV},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := append([]runtime.Object{namespace(testNS, tc.nsLabel), gold, storageClass("standard-like", corev1.PersistentVolumeReclaimRetain, nil), tc.sts}, tc.extra...)
			e := newEnv(t, objs, func(o *Options) { o.Mutate.DefaultClass = testClass }).start()
			before := e.pvNames()
			require.NoError(t, e.c.syncStatefulSet(context.Background(), testNS+"/web"))

			var want []string
			for _, n := range tc.wantCreated {
				want = append(want, planned(t, tc.sts, gold, "data", n).Name)
			}
			var got []string
			for _, n := range e.pvNames() {
				if !slices.Contains(before, n) {
					got = append(got, n)
				}
			}
			assert.ElementsMatch(t, want, got, "created PVs")
			for _, w := range e.pvWrites() {
				assert.False(t, strings.HasPrefix(w, "update") || strings.HasPrefix(w, "delete"), "existing PVs are never modified: %s", w)
			}
			// Every created PV is exactly what the webhook would have written.
			for _, n := range tc.wantCreated {
				exp := planned(t, tc.sts, gold, "data", n)
				got, err := e.client.CoreV1().PersistentVolumes().Get(context.Background(), exp.Name, metav1.GetOptions{})
				require.NoError(t, err)
				assert.Equal(t, exp.Spec, got.Spec)
				assert.Equal(t, exp.Labels, got.Labels)
				assert.Equal(t, exp.Annotations, got.Annotations)
			}
			assert.Len(t, e.pvNames(), len(before)+len(tc.wantCreated))
			assert.Equal(t, float64(len(tc.wantCreated)), testutil.ToFloat64(e.r.metrics.pvsCreated))

			evs := e.events()
			for _, w := range tc.wantEvents {
				assert.Len(t, eventsWith(evs, w), 1, "want one event containing %q in %q", w, evs)
			}
			for _, r := range tc.noEvents {
				assert.Empty(t, eventsWith(evs, " "+r+" "), "no %s event", r)
			}
			if len(tc.wantCreated) > 0 {
				assert.Len(t, eventsWith(evs, EventCreatedPV), 1, "one aggregated event")
				assert.Contains(t, eventsWith(evs, EventCreatedPV)[0], "kind=StatefulSet", "the event is on the StatefulSet")
			}

			// A second pass, once the caches have caught up, changes nothing and repeats no warning.
			e.waitFor("informer sees the created PVs", func() bool {
				for _, n := range want {
					if _, err := e.c.pvLister.Get(n); err != nil {
						return false
					}
				}
				return true
			})
			writes, names := len(e.pvWrites()), e.pvNames()
			require.NoError(t, e.c.syncStatefulSet(context.Background(), testNS+"/web"))
			// Only a PV outside the managed cache (no petfabric labels) is tried again, and
			// refused with AlreadyExists.
			for _, w := range e.pvWrites()[writes:] {
				assert.Contains(t, before, strings.TrimPrefix(w, "create "), "second pass writes nothing new: %s", w)
			}
			assert.ElementsMatch(t, names, e.pvNames())
			assert.Empty(t, e.events(), "second pass emits nothing")
		})
	}
}

func TestSyncStatefulSetMissingIsNoop(t *testing.T) {
	e := newEnv(t, []runtime.Object{namespace(testNS, nil)}).start()
	require.NoError(t, e.c.syncStatefulSet(context.Background(), testNS+"/gone"))
	assert.Empty(t, e.pvWrites())
}

func TestRanges(t *testing.T) {
	for in, want := range map[string]string{
		"":            "",
		"3":           "3",
		"0,1,2":       "0-2",
		"7,0,1,2,5,9": "0-2,5,7,9",
		"4,5,9,10,11": "4-5,9-11",
	} {
		var ns []int
		for f := range strings.SplitSeq(in, ",") {
			if n, err := strconv.Atoi(f); err == nil {
				ns = append(ns, n)
			}
		}
		assert.Equal(t, want, ranges(ns), in)
	}
}
