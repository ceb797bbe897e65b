package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// testCfg is the webhook configuration of every handler test.
var testCfg = mutate.Config{
	ClusterID:    "pf",
	DefaultClass: "datera",
	Defaults: map[string]string{
		pvoptions.OptBackstoreServer: "datera-mgmt.example.com:7718",
		mutate.OptSecretName:         "datera-credentials",
		mutate.OptSecretNamespace:    "petfabric-system",
	},
}

func testClasses() map[string]mutate.Class {
	return map[string]mutate.Class{
		"datera":      {Name: "datera", Parameters: map[string]string{"replica": "3"}, ReclaimPolicy: corev1.PersistentVolumeReclaimRetain},
		"datera-gold": {Name: "datera-gold", Parameters: map[string]string{"replica": "3", "placementMode": "hybrid"}, ReclaimPolicy: corev1.PersistentVolumeReclaimRetain},
	}
}

// staticLookup is a Lookup over fixed data. panicWith makes every call panic. Every namespace
// exists (UID nsUID(name), or nsUIDs[name]) unless listed in missingNS. PVsForClaim answers
// from the fixture's PV store, as the informer index answers from the cluster's PVs.
type staticLookup struct {
	classes   map[string]mutate.Class
	nsLabels  map[string]map[string]string
	nsUIDs    map[string]string
	missingNS map[string]bool
	pvs       *memPVs
	panicWith any

	mu   sync.Mutex
	sts  map[string]*appsv1.StatefulSet // namespace/name, as the cache has them
	live map[string]*appsv1.StatefulSet // namespace/name, where the API is ahead of the cache
}

func newLookup() *staticLookup {
	return &staticLookup{
		classes:  testClasses(),
		nsLabels: map[string]map[string]string{"blog": {mutate.InjectLabel: "enabled"}},
		sts:      map[string]*appsv1.StatefulSet{},
	}
}

func (l *staticLookup) DateraClasses() (map[string]mutate.Class, error) {
	if l.panicWith != nil {
		panic(l.panicWith)
	}
	return l.classes, nil
}

func (l *staticLookup) Namespace(_ context.Context, ns string) (*corev1.Namespace, error) {
	if l.panicWith != nil {
		panic(l.panicWith)
	}
	if l.missingNS[ns] {
		return nil, apierrors.NewNotFound(corev1.Resource("namespaces"), ns)
	}
	uid := nsUID(ns)
	if u, ok := l.nsUIDs[ns]; ok {
		uid = u
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, UID: types.UID(uid), Labels: l.nsLabels[ns]}}, nil
}

// nsUID is the UID of a test namespace.
func nsUID(ns string) string { return "uid-of-" + ns }

func (l *staticLookup) PVsForClaim(ns, claim string) ([]*corev1.PersistentVolume, error) {
	if l.pvs == nil {
		return nil, nil
	}
	// The tests' PVs carry the version 2 or the version 1 name of their claim (or squat one),
	// so looking at those two names answers as the claimRef index does, in O(1) (the
	// benchmarks keep hundreds of PVs).
	l.pvs.mu.Lock()
	defer l.pvs.mu.Unlock()
	var out []*corev1.PersistentVolume
	for _, name := range []string{mutate.PVName(ns, claim), mutate.LegacyPVName(ns, claim)} {
		if pv, ok := l.pvs.pvs[name]; ok && mutate.SameClaim(pv, ns, claim) {
			out = append(out, pv.DeepCopy())
		}
	}
	return out, nil
}

func (l *staticLookup) StatefulSet(_ context.Context, ns, name string) (*appsv1.StatefulSet, error) {
	if l.panicWith != nil {
		panic(l.panicWith)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.sts[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(appsv1.Resource("statefulsets"), name)
	}
	return s.DeepCopy(), nil
}

// StatefulSetLive answers from live when set (the API ahead of a lagging cache).
func (l *staticLookup) StatefulSetLive(ctx context.Context, ns, name string) (*appsv1.StatefulSet, error) {
	l.mu.Lock()
	live, ok := l.live[ns+"/"+name]
	l.mu.Unlock()
	if ok {
		return live.DeepCopy(), nil
	}
	return l.StatefulSet(ctx, ns, name)
}

func (l *staticLookup) put(s *appsv1.StatefulSet) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sts[s.Namespace+"/"+s.Name] = s.DeepCopy()
}

// memPVs is an in-memory PVStore with the apiserver's AlreadyExists/NotFound semantics.
// beforeCreate, when set, runs first and may block (honouring ctx) or fail.
type memPVs struct {
	beforeCreate func(ctx context.Context, pv *corev1.PersistentVolume) error
	beforeGet    func(pv *corev1.PersistentVolume) // may alter the copy Get returns
	creates      atomic.Int64                      // successful creates

	mu  sync.Mutex
	pvs map[string]*corev1.PersistentVolume
}

