package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// admitStatefulSet: on CREATE pin the Datera-bound templates (patch) and pre-create PVs for
// every ordinal; on UPDATE (e.g. kubectl patch of replicas) pre-create PVs for the ordinals
// the update adds. Templates are immutable after CREATE, so UPDATE never patches.
func (s *Server) admitStatefulSet(r *http.Request, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return allowed()
	}
	var sts appsv1.StatefulSet
	if err := json.Unmarshal(req.Object.Raw, &sts); err != nil {
		return denied(http.StatusBadRequest, "petfabric: decode StatefulSet: "+err.Error())
	}
	if sts.Namespace == "" {
		sts.Namespace = req.Namespace
	}
	fresh := []ordinals{ordinalsOf(&sts)}
	if req.Operation == admissionv1.Update {
		var old appsv1.StatefulSet
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return denied(http.StatusBadRequest, "petfabric: decode old StatefulSet: "+err.Error())
		}
		// Templates are immutable after CREATE: an UPDATE matters only when it adds ordinals,
		// and one that adds none (an image rollout, a scale-down) is never refused.
		if fresh = ordinalsOf(&sts).minus(ordinalsOf(&old)); count(fresh) == 0 {
			return allowed()
		}
	}
	plan, resp := s.plan(&sts, req.Operation == admissionv1.Update)
	if resp != nil || len(plan.Templates) == 0 {
		return orAllowed(resp)
	}
	var patch []byte
	if req.Operation == admissionv1.Create {
		var err error
		if patch, err = plan.Patch(req.Object.Raw, &sts); err != nil {
			return errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
		}
	}
	out := patched(patch)
	if isDryRun(req) || count(fresh) == 0 {
		return out
	}
	return s.ensureOrdinals(r, plan, fresh, out)
}

// admitScale: `kubectl scale` changes replicas through the scale subresource, whose object is
// an autoscaling/v1 Scale; the templates come from the StatefulSet itself.
func (s *Server) admitScale(r *http.Request, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Update || req.SubResource != "scale" {
		return allowed()
	}
	var scale, oldScale autoscalingv1.Scale
	if err := json.Unmarshal(req.Object.Raw, &scale); err != nil {
		return denied(http.StatusBadRequest, "petfabric: decode Scale: "+err.Error())
	}
	if err := json.Unmarshal(req.OldObject.Raw, &oldScale); err != nil {
		return denied(http.StatusBadRequest, "petfabric: decode old Scale: "+err.Error())
	}
	if scale.Spec.Replicas <= oldScale.Spec.Replicas {
		return allowed()
	}
	sts, err := s.lookup.StatefulSet(r.Context(), req.Namespace, req.Name)
	if isNotFound(err) {
		return allowed() // nothing to scale; the apiserver will say so
	}
	if err != nil {
		return errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
	}
	// Evaluate the StatefulSet as it will be after the scale.
	old := sts.DeepCopy()
	old.Spec.Replicas = &oldScale.Spec.Replicas
	next := sts.DeepCopy()
	next.Spec.Replicas = &scale.Spec.Replicas
	fresh := ordinalsOf(next).minus(ordinalsOf(old))
	if count(fresh) == 0 {
		return allowed()
	}
	plan, resp := s.plan(next, true)
	if resp != nil || len(plan.Templates) == 0 {
		return orAllowed(resp)
	}
	if isDryRun(req) {
		return allowed()
	}
	return s.ensureOrdinals(r, plan, fresh, allowed())
}

// admitClaim guarantees, for every Datera-bound claim, that its PV exists before the claim is
// stored: one PV, O(1) work, whatever the size of its StatefulSet.
func (s *Server) admitClaim(r *http.Request, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create {
		return allowed()
	}
	var pvc corev1.PersistentVolumeClaim
	if err := json.Unmarshal(req.Object.Raw, &pvc); err != nil {
		return denied(http.StatusBadRequest, "petfabric: decode PersistentVolumeClaim: "+err.Error())
	}
	if pvc.Namespace == "" {
		pvc.Namespace = req.Namespace
	}
	if pvc.Name == "" {
		return allowed() // generateName claims are not StatefulSet claims; nothing to pre-bind to
	}
	classes, err := s.lookup.DateraClasses()
	if err != nil {
		return errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
	}
	cv, ok, err := mutate.PlanClaim(s.cfg, &pvc, classes)
	if !ok {
		return allowed()
	}
	if err != nil {
		return denied(http.StatusUnprocessableEntity, "petfabric: "+err.Error())
	}
	pv, err := cv.PersistentVolume(s.cfg)
	if err != nil {
		return denied(http.StatusUnprocessableEntity, "petfabric: "+err.Error())
	}
	if isDryRun(req) {
		return allowed()
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.budget(r))
	defer cancel()
	if err := s.ensurePV(ctx, pv, cv, true); err != nil {
		return s.failure(err)
	}
	return allowed()
}

