package mutate

import (
	"encoding/json"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// SchedulingGate is the scheduling gate the webhook puts on a pet whose Datera claims are not
// Bound yet, and the reconcile loop removes once they all are. While a pod carries a gate the
// scheduler does not try it at all: no Filter/PreBind runs against a claim the PV controller
// is binding at that very moment (the write race that otherwise fails Reserve/PreBind and
// costs a FailedScheduling event and a retry a second later), and no "unbound immediate
// PersistentVolumeClaims" rejection in the Immediate binding mode.
const SchedulingGate = "petfabric.io/claims-bound"

// ClaimState is what the gate decision knows of one claim a pod mounts.
type ClaimState uint8

const (
	// ClaimOther is a claim that is not petfabric's (no petfabric annotations, no petfabric
	// PV names it): never a reason to gate.
	ClaimOther ClaimState = iota
	// ClaimUnbound is a petfabric Datera claim that is not Bound yet (or not stored yet).
	ClaimUnbound
	// ClaimBound is a petfabric Datera claim the PV controller has bound.
	ClaimBound
)

// DateraClaimState classifies a claim from what the caches hold: pvc is the claim (nil when it
// is not in the cache yet) and pvs the PVs whose claimRef names it. A claim is petfabric's when
// it carries the annotations the pinned StatefulSet templates give their claims, or when a
// petfabric-managed PV is pre-bound to its name; the latter also covers a claim the cache has
// not seen yet: the StatefulSet controller creates a pet's claims before the pet, and the
// webhook pre-creates their PVs before either, so a pet whose claim is missing from the cache
// but whose PV exists is a pet whose claim is about to bind. Bound means the PV controller
// finished: status.phase Bound and spec.volumeName set (what the scheduler reads as bound).
func DateraClaimState(pvc *corev1.PersistentVolumeClaim, pvs []*corev1.PersistentVolume) ClaimState {
	ours := false
	if pvc != nil && pvc.Annotations[AnnStatefulSet] != "" && pvc.Annotations[AnnClaimTemplate] != "" {
		ours = true
	}
	for _, pv := range pvs {
		if pv != nil && pv.Labels[LabelManagedBy] == ManagedByValue {
			ours = true
		}
	}
	switch {
	case !ours:
		return ClaimOther
	case pvc != nil && pvc.Status.Phase == corev1.ClaimBound && pvc.Spec.VolumeName != "":
		return ClaimBound
	default:
		return ClaimUnbound
	}
}

// PodClaimNames lists the distinct claim names of the pod's persistentVolumeClaim volumes, in
// volume order.
func PodClaimNames(pod *corev1.Pod) []string {
	var out []string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName == "" {
			continue
		}
		if name := v.PersistentVolumeClaim.ClaimName; !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// UnboundDateraClaims lists the pod's claims that state reports ClaimUnbound, in volume order.
func UnboundDateraClaims(pod *corev1.Pod, state func(claim string) ClaimState) []string {
	var out []string
	for _, name := range PodClaimNames(pod) {
		if state(name) == ClaimUnbound {
			out = append(out, name)
		}
	}
	return out
}

// GateIndex is the index of SchedulingGate in the pod's scheduling gates, or -1.
func GateIndex(pod *corev1.Pod) int {
	return slices.IndexFunc(pod.Spec.SchedulingGates, func(g corev1.PodSchedulingGate) bool { return g.Name == SchedulingGate })
}

// NeedsGate is the admission decision for a pod at CREATE: gate it when at least one of its
// petfabric claims is unbound, it has no gate of ours yet, and it is not bound to a node
// already (the apiserver refuses scheduling gates on a pod created with spec.nodeName).
func NeedsGate(pod *corev1.Pod, state func(claim string) ClaimState) bool {
	if pod.Spec.NodeName != "" || GateIndex(pod) >= 0 {
		return false
	}
	return len(UnboundDateraClaims(pod, state)) > 0
}

// jsonPatchOp is one RFC 6902 operation.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// AddGatePatch is the JSON patch adding SchedulingGate after the pod's own gates.
func AddGatePatch(pod *corev1.Pod) ([]byte, error) {
	gate := corev1.PodSchedulingGate{Name: SchedulingGate}
	op := jsonPatchOp{Op: "add", Path: "/spec/schedulingGates/-", Value: gate}
	if len(pod.Spec.SchedulingGates) == 0 {
		// The list may be absent (omitempty): add it whole.
		op = jsonPatchOp{Op: "add", Path: "/spec/schedulingGates", Value: []corev1.PodSchedulingGate{gate}}
	}
	b, err := json.Marshal([]jsonPatchOp{op})
	if err != nil {
		return nil, fmt.Errorf("marshal scheduling gate patch: %w", err)
	}
	return b, nil
}

// RemoveGatePatch is the JSON patch removing SchedulingGate, and only it, from the pod as the
// caller saw it: a test operation first checks that the gate is still at that index, so a
// pod whose gates changed in between fails the patch (422) instead of losing another gate.
// ok is false when the pod has no gate of ours.
func RemoveGatePatch(pod *corev1.Pod) (patch []byte, ok bool, err error) {
	i := GateIndex(pod)
	if i < 0 {
		return nil, false, nil
	}
	path := fmt.Sprintf("/spec/schedulingGates/%d", i)
	b, err := json.Marshal([]jsonPatchOp{
		{Op: "test", Path: path + "/name", Value: SchedulingGate},
		{Op: "remove", Path: path},
	})
	if err != nil {
		return nil, false, fmt.Errorf("marshal scheduling gate removal: %w", err)
	}
	return b, true, nil
}
