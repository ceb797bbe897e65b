package mutate

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func gatePod(nodeName string, gates []string, claims ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: nodeName}}
	for _, g := range gates {
		pod.Spec.SchedulingGates = append(pod.Spec.SchedulingGates, corev1.PodSchedulingGate{Name: g})
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	for i, c := range claims {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
			Name: "v" + string(rune('a'+i)), VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}},
		})
	}
	return pod
}

func TestDateraClaimState(t *testing.T) {
	annotated := map[string]string{AnnStatefulSet: "web", AnnClaimTemplate: "data"}
	claim := func(ann map[string]string, phase corev1.PersistentVolumeClaimPhase, volume string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "data-web-0", Namespace: "ns", Annotations: ann},
			Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: volume},
			Status:     corev1.PersistentVolumeClaimStatus{Phase: phase},
		}
	}
	managed := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "datera-ns.data-web-0", Labels: map[string]string{LabelManagedBy: ManagedByValue}}}
	foreign := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "hand-made"}}
	tests := []struct {
		name string
		pvc  *corev1.PersistentVolumeClaim
		pvs  []*corev1.PersistentVolume
		want ClaimState
	}{
		{"not in cache, no PV: not ours", nil, nil, ClaimOther},
		{"not in cache, foreign PV: not ours", nil, []*corev1.PersistentVolume{foreign}, ClaimOther},
		{"not in cache, managed PV pre-bound to its name: ours, unbound", nil, []*corev1.PersistentVolume{managed}, ClaimUnbound},
		{"annotated, Pending", claim(annotated, corev1.ClaimPending, ""), nil, ClaimUnbound},
		{"annotated, volumeName set but not Bound yet", claim(annotated, corev1.ClaimPending, "datera-ns.data-web-0"), nil, ClaimUnbound},
		{"annotated, Bound", claim(annotated, corev1.ClaimBound, "datera-ns.data-web-0"), nil, ClaimBound},
		{"plain claim with managed PV, Bound", claim(nil, corev1.ClaimBound, "datera-ns.data-web-0"), []*corev1.PersistentVolume{managed}, ClaimBound},
		{"plain claim, foreign PV, Pending: not ours", claim(nil, corev1.ClaimPending, ""), []*corev1.PersistentVolume{foreign}, ClaimOther},
		{"only one of the two annotations: not ours", claim(map[string]string{AnnStatefulSet: "web"}, corev1.ClaimPending, ""), nil, ClaimOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, DateraClaimState(tt.pvc, tt.pvs))
		})
	}
}

func TestNeedsGate(t *testing.T) {
	states := map[string]ClaimState{"bound": ClaimBound, "unbound": ClaimUnbound, "other": ClaimOther}
	state := func(c string) ClaimState { return states[c] }
	tests := []struct {
		name    string
		pod     *corev1.Pod
		want    bool
		unbound []string
	}{
		{"no claims", gatePod("", nil), false, nil},
		{"all bound: no gate, no latency", gatePod("", nil, "bound", "other"), false, nil},
		{"one unbound", gatePod("", nil, "bound", "unbound"), true, []string{"unbound"}},
		{"same claim twice counts once", gatePod("", nil, "unbound", "unbound"), true, []string{"unbound"}},
		{"another gate only: ours added", gatePod("", []string{"example.com/quota"}, "unbound"), true, []string{"unbound"}},
		{"already gated: never twice", gatePod("", []string{SchedulingGate}, "unbound"), false, []string{"unbound"}},
		{"created bound to a node: gates are refused there", gatePod("node-1", nil, "unbound"), false, []string{"unbound"}},
		{"foreign claims only", gatePod("", nil, "other"), false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, NeedsGate(tt.pod, state))
			assert.Equal(t, tt.unbound, UnboundDateraClaims(tt.pod, state))
		})
	}
}

func applyPodPatch(t *testing.T, pod *corev1.Pod, patch []byte) (*corev1.Pod, error) {
	t.Helper()
	raw, err := json.Marshal(pod)
	require.NoError(t, err)
	p, err := jsonpatch.DecodePatch(patch)
	require.NoError(t, err)
	out, err := p.Apply(raw)
	if err != nil {
		return nil, err
	}
	var got corev1.Pod
	require.NoError(t, json.Unmarshal(out, &got))
	return &got, nil
}

func gateNames(pod *corev1.Pod) []string {
	var out []string
	for _, g := range pod.Spec.SchedulingGates {
		out = append(out, g.Name)
	}
	return out
}

func TestAddGatePatch(t *testing.T) {
	for _, tt := range []struct {
		name  string
		gates []string
		want  []string
	}{
		{"no gates", nil, []string{SchedulingGate}},
		{"after the pod's own gates", []string{"a.io/x", "b.io/y"}, []string{"a.io/x", "b.io/y", SchedulingGate}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := gatePod("", tt.gates, "c")
			patch, err := AddGatePatch(pod)
			require.NoError(t, err)
			got, err := applyPodPatch(t, pod, patch)
			require.NoError(t, err)
			assert.Equal(t, tt.want, gateNames(got))
			assert.Equal(t, pod.Spec.Volumes, got.Spec.Volumes, "nothing else changes")
		})
	}
}

func TestRemoveGatePatch(t *testing.T) {
	for _, tt := range []struct {
		name   string
		gates  []string
		ok     bool
		remain []string
	}{
		{"only ours", []string{SchedulingGate}, true, nil},
		{"ours among others: only ours goes", []string{"a.io/x", SchedulingGate, "b.io/y"}, true, []string{"a.io/x", "b.io/y"}},
		{"none of ours", []string{"a.io/x"}, false, nil},
		{"no gates", nil, false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := gatePod("", tt.gates, "c")
			patch, ok, err := RemoveGatePatch(pod)
			require.NoError(t, err)
			require.Equal(t, tt.ok, ok)
			if !ok {
				assert.Nil(t, patch)
				return
			}
			got, err := applyPodPatch(t, pod, patch)
			require.NoError(t, err)
			assert.Equal(t, tt.remain, gateNames(got))
		})
	}

	t.Run("gates changed since the pod was read: the test op fails the patch", func(t *testing.T) {
		seen := gatePod("", []string{"a.io/x", SchedulingGate}, "c")
		patch, ok, err := RemoveGatePatch(seen)
		require.NoError(t, err)
		require.True(t, ok)
		now := gatePod("", []string{SchedulingGate, "b.io/y"}, "c") // a.io/x removed meanwhile
		_, err = applyPodPatch(t, now, patch)
		require.Error(t, err, "must not remove b.io/y")
	})
}
