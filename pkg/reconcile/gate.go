package reconcile

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// DefaultGateEventAfter is how long a pod may wait behind the petfabric scheduling gate before
// the loop records an Event saying which claims it waits for. The PV controller binds a
// pre-bound claim within a second or two of seeing it, so a pet still gated after this long
// has a claim that is not going to bind by itself (a class or size mismatch, a missing PV).
const DefaultGateEventAfter = 30 * time.Second

// Event reason on a pod that still waits for its claims behind the scheduling gate.
const EventWaitingForClaims = "WaitingForClaimsBound"

// onPodGate queues a gate check of a pod that carries the petfabric gate.
func (c *controller) onPodGate(pod *corev1.Pod) {
	if !c.opts.SchedulingGate {
		return
	}
	if pod.DeletionTimestamp != nil || mutate.GateIndex(pod) < 0 {
		c.clearWarning(gateWarnKey(pod.Namespace, pod.Name))
		return
	}
	c.queue.Add(item{kindGate, pod.Namespace + "/" + pod.Name})
}

// onClaimUpdate: a claim that turned Bound may be the last one a gated pod waits for.
func (c *controller) onClaimUpdate(obj any) {
	if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok {
		c.enqueueGatedPods(pvc)
	}
}

// enqueueGatedPods queues a gate check of every gated pod that mounts the claim, once it is Bound.
func (c *controller) enqueueGatedPods(pvc *corev1.PersistentVolumeClaim) {
	if !c.opts.SchedulingGate || c.podIndexer == nil || pvc.Status.Phase != corev1.ClaimBound {
		return
	}
	objs, _ := c.podIndexer.ByIndex(byClaim, mutate.ClaimKey(pvc.Namespace, pvc.Name))
	for _, o := range objs {
		if pod, ok := o.(*corev1.Pod); ok && mutate.GateIndex(pod) >= 0 {
			c.queue.Add(item{kindGate, pod.Namespace + "/" + pod.Name})
		}
	}
}

// claimState classifies a claim from the loop's caches, as the webhook's pod hook does.
func (c *controller) claimState(namespace, claim string) mutate.ClaimState {
	pvc, err := c.pvcLister.PersistentVolumeClaims(namespace).Get(claim)
	if err != nil {
		pvc = nil
	}
	var pvs []*corev1.PersistentVolume
	objs, _ := c.pvIndexer.ByIndex(mutate.PVClaimIndex, mutate.ClaimKey(namespace, claim))
	for _, o := range objs {
		if pv, ok := o.(*corev1.PersistentVolume); ok {
			pvs = append(pvs, pv)
		}
	}
	return mutate.DateraClaimState(pvc, pvs)
}

// syncGate removes the petfabric scheduling gate of a pod whose petfabric claims are all
// Bound, with a JSON patch that tests the gate is still where the cache saw it and removes
// only it. While a claim is unbound the pod keeps its gate, and after GateEventAfter one
// Event names the claims (again only if that list changes).
func (c *controller) syncGate(ctx context.Context, key string) (time.Duration, error) {
	obj, exists, err := c.podIndexer.GetByKey(key)
	if err != nil {
		return 0, err
	}
	if !exists {
		ns, name, _ := strings.Cut(key, "/")
		c.clearWarning(gateWarnKey(ns, name))
		return 0, nil
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.DeletionTimestamp != nil {
		return 0, nil
	}
	unbound := mutate.UnboundDateraClaims(pod, func(claim string) mutate.ClaimState { return c.claimState(pod.Namespace, claim) })
	if len(unbound) > 0 {
		waited := c.opts.now().Sub(pod.CreationTimestamp.Time)
		if waited < c.opts.GateEventAfter {
			return c.opts.GateEventAfter - waited, nil
		}
		msg := fmt.Sprintf("held by scheduling gate %s: petfabric claim(s) %s not Bound yet; the gate is removed when they are (see kubectl describe pvc)",
			mutate.SchedulingGate, strings.Join(unbound, ", "))
		if c.warnOnce(gateWarnKey(pod.Namespace, pod.Name), msg) {
			c.r.recorder.Event(pod, corev1.EventTypeWarning, EventWaitingForClaims, msg)
		}
		return 0, nil
	}
	patch, ok, err := mutate.RemoveGatePatch(pod)
	if err != nil || !ok {
		return 0, err
	}
	_, err = c.opts.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: Component})
	switch {
	case apierrors.IsNotFound(err):
		return 0, nil
	case err != nil:
		// 422 from the test op: the pod's gates changed since the cache saw them; the retry
		// reads the pod again.
		c.r.metrics.errors.WithLabelValues(ReasonGate).Inc()
		return 0, fmt.Errorf("remove scheduling gate %s of pod %s: %w", mutate.SchedulingGate, key, err)
	}
	c.r.metrics.gatesRemoved.Inc()
	c.clearWarning(gateWarnKey(pod.Namespace, pod.Name))
	c.log.Debug("scheduling gate removed: every petfabric claim is Bound", "pod", key)
	return 0, nil
}

func gateWarnKey(namespace, pod string) string { return "pod/" + namespace + "/" + pod + "|gate" }
