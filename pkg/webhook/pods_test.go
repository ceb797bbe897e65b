package webhook

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// mapClaims is a ClaimGetter over a map; err makes every read fail.
type mapClaims struct {
	claims map[string]*corev1.PersistentVolumeClaim
	err    error
}

func (m mapClaims) Claim(ns, name string) (*corev1.PersistentVolumeClaim, error) {
	if m.err != nil {
		return nil, m.err
	}
	return m.claims[ns+"/"+name], nil
}

func gateTestPod(ns, name, node string, gates []string, claims ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{NodeName: node,
		Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}}
	for _, g := range gates {
		pod.Spec.SchedulingGates = append(pod.Spec.SchedulingGates, corev1.PodSchedulingGate{Name: g})
	}
	for _, c := range claims {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "v-" + c, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return pod
}

func podRequest(t testing.TB, op admissionv1.Operation, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	t.Helper()
	return &admissionv1.AdmissionRequest{
		UID:       newUID(),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Name:      pod.Name,
		Namespace: pod.Namespace,
		Operation: op,
		Object:    raw(t, pod),
	}
}

// TestAdmitPodGate: a pet created while one of its petfabric claims is unbound (stored but
// Pending, or not in the cache yet while its pre-bound PV is) gets the gate exactly once;
// pets whose claims are all Bound, pods with only foreign claims, pods created on a node,
// UPDATEs, and everything when the gate is off pass unchanged. Cache errors allow the pod.
func TestAdmitPodGate(t *testing.T) {
	const ns = "blog"
	ann := map[string]string{mutate.AnnStatefulSet: "web", mutate.AnnClaimTemplate: "data"}
	claim := func(name string, phase corev1.PersistentVolumeClaimPhase, annotations map[string]string) *corev1.PersistentVolumeClaim {
		c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
			Status: corev1.PersistentVolumeClaimStatus{Phase: phase}}
		if phase == corev1.ClaimBound {
			c.Spec.VolumeName = mutate.PVName(ns, name)
		}
		return c
	}
	claims := map[string]*corev1.PersistentVolumeClaim{
		ns + "/data-web-0":  claim("data-web-0", corev1.ClaimPending, ann),
		ns + "/data-web-1":  claim("data-web-1", corev1.ClaimBound, ann),
		ns + "/scratch-web": claim("scratch-web", corev1.ClaimPending, nil), // someone else's class
	}
	// data-web-2's claim is not in the cache yet; its pre-bound PV is.
	prebound := func(f *fixture) {
		f.pvs.put(&corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: mutate.PVName(ns, "data-web-2"), Labels: map[string]string{mutate.LabelManagedBy: mutate.ManagedByValue}},
			Spec:       corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: ns, Name: "data-web-2"}},
		})
	}
	tests := []struct {
		name   string
		off    bool
		op     admissionv1.Operation
		pod    *corev1.Pod
		err    error
		gates  []string // after the patch; nil: no patch
		gated  float64
		dryRun bool
	}{
		{name: "unbound claim: gated", pod: gateTestPod(ns, "web-0", "", nil, "data-web-0"), gates: []string{mutate.SchedulingGate}, gated: 1},
		{name: "claim not in cache, its PV pre-bound: gated", pod: gateTestPod(ns, "web-2", "", nil, "data-web-2"), gates: []string{mutate.SchedulingGate}, gated: 1},
		{name: "one bound, one unbound: gated", pod: gateTestPod(ns, "web-x", "", nil, "data-web-1", "data-web-0"), gates: []string{mutate.SchedulingGate}, gated: 1},
		{name: "gate appended to the pod's own", pod: gateTestPod(ns, "web-0", "", []string{"example.com/q"}, "data-web-0"), gates: []string{"example.com/q", mutate.SchedulingGate}, gated: 1},
		{name: "dry run: patched, not counted", pod: gateTestPod(ns, "web-0", "", nil, "data-web-0"), gates: []string{mutate.SchedulingGate}, dryRun: true},
		{name: "all bound: unchanged", pod: gateTestPod(ns, "web-1", "", nil, "data-web-1")},
		{name: "foreign claim only: unchanged", pod: gateTestPod(ns, "other", "", nil, "scratch-web")},
		{name: "unknown claim, no PV: unchanged", pod: gateTestPod(ns, "other", "", nil, "nobody")},
		{name: "already gated: never twice", pod: gateTestPod(ns, "web-0", "", []string{mutate.SchedulingGate}, "data-web-0")},
		{name: "created on a node: unchanged", pod: gateTestPod(ns, "web-0", "node-1", nil, "data-web-0")},
		{name: "UPDATE: unchanged", op: admissionv1.Update, pod: gateTestPod(ns, "web-0", "", nil, "data-web-0")},
		{name: "gate off: unchanged", off: true, pod: gateTestPod(ns, "web-0", "", nil, "data-web-0")},
		{name: "claim cache error: allowed unchanged", err: errors.New("boom"), pod: gateTestPod(ns, "web-0", "", nil, "data-web-0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(o *Options) {
				o.SchedulingGate = !tt.off
				o.Claims = mapClaims{claims: claims, err: tt.err}
			})
			prebound(f)
			op := tt.op
			if op == "" {
				op = admissionv1.Create
			}
			req := podRequest(t, op, tt.pod)
			if tt.dryRun {
				req.DryRun = ptr.To(true)
			}
			resp := f.admit(t, PathPods, req)
			require.True(t, resp.Allowed)
			assert.Equal(t, tt.gated, testutil.ToFloat64(f.srv.metrics.podsGated))
			if tt.gates == nil {
				assert.Empty(t, resp.Patch)
				return
			}
			require.NotEmpty(t, resp.Patch)
			var got corev1.Pod
			require.NoError(t, json.Unmarshal(applyPatch(t, req.Object.Raw, resp.Patch), &got))
			var names []string
			for _, g := range got.Spec.SchedulingGates {
				names = append(names, g.Name)
			}
			assert.Equal(t, tt.gates, names)
			assert.Equal(t, tt.pod.Spec.Volumes, got.Spec.Volumes, "only the gate changes")
		})
	}
}