// plan runs the pure decision with the cluster's classes and namespace labels.
func (s *Server) plan(sts *appsv1.StatefulSet, pinnedOnly bool) (mutate.Plan, *admissionv1.AdmissionResponse) {
	classes, err := s.lookup.DateraClasses()
	if err != nil {
		return mutate.Plan{}, errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
	}
	nsLabels, err := s.lookup.NamespaceLabels(sts.Namespace)
	if err != nil {
		return mutate.Plan{}, errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
	}
	plan, err := mutate.Decide(s.cfg, mutate.Input{StatefulSet: sts, NamespaceLabels: nsLabels, Classes: classes, PinnedOnly: pinnedOnly})
	if err != nil {
		return plan, denied(http.StatusUnprocessableEntity, "petfabric: "+err.Error())
	}
	return plan, nil
}

// ConflictError: the PV name the claim maps to is taken by a PV for another claim.
type ConflictError struct {
	PV, Claim, Holder string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("persistentvolume %s for claim %s already exists and belongs to claim %s; delete or rename it (petfabric never reuses a PV across claims)", e.PV, e.Claim, e.Holder)
}

// ensurePV creates the PV; AlreadyExists for the same claim is success (a retry, the other
// hook, or the reconcile loop got there first). With rebind — the claim itself is being
// created — a Released Retain PV of this claim is released for it: the same claim name always
// maps to the same volume, so a re-created StatefulSet finds its data again.
func (s *Server) ensurePV(ctx context.Context, pv *corev1.PersistentVolume, cv mutate.ClaimVolume, rebind bool) error {
	err := s.pvs.Create(ctx, pv)
	if err == nil {
		s.metrics.pvCreated.Inc()
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create persistentvolume %s for claim %s/%s: %w", pv.Name, cv.Namespace, cv.Claim, err)
	}
	existing, err := s.pvs.Get(ctx, pv.Name)
	if err != nil {
		return fmt.Errorf("read existing persistentvolume %s: %w", pv.Name, err)
	}
	if !mutate.SameClaim(existing, cv.Namespace, cv.Claim) {
		holder := "(none: it is not pre-bound)"
		if ref := existing.Spec.ClaimRef; ref != nil {
			holder = ref.Namespace + "/" + ref.Name
		}
		return &ConflictError{PV: pv.Name, Claim: cv.Namespace + "/" + cv.Claim, Holder: holder}
	}
	if rebind && releasedForReuse(existing) {
		// Drop the old claim's UID; the PV controller then binds the PV to the new claim of
		// the same name. The update carries the resourceVersion we read: if anything changed
		// it since (the reconcile loop, an admin), it fails and nothing is lost.
		existing.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: cv.Namespace, Name: cv.Claim}
		if err := s.pvs.Update(ctx, existing); err != nil {
			return fmt.Errorf("release persistentvolume %s for re-created claim %s/%s: %w", existing.Name, cv.Namespace, cv.Claim, err)
		}
		s.log.Info("released Retain PV for its re-created claim", "pv", existing.Name, "claim", cv.Namespace+"/"+cv.Claim)
	}
	return nil
}

// releasedForReuse: a petfabric PV with reclaim policy Retain whose claim was deleted. (A
// Delete-policy PV is the reconcile loop's to delete, together with its Datera volume.)
func releasedForReuse(pv *corev1.PersistentVolume) bool {
	return pv.Labels[mutate.LabelManagedBy] == mutate.ManagedByValue &&
		pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRetain &&
		pv.Status.Phase == corev1.VolumeReleased &&
		pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.UID != ""
}

