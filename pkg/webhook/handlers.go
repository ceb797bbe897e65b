package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
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
// the update adds. Templates are immutable after CREATE, so UPDATE never patches. Before any
// PV is created the object is checked as the apiserver will check it (mutate.ValidateStatefulSet)
// and against the ordinal ceiling: a request that is denied creates nothing.
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
	fresh := []mutate.OrdinalRange{mutate.OrdinalRangeOf(&sts)}
	var old *appsv1.StatefulSet
	if req.Operation == admissionv1.Update {
		old = &appsv1.StatefulSet{}
		if err := json.Unmarshal(req.OldObject.Raw, old); err != nil {
			return denied(http.StatusBadRequest, "petfabric: decode old StatefulSet: "+err.Error())
		}
		// Templates are immutable after CREATE: an UPDATE matters only when it adds ordinals,
		// and one that adds none (an image rollout, a scale-down) is never refused.
		if fresh = mutate.OrdinalRangeOf(&sts).Minus(mutate.OrdinalRangeOf(old)); count(fresh) == 0 {
			return allowed()
		}
	}
	plan, resp := s.plan(r.Context(), &sts, req.Operation == admissionv1.Update)
	if resp != nil || len(plan.Templates) == 0 {
		return orAllowed(resp)
	}
	if err := mutate.ValidateStatefulSet(&sts, old); err != nil {
		return denied(http.StatusUnprocessableEntity, "petfabric: "+err.Error())
	}
	if err := mutate.CheckOrdinals(s.cfg, &sts); err != nil {
		return denied(http.StatusUnprocessableEntity, "petfabric: "+err.Error())
	}
	var patch []byte
	if req.Operation == admissionv1.Create {
		var err error
		if patch, err = plan.Patch(req.Object.Raw, &sts); err != nil {
			return errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
		}
		if other, kept := plan.OtherScheduler(&sts.Spec.Template); kept {
			s.logger(r.Context()).Info("pod template names another scheduler: left as is, its pods are placed without the extender",
				"statefulset", plan.Namespace+"/"+plan.StatefulSet, "schedulerName", other, "wanted", plan.SchedulerName)
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
	fresh := mutate.OrdinalRangeOf(next).Minus(mutate.OrdinalRangeOf(old))
	if count(fresh) == 0 {
		return allowed()
	}
	plan, resp := s.plan(r.Context(), next, true)
	if resp != nil || len(plan.Templates) == 0 {
		return orAllowed(resp)
	}
	if err := mutate.CheckOrdinals(s.cfg, next); err != nil {
		return denied(http.StatusUnprocessableEntity, "petfabric: "+err.Error())
	}
	if isDryRun(req) {
		return allowed()
	}
	return s.ensureOrdinals(r, plan, fresh, allowed())
}

// admitClaim makes sure, for a claim of a Datera-bound StatefulSet template, that its PV
// exists before the claim is stored: one PV, O(1) work, whatever the size of its StatefulSet.
//
// The review is not trusted: whoever reaches the webhook can post one. The hook acts only for
// a claim whose StatefulSet exists (read live), has a Datera-bound template of that name and
// has that ordinal below the ceiling, and the PV is built from that live StatefulSet — the very
// PV the StatefulSet hook and the reconcile loop make for that ordinal — never from the
// claim's own annotations. A forged review can therefore cause nothing the cluster's own state
// does not already ask for. It never changes an existing PV: handing a Released PV to a new
// claim is the reconcile loop's decision, made against the live claim and the owner the PV
// records.
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
	if pvc.Name == "" || pvc.Spec.VolumeName != "" {
		return allowed() // generateName claims are no StatefulSet's; a bound claim chose its PV
	}
	stsName, tplName := pvc.Annotations[mutate.AnnStatefulSet], pvc.Annotations[mutate.AnnClaimTemplate]
	n, fromTemplate := mutate.ParseOrdinal(pvc.Name, tplName, stsName)
	if stsName == "" || tplName == "" || !fromTemplate {
		return s.notServed(&pvc, "it was not made from a StatefulSet claim template petfabric pinned")
	}
	sts, err := s.lookup.StatefulSet(r.Context(), pvc.Namespace, stsName)
	if isNotFound(err) {
		return s.notServed(&pvc, fmt.Sprintf("its StatefulSet %s/%s does not exist", pvc.Namespace, stsName))
	}
	if err != nil {
		return errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
	}
	plan, resp := s.plan(r.Context(), sts, true)
	if resp != nil {
		return resp
	}
	i := slices.IndexFunc(plan.Templates, func(tp mutate.TemplatePlan) bool { return tp.Name == tplName })
	if i < 0 {
		return allowed() // not a Datera-bound template of the live StatefulSet: not ours
	}
	if !mutate.OrdinalRangeOf(sts).Contains(int64(n)) {
		// The cache may lag a scale-up whose claims the StatefulSet controller is creating
		// now: ask the API before refusing.
		if sts, err = s.lookup.StatefulSetLive(r.Context(), pvc.Namespace, stsName); err != nil && !isNotFound(err) {
			return errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
		}
		if sts == nil || !mutate.OrdinalRangeOf(sts).Contains(int64(n)) {
			return s.notServed(&pvc, fmt.Sprintf("StatefulSet %s/%s has no ordinal %d", pvc.Namespace, stsName, n))
		}
	}
	if n >= s.cfg.OrdinalCeiling() {
		return s.notServed(&pvc, fmt.Sprintf("ordinal %d is at or above the ceiling of %d Datera-backed ordinals per StatefulSet", n, s.cfg.OrdinalCeiling()))
	}
	cv := plan.Ordinal(plan.Templates[i], n)
	pv, err := cv.PersistentVolume(s.cfg)
	if err != nil {
		return denied(http.StatusUnprocessableEntity, "petfabric: "+err.Error())
	}
	if isDryRun(req) {
		return allowed()
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.budget(r))
	defer cancel()
	mismatches, err := s.ensurePV(ctx, pv, cv)
	if err != nil {
		return s.failure(r.Context(), err)
	}
	out := allowed()
	if len(mismatches) > 0 {
		out.Warnings = append(out.Warnings, mismatchWarning(cv, mismatches))
	}
	return out
}

