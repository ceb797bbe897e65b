package mutate

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The pod template of a mutated StatefulSet. Two settings, both off by default so that the
// webhook alone changes nothing in the pods of a cluster it is upgraded into:
//
//   - Config.SchedulerName (--scheduler-name): pods are scheduled by the scheduler that calls
//     the extender. The template's schedulerName is set when it names none or the default
//     scheduler; a template that names another scheduler was written that way on purpose and
//     is left alone (the webhook logs it: such pets are placed without the extender's checks).
//   - Config.ManagedResource (--managed-resource): the first container requests and limits 1
//     of an extended resource no node advertises. kube-scheduler's configuration lists it in
//     the extender's managedResources with ignoredByScheduler: true, so the scheduler calls
//     the extender for these pods only and does not count the resource itself; the kubelet
//     drops extended resources its node does not advertise before its own admission check.
//     Until the scheduler is configured, the pets stay Pending with "Insufficient <resource>":
//     fail closed, never placed without the extender. A value the user set (request or limit)
//     is kept.
//
// Both are applied when the StatefulSet is created (Plan.Patch runs on CREATE only). An
// existing StatefulSet updated later is not patched: a change to the pod template starts a
// rolling restart of every pet, and no UPDATE a user sends (a scale, an image change) asked for
// that. Existing StatefulSets keep the template they were created with; recreating one
// (kubectl delete --cascade=orphan, then apply) picks the settings up without restarting its
// pods.

// ManagedResourceQuantity is the amount of the managed resource each pet requests: one, the
// marker; the extender does not count it.
const ManagedResourceQuantity = "1"

// ValidatePodTemplateSettings checks SchedulerName and ManagedResource as the apiserver would
// check them in a pod, naming the flags cmd/webhook sets them from.
func (c Config) ValidatePodTemplateSettings() error {
	if c.SchedulerName != "" {
		if errs := validation.IsDNS1123Subdomain(c.SchedulerName); len(errs) > 0 {
			return fmt.Errorf("--scheduler-name %q: %s", c.SchedulerName, strings.Join(errs, "; "))
		}
	}
	if r := c.ManagedResource; r != "" {
		if errs := validation.IsQualifiedName(r); len(errs) > 0 {
			return fmt.Errorf("--managed-resource %q: %s", r, strings.Join(errs, "; "))
		}
		domain, _, ok := strings.Cut(r, "/")
		if !ok || domain == "kubernetes.io" || strings.HasSuffix(domain, ".kubernetes.io") || strings.HasPrefix(r, corev1.DefaultResourceRequestsPrefix) {
			return fmt.Errorf("--managed-resource %q: want an extended resource name, <domain>/<name> outside kubernetes.io (for example petfabric.io/datera)", r)
		}
	}
	return nil
}

// OtherScheduler returns the scheduler a pod template names when SchedulerName is set and the
// template names a different, non-default one: the template is left alone (the caller logs).
func (p Plan) OtherScheduler(tmpl *corev1.PodTemplateSpec) (string, bool) {
	n := tmpl.Spec.SchedulerName
	if p.SchedulerName == "" || len(p.Templates) == 0 || n == "" || n == corev1.DefaultSchedulerName || n == p.SchedulerName {
		return "", false
	}
	return n, true
}

// podTemplateOps are the operations for the pod template (see above); none when both settings
// are off or already in place.
func (p Plan) podTemplateOps(spec *rawStatefulSetSpec) ([]patchOp, error) {
	if p.SchedulerName == "" && p.ManagedResource == "" {
		return nil, nil
	}
	if spec == nil || spec.Template == nil || spec.Template.Spec == nil {
		return nil, errors.New("statefulset: spec.template.spec is not in the object")
	}
	ps := spec.Template.Spec
	var ops []patchOp
	if p.SchedulerName != "" {
		cur, isString := ps.SchedulerName.(string)
		if ps.SchedulerName == nil || isString && (cur == "" || cur == corev1.DefaultSchedulerName) {
			if cur != p.SchedulerName {
				ops = append(ops, patchOp{"add", "/spec/template/spec/schedulerName", p.SchedulerName})
			}
		}
	}
	if p.ManagedResource != "" {
		if len(ps.Containers) == 0 || ps.Containers[0] == nil {
			return nil, errors.New("statefulset: spec.template.spec.containers[0] is not in the object")
		}
		rops, err := resourceOps("/spec/template/spec/containers/0/resources", ps.Containers[0].Resources, p.ManagedResource)
		if err != nil {
			return nil, err
		}
		ops = append(ops, rops...)
	}
	return ops, nil
}

// resourceOps add request and limit 1 of resource to a container's resources (raw), unless the
// user set either: a limit alone is a request of the same amount, and a request alone is the
// user's choice (the apiserver refuses it without an equal limit, as it must).
func resourceOps(base string, raw map[string]json.RawMessage, resource string) ([]patchOp, error) {
	want := map[string]string{resource: ManagedResourceQuantity}
	if raw == nil {
		return []patchOp{{"add", base, map[string]any{"requests": want, "limits": want}}}, nil
	}
	lists := map[string]map[string]any{}
	for _, k := range []string{"requests", "limits"} {
		var m map[string]any
		if b, ok := raw[k]; ok {
			if err := json.Unmarshal(b, &m); err != nil {
				return nil, fmt.Errorf("statefulset: %s/%s: %w", base, k, err)
			}
		}
		if _, set := m[resource]; set {
			return nil, nil
		}
		lists[k] = m
	}
	var ops []patchOp
	for _, k := range []string{"requests", "limits"} {
		if lists[k] == nil { // absent or null: the whole map in one operation
			ops = append(ops, patchOp{"add", base + "/" + k, want})
		} else {
			ops = append(ops, patchOp{"add", base + "/" + k + "/" + escapePointer(resource), ManagedResourceQuantity})
		}
	}
	return ops, nil
}