func newPVs() *memPVs { return &memPVs{pvs: map[string]*corev1.PersistentVolume{}} }

func (m *memPVs) Create(ctx context.Context, pv *corev1.PersistentVolume) error {
	if m.beforeCreate != nil {
		if err := m.beforeCreate(ctx, pv); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pvs[pv.Name]; ok {
		return apierrors.NewAlreadyExists(corev1.Resource("persistentvolumes"), pv.Name)
	}
	m.pvs[pv.Name] = pv.DeepCopy()
	m.creates.Add(1)
	return nil
}

func (m *memPVs) Get(_ context.Context, name string) (*corev1.PersistentVolume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pv, ok := m.pvs[name]
	if !ok {
		return nil, apierrors.NewNotFound(corev1.Resource("persistentvolumes"), name)
	}
	out := pv.DeepCopy()
	if m.beforeGet != nil {
		m.beforeGet(out)
	}
	return out, nil
}

func (m *memPVs) names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.pvs))
	for n := range m.pvs {
		out = append(out, n)
	}
	return out
}

func (m *memPVs) get(name string) *corev1.PersistentVolume {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pvs[name]
}

func (m *memPVs) put(pv *corev1.PersistentVolume) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pvs[pv.Name] = pv
}

type fixture struct {
	srv    *Server
	h      http.Handler
	lookup *staticLookup
	pvs    *memPVs
	reg    *prometheus.Registry
}

func newFixture(t testing.TB, mod ...func(*Options)) *fixture {
	t.Helper()
	f := &fixture{lookup: newLookup(), pvs: newPVs(), reg: prometheus.NewRegistry()}
	f.lookup.pvs = f.pvs
	o := Options{
		Mutate: testCfg, Lookup: f.lookup, PVs: f.pvs, Registerer: f.reg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, m := range mod {
		m(&o)
	}
	f.srv = New(o)
	f.h = f.srv.Handler()
	return f
}

// dateraTemplate is a claim template naming class ("" for none).
func dateraTemplate(name, class, size string) corev1.PersistentVolumeClaim {
	t := corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if class != "" {
		t.Spec.StorageClassName = ptr.To(class)
	}
	t.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	t.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}
	return t
}

func statefulSet(ns, name string, replicas int32, templates ...corev1.PersistentVolumeClaim) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas),
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
			},
			VolumeClaimTemplates: templates,
		},
	}
}

var uidCounter atomic.Int64

func newUID() types.UID {
	return types.UID("00000000-0000-4000-8000-" + padInt(uidCounter.Add(1)))
}

func padInt(n int64) string {
	s := []byte("000000000000")
	for i := len(s) - 1; n > 0 && i >= 0; i-- {
		s[i] = byte('0' + n%10)
		n /= 10
	}
	return string(s)
}

func raw(t testing.TB, obj any) runtime.RawExtension {
	t.Helper()
	if obj == nil {
		return runtime.RawExtension{}
	}
	b, err := json.Marshal(obj)
	require.NoError(t, err)
	return runtime.RawExtension{Raw: b}
}

func stsRequest(t testing.TB, op admissionv1.Operation, obj, old *appsv1.StatefulSet) *admissionv1.AdmissionRequest {
	t.Helper()
	req := &admissionv1.AdmissionRequest{
		UID:       newUID(),
		Kind:      metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"},
		Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"},
		Name:      obj.Name,
		Namespace: obj.Namespace,
		Operation: op,
		Object:    raw(t, obj),
	}
	if old != nil {
		req.OldObject = raw(t, old)
	}
	return req
}

func claimRequest(t testing.TB, op admissionv1.Operation, pvc *corev1.PersistentVolumeClaim) *admissionv1.AdmissionRequest {
	t.Helper()
	return &admissionv1.AdmissionRequest{
		UID:       newUID(),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeClaim"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "persistentvolumeclaims"},
		Name:      pvc.Name,
		Namespace: pvc.Namespace,
		Operation: op,
		Object:    raw(t, pvc),
	}
}

func scaleRequest(t testing.TB, ns, name string, from, to int32) *admissionv1.AdmissionRequest {
	t.Helper()
	scale := func(n int32) *autoscalingv1.Scale {
		return &autoscalingv1.Scale{TypeMeta: metav1.TypeMeta{APIVersion: "autoscaling/v1", Kind: "Scale"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: n}}
	}
	return &admissionv1.AdmissionRequest{
		UID:         newUID(),
		Kind:        metav1.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"},
		Resource:    metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"},
		SubResource: "scale",
		Name:        name,
		Namespace:   ns,
		Operation:   admissionv1.Update,
		Object:      raw(t, scale(to)),
		OldObject:   raw(t, scale(from)),
	}
}