// notServed allows a claim the hook makes no PV for, warning when it names a Datera class (it
// will stay Pending unless someone else provides its PV).
func (s *Server) notServed(pvc *corev1.PersistentVolumeClaim, why string) *admissionv1.AdmissionResponse {
	class := mutate.ClaimClass(pvc)
	classes, err := s.lookup.DateraClasses()
	if err != nil {
		return errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
	}
	out := allowed()
	if _, ok := classes[class]; ok {
		out.Warnings = []string{fmt.Sprintf("petfabric: no PersistentVolume made for claim %s/%s of Datera class %s: %s; petfabric provides volumes for the claims of StatefulSet templates only",
			pvc.Namespace, pvc.Name, class, why)}
	}
	return out
}

// plan runs the pure decision with the cluster's classes and the namespace's labels and UID.
func (s *Server) plan(ctx context.Context, sts *appsv1.StatefulSet, pinnedOnly bool) (mutate.Plan, *admissionv1.AdmissionResponse) {
	classes, err := s.lookup.DateraClasses()
	if err != nil {
		return mutate.Plan{}, errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
	}
	ns, err := s.lookup.Namespace(ctx, sts.Namespace)
	if err != nil && !isNotFound(err) {
		return mutate.Plan{}, errored(http.StatusInternalServerError, fmt.Errorf("petfabric: %w", err))
	}
	in := mutate.Input{StatefulSet: sts, Classes: classes, PinnedOnly: pinnedOnly}
	if ns != nil {
		in.NamespaceLabels, in.NamespaceUID = ns.Labels, string(ns.UID)
	}
	plan, err := mutate.Decide(s.cfg, in)
	if err != nil {
		return plan, denied(http.StatusUnprocessableEntity, "petfabric: "+err.Error())
	}
	if len(plan.Templates) > 0 && ns == nil {
		// The apiserver stores nothing in a namespace that does not exist; without its UID
		// no PV could record its owner.
		return plan, errored(http.StatusInternalServerError, fmt.Errorf("petfabric: namespace %s: %w", sts.Namespace, errNotFound))
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

// ensurePV makes sure the claim has its PV. A PV whose claimRef already names the claim is
// its PV whatever its name (contract version 1 PVs keep datera-<ns>-<claim>), so an upgrade
// never makes a second one; otherwise pv is created, and AlreadyExists for the same claim is
// success (a retry, the other hook, or the reconcile loop got there first). An existing PV is
// checked against what the claim needs (mutate.CheckPV): the mismatches are returned, counted
// and recorded as Events on the PV, and never silently accepted; the PV itself is not touched
// (repair is the reconcile loop's).
func (s *Server) ensurePV(ctx context.Context, pv *corev1.PersistentVolume, cv mutate.ClaimVolume) ([]mutate.Mismatch, error) {
	existing, err := s.lookup.PVsForClaim(cv.Namespace, cv.Claim)
	if err != nil {
		return nil, err
	}
	if len(existing) == 0 {
		err := s.pvs.Create(ctx, pv)
		if err == nil {
			s.metrics.pvCreated.Inc()
			return nil, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create persistentvolume %s for claim %s/%s: %w", pv.Name, cv.Namespace, cv.Claim, err)
		}
		got, err := s.pvs.Get(ctx, pv.Name)
		if err != nil {
			return nil, fmt.Errorf("read existing persistentvolume %s: %w", pv.Name, err)
		}
		if !mutate.SameClaim(got, cv.Namespace, cv.Claim) {
			holder := "(none: it is not pre-bound)"
			if ref := got.Spec.ClaimRef; ref != nil {
				holder = ref.Namespace + "/" + ref.Name
			}
			return nil, &ConflictError{PV: pv.Name, Claim: cv.Namespace + "/" + cv.Claim, Holder: holder}
		}
		existing = []*corev1.PersistentVolume{got}
	}
	var out []mutate.Mismatch
	for _, have := range existing {
		ms := mutate.CheckPV(s.cfg, cv, have)
		for _, m := range ms {
			s.metrics.pvMismatch.WithLabelValues(m.Reason).Inc()
			s.recorder.Event(have, corev1.EventTypeWarning, EventPVMismatch, fmt.Sprintf("does not fit claim %s/%s: %s", cv.Namespace, cv.Claim, m))
		}
		if len(ms) > 0 {
			s.logger(ctx).Warn("existing PV does not fit its claim", "pv", have.Name, "claim", cv.Namespace+"/"+cv.Claim, "mismatches", fmt.Sprint(ms))
		}
		out = append(out, ms...)
	}
	return out, nil
}

// EventPVMismatch is the reason of the Warning Event on a PV that does not fit its claim.
const EventPVMismatch = mutate.EventPVMismatch

// mismatchWarning is the admission warning for a claim whose existing PV does not fit it.
func mismatchWarning(cv mutate.ClaimVolume, ms []mutate.Mismatch) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return fmt.Sprintf("petfabric: the existing PersistentVolume of claim %s/%s does not fit it (%s); it is left as it is and reported — an admin or the reconcile loop must repair or replace it",
		cv.Namespace, cv.Claim, strings.Join(parts, "; "))
}

// ensureOrdinals creates the PVs of the given ordinals in parallel within the admission
// budget, at most maxCreates per call. A conflict denies the request; what is not reached in
// time (or beyond the cap) is left to the PVC hook (which runs before each claim is stored)
// and the reconcile loop, with a warning.
func (s *Server) ensureOrdinals(r *http.Request, plan mutate.Plan, fresh []mutate.OrdinalRange, resp *admissionv1.AdmissionResponse) *admissionv1.AdmissionResponse {
	ctx, cancel := context.WithTimeout(r.Context(), s.budget(r))
	defer cancel()
	var (
		done, deferred atomic.Int64
		mu             sync.Mutex
		firstErr       error
		misfits        []string // admission warnings, one per PV that does not fit its claim
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
		for n := rng.Start; n < rng.End; n++ {
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
							s.logger(ctx).Error("PV creation panicked", "claim", cv.Namespace+"/"+cv.Claim, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
							fail(fmt.Errorf("internal error in petfabric webhook: %v", p))
						}
					}()
					if ctx.Err() != nil {
						deferred.Add(1)
						return nil
					}
					pv, err := cv.PersistentVolume(s.cfg)
					if err == nil {
						var ms []mutate.Mismatch
						if ms, err = s.ensurePV(ctx, pv, cv); len(ms) > 0 {
							mu.Lock()
							misfits = append(misfits, mismatchWarning(cv, ms))
							mu.Unlock()
						}
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
		return s.failure(r.Context(), firstErr)
	}
	sort.Strings(misfits)
	if len(misfits) > maxMismatchWarnings {
		more := len(misfits) - maxMismatchWarnings
		misfits = append(misfits[:maxMismatchWarnings], fmt.Sprintf("petfabric: %d more PersistentVolumes do not fit their claims (see the PersistentVolumeMismatch events)", more))
	}
	resp.Warnings = append(resp.Warnings, misfits...)
	if d := deferred.Load() + total - launched; d > 0 {
		s.metrics.pvPending.Add(float64(d))
		resp.Warnings = append(resp.Warnings, fmt.Sprintf(
			"petfabric: pre-created %d of %d PersistentVolumes within the admission call; the rest are created before each claim (PVC hook) and by the reconcile loop",
			done.Load(), total))
		s.logger(r.Context()).Info("PV creation deferred past the admission call", "statefulset", plan.Namespace+"/"+plan.StatefulSet, "created", done.Load(), "deferred", d)
	}
	return resp
}

// maxMismatchWarnings bounds the admission warnings about PVs that do not fit (the apiserver
// passes every one to the client).
const maxMismatchWarnings = 10

// failure maps an error to a denial: conflicts are the user's to fix (409); anything else is
// ours or the apiserver's (500) and failurePolicy decides.
func (s *Server) failure(ctx context.Context, err error) *admissionv1.AdmissionResponse {
	if isConflict(err) {
		return denied(http.StatusConflict, "petfabric: "+err.Error())
	}
	s.logger(ctx).Error("admission failed", "err", err)
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

// count is the number of ordinals in rs.
func count(rs []mutate.OrdinalRange) int64 {
	var n int64
	for _, r := range rs {
		n += r.Len()
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
