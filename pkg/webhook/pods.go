package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// ClaimGetter reads a claim from a cache; a claim the cache does not hold is (nil, nil).
type ClaimGetter interface {
	Claim(namespace, name string) (*corev1.PersistentVolumeClaim, error)
}

// admitPod gates a pet at CREATE while one of its Datera claims is not Bound yet
// (mutate.NeedsGate), so the scheduler first sees it once the PV controller is done with its
// claims; the reconcile loop removes the gate then. Everything it reads comes from the caches:
// the hook adds no API round trip to a pod's creation, and a pod whose claims are all Bound
// (a restarted pet, a pet of a set created long ago) gets no gate and no extra latency.
// Anything unexpected allows the pod unchanged: the gate is an optimisation, never a condition.
func (s *Server) admitPod(r *http.Request, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if !s.gate || req.Operation != admissionv1.Create || req.SubResource != "" {
		return allowed()
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return denied(http.StatusBadRequest, "petfabric: decode Pod: "+err.Error())
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	var lookupErr error
	state := func(claim string) mutate.ClaimState {
		var pvc *corev1.PersistentVolumeClaim
		if s.claims != nil {
			got, err := s.claims.Claim(pod.Namespace, claim)
			if err != nil {
				lookupErr = err
				return mutate.ClaimOther
			}
			pvc = got
		}
		pvs, err := s.lookup.PVsForClaim(pod.Namespace, claim)
		if err != nil {
			lookupErr = err
			return mutate.ClaimOther
		}
		return mutate.DateraClaimState(pvc, pvs)
	}
	need := mutate.NeedsGate(&pod, state)
	if lookupErr != nil {
		s.logger(r.Context()).Warn("pod admitted without the scheduling gate: cache lookup failed", "pod", pod.Namespace+"/"+podName(&pod), "err", lookupErr)
		return allowed()
	}
	if !need {
		return allowed()
	}
	patch, err := mutate.AddGatePatch(&pod)
	if err != nil {
		s.logger(r.Context()).Error("pod admitted without the scheduling gate", "pod", pod.Namespace+"/"+podName(&pod), "err", err)
		return allowed()
	}
	if !isDryRun(req) {
		s.metrics.podsGated.Inc()
	}
	return patched(patch)
}

// podName is the pod's name, or its generateName prefix before the apiserver fills it in.
func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName
}

// claimCache is the informer-backed ClaimGetter.
type claimCache struct {
	lister corelisters.PersistentVolumeClaimLister
}

// Claim reads a claim from the cache; (nil, nil) when it holds none of that name.
func (c claimCache) Claim(namespace, name string) (*corev1.PersistentVolumeClaim, error) {
	pvc, err := c.lister.PersistentVolumeClaims(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get claim %s/%s from cache: %w", namespace, name, err)
	}
	return pvc, nil
}

// WithClaims registers the claim informer with f (the reconcile loop, sharing f, registers
// the same one) and returns the ClaimGetter the pod hook reads; Synced then waits for it too.
func (l *ClusterLookup) WithClaims(f informers.SharedInformerFactory) ClaimGetter {
	inf := f.Core().V1().PersistentVolumeClaims()
	l.synced = append(l.synced, inf.Informer().HasSynced)
	return claimCache{inf.Lister()}
}