// ensureOrdinals creates the PVs of the given ordinals in parallel within the admission
// budget, at most maxCreates per call. A conflict denies the request; what is not reached in
// time (or beyond the cap) is left to the PVC hook (which runs before each claim is stored)
// and the reconcile loop, with a warning.
func (s *Server) ensureOrdinals(r *http.Request, plan mutate.Plan, fresh []ordinals, resp *admissionv1.AdmissionResponse) *admissionv1.AdmissionResponse {
	ctx, cancel := context.WithTimeout(r.Context(), s.budget(r))
	defer cancel()
	var (
		done, deferred atomic.Int64
		mu             sync.Mutex
		firstErr       error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel() // stop early: the request is denied anyway
	}
	g := new(errgroup.Group)
	g.SetLimit(s.concurrency)
	total := count(fresh) * int64(len(plan.Templates))
	launched := int64(0)
launch:
	for _, rng := range fresh {
		for n := rng.lo; n < rng.hi; n++ {
			for _, tp := range plan.Templates {
				if launched == s.maxCreates || ctx.Err() != nil {
					break launch
				}
				launched++
				cv := plan.Ordinal(tp, int(n))
				g.Go(func() error {
					// errgroup does not carry panics back, and a panic here would end the
					// process: turn it into this request's error.
					defer func() {
						if p := recover(); p != nil {
							s.log.Error("PV creation panicked", "claim", cv.Namespace+"/"+cv.Claim, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
							fail(fmt.Errorf("internal error in petfabric webhook: %v", p))
						}
					}()
					if ctx.Err() != nil {
						deferred.Add(1)
						return nil
					}
					pv, err := cv.PersistentVolume(s.cfg)
					if err == nil {
						err = s.ensurePV(ctx, pv, cv, false)
					}
					switch {
					case err == nil:
						done.Add(1)
					case ctx.Err() != nil && !isConflict(err):
						deferred.Add(1)
					default:
						fail(err)
					}
					return nil
				})
			}
		}
	}
	_ = g.Wait()
	if firstErr != nil {
		return s.failure(firstErr)
	}
	if d := deferred.Load() + total - launched; d > 0 {
		s.metrics.pvPending.Add(float64(d))
		resp.Warnings = append(resp.Warnings, fmt.Sprintf(
			"petfabric: pre-created %d of %d PersistentVolumes within the admission call; the rest are created before each claim (PVC hook) and by the reconcile loop",
			done.Load(), total))
		s.log.Info("PV creation deferred past the admission call", "statefulset", plan.Namespace+"/"+plan.StatefulSet, "created", done.Load(), "deferred", d)
	}
	return resp
}

// failure maps an error to a denial: conflicts are the user's to fix (409); anything else is
// ours or the apiserver's (500) and failurePolicy decides.
func (s *Server) failure(err error) *admissionv1.AdmissionResponse {
	if isConflict(err) {
		return denied(http.StatusConflict, "petfabric: "+err.Error())
	}
	s.log.Error("admission failed", "err", err)
	return errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
}

func isConflict(err error) bool {
	var c *ConflictError
	return errors.As(err, &c)
}

// budget is the time PV creation may take: the configured budget, cut to the apiserver's
// own timeout (the ?timeout= it appends) minus a margin for the response to get back.
func (s *Server) budget(r *http.Request) time.Duration {
	b := s.createBudget
	if t, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil && t > 0 {
		margin := max(t/5, 500*time.Millisecond)
		b = min(b, t-margin)
	}
	return max(b, 100*time.Millisecond)
}

// ordinals is the half-open range [lo, hi) of a StatefulSet's ordinals. Ranges, never
// slices: replicas is whatever int32 the user sent (mutating admission runs before validation).
type ordinals struct{ lo, hi int64 }

func ordinalsOf(sts *appsv1.StatefulSet) ordinals {
	replicas := int64(1)
	if sts.Spec.Replicas != nil {
		replicas = max(int64(*sts.Spec.Replicas), 0)
	}
	start := int64(0)
	if sts.Spec.Ordinals != nil {
		start = int64(sts.Spec.Ordinals.Start)
	}
	return ordinals{start, start + replicas}
}

// minus is o without old: at most two ranges.
func (o ordinals) minus(old ordinals) []ordinals {
	if old.hi <= o.lo || old.lo >= o.hi || old.lo >= old.hi {
		return []ordinals{o}
	}
	var out []ordinals
	if o.lo < old.lo {
		out = append(out, ordinals{o.lo, old.lo})
	}
	if old.hi < o.hi {
		out = append(out, ordinals{old.hi, o.hi})
	}
	return out
}

func count(rs []ordinals) int64 {
	var n int64
	for _, r := range rs {
		n += max(r.hi-r.lo, 0)
	}
	return n
}

func isDryRun(req *admissionv1.AdmissionRequest) bool { return req.DryRun != nil && *req.DryRun }

func orAllowed(resp *admissionv1.AdmissionResponse) *admissionv1.AdmissionResponse {
	if resp == nil {
		return allowed()
	}
	return resp
}