func reviewBody(t testing.TB, req *admissionv1.AdmissionRequest) []byte {
	t.Helper()
	b, err := json.Marshal(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	require.NoError(t, err)
	return b
}

func post(h http.Handler, path string, body []byte, contentType string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// admit posts a review and checks the envelope the apiserver requires: HTTP 200, an
// admission.k8s.io/v1 AdmissionReview, the request's UID, patch and patchType together.
func (f *fixture) admit(t testing.TB, path string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	return checkReview(t, post(f.h, path, reviewBody(t, req), "application/json"), req.UID)
}

func checkReview(t testing.TB, w *httptest.ResponseRecorder, uid types.UID) *admissionv1.AdmissionResponse {
	t.Helper()
	require.Equal(t, http.StatusOK, w.Code, "body: %s", w.Body.String())
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	var out admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &out))
	require.Equal(t, "admission.k8s.io/v1", out.APIVersion)
	require.Equal(t, "AdmissionReview", out.Kind)
	require.Nil(t, out.Request)
	require.NotNil(t, out.Response)
	require.Equal(t, uid, out.Response.UID)
	require.Equal(t, len(out.Response.Patch) > 0, out.Response.PatchType != nil, "patch and patchType go together")
	if out.Response.PatchType != nil {
		require.Equal(t, admissionv1.PatchTypeJSONPatch, *out.Response.PatchType)
	}
	if !out.Response.Allowed {
		require.NotNil(t, out.Response.Result, "a denial says why")
		require.NotZero(t, out.Response.Result.Code)
		require.Empty(t, out.Response.Patch)
	}
	return out.Response
}

// admitAsync is admit for goroutines other than the test's: failures are reported with
// t.Errorf (FailNow must not be called there), and nil is returned.
func (f *fixture) admitAsync(t testing.TB, path string, body []byte, uid types.UID) *admissionv1.AdmissionResponse {
	w := post(f.h, path, body, "application/json")
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); w.Code != http.StatusOK || err != nil || out.Response == nil || out.Response.UID != uid {
		t.Errorf("%s: HTTP %d, decode error %v, body %s", path, w.Code, err, w.Body.String())
		return nil
	}
	return out.Response
}

// applyPatch applies an RFC 6902 patch as the apiserver does (evanphx/json-patch).
func applyPatch(t testing.TB, doc, patch []byte) []byte {
	t.Helper()
	out, err := applyPatchNoTB(doc, patch)
	require.NoError(t, err, "patch %s", patch)
	return out
}

func applyPatchNoTB(doc, patch []byte) ([]byte, error) {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, err
	}
	return p.Apply(doc)
}

// expectedPV is the PV mutate decides for one ordinal (the handlers must write exactly it).
func expectedPV(t testing.TB, sts *appsv1.StatefulSet, nsLabels map[string]string, template string, ordinal int) *corev1.PersistentVolume {
	t.Helper()
	plan, err := mutate.Decide(testCfg, mutate.Input{StatefulSet: sts, NamespaceLabels: nsLabels, NamespaceUID: nsUID(sts.Namespace), Classes: testClasses()})
	require.NoError(t, err)
	for _, tp := range plan.Templates {
		if tp.Name == template {
			pv, err := plan.Ordinal(tp, ordinal).PersistentVolume(testCfg)
			require.NoError(t, err)
			return pv
		}
	}
	t.Fatalf("template %s not planned", template)
	return nil
}

// pinned returns the StatefulSet as stored after the webhook's CREATE patch, and stores it in
// the fixture's lookup.
func pinned(t testing.TB, f *fixture, sts *appsv1.StatefulSet) *appsv1.StatefulSet {
	t.Helper()
	req := stsRequest(t, admissionv1.Create, sts, nil)
	req.DryRun = ptr.To(true)
	resp := f.admit(t, PathStatefulSets, req)
	require.True(t, resp.Allowed)
	out := sts.DeepCopy()
	if len(resp.Patch) > 0 {
		out = &appsv1.StatefulSet{}
		require.NoError(t, json.Unmarshal(applyPatch(t, req.Object.Raw, resp.Patch), out))
	}
	f.lookup.put(out) // stored: the PVC hook finds it live
	return out
}

// claimOf is the claim the StatefulSet controller creates for ordinal n of template i.
func claimOf(sts *appsv1.StatefulSet, i, n int) *corev1.PersistentVolumeClaim {
	c := sts.Spec.VolumeClaimTemplates[i].DeepCopy()
	c.Name = mutate.ClaimName(c.Name, sts.Name, n)
	c.Namespace = sts.Namespace
	c.Labels = map[string]string{}
	for k, v := range sts.Spec.Selector.MatchLabels {
		c.Labels[k] = v
	}
	return c
}

// slowUntil returns a beforeCreate that lets the first n creates through and makes the rest
// wait for their context, as a client-go call to an overloaded apiserver does.
func slowUntil(n int64) func(ctx context.Context, pv *corev1.PersistentVolume) error {
	var seen atomic.Int64
	return func(ctx context.Context, _ *corev1.PersistentVolume) error {
		if seen.Add(1) <= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Minute):
			return nil
		}
	}
}

func getQty(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}
