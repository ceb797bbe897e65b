// Package mutate holds the webhook's pure decisions, with no I/O: which claim templates of a
// StatefulSet are Datera-bound, the patch that pins them, and the PersistentVolume of each
// ordinal (its contract is pkg/pvoptions's).
package mutate

import (
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

const (
	// Provisioner marks a StorageClass as Datera's.
	Provisioner = "petfabric.io/datera"
	// Driver is the FlexVolume driver the PVs name (the PV contract's, pvoptions.Driver).
	Driver = pvoptions.Driver

	AnnotationPrefix = "petfabric.io/"
	// InjectLabel: "enabled" on a Namespace opts classless templates in; "disabled" on a
	// StatefulSet opts it out.
	InjectLabel = "petfabric.io/inject"

	// Legacy class annotations. The PV controller gives the beta one precedence over
	// spec.storageClassName, so a pinned template must not keep a non-Datera value there.
	AlphaClassAnnotation = "volume.alpha.kubernetes.io/storage-class"
	BetaClassAnnotation  = "volume.beta.kubernetes.io/storage-class"

	// Annotations the webhook records on a claim template; the StatefulSet controller copies
	// them onto every claim, which is how the PVC hook and the reconcile loop recognise them.
	AnnStatefulSet   = "petfabric.io/statefulset"
	AnnClaimTemplate = "petfabric.io/claim-template"

	// Labels on every PV the webhook writes; the reconcile loop deletes only PVs carrying them.
	LabelManagedBy     = "app.kubernetes.io/managed-by"
	ManagedByValue     = "petfabric"
	LabelStatefulSet   = pvoptions.LabelStatefulSet
	LabelNamespace     = "petfabric.io/namespace"
	LabelOrdinal       = pvoptions.LabelOrdinal
	LabelClaimTemplate = "petfabric.io/claim-template"
)

// Config is the webhook's own settings.
type Config struct {
	// ClusterID prefixes every Datera volume ID, so several clusters can share a backstore.
	ClusterID string
	// DefaultClass is the Datera StorageClass for classless templates in opted-in namespaces
	// and for the legacy alpha annotation.
	DefaultClass string
	// Defaults are option values used when neither the template nor the class sets them.
	Defaults map[string]string
	// MaxOrdinals is the per-StatefulSet ceiling on Datera-backed ordinals: no PV is ever made
	// for an ordinal >= MaxOrdinals, and the webhook denies a StatefulSet whose ordinals reach
	// past it. Zero or less means DefaultMaxOrdinals.
	MaxOrdinals int
	// SchedulerName, when set, is written into the pod template of every StatefulSet the
	// webhook mutates, unless the template names a scheduler other than the default one
	// (PodTemplatePatch). Set in the secondary-scheduler mode, where the scheduler that calls
	// the extender is not the cluster's default.
	SchedulerName string
	// ManagedResource, when set, is an extended resource the patch requests (and limits) 1 of
	// in the first container of every mutated StatefulSet's pod template, so a scheduler whose
	// extender entry manages it calls the extender for pets only (PodTemplatePatch).
	ManagedResource string
}

// DefaultMaxOrdinals is the ordinal ceiling when Config.MaxOrdinals is not set: far above any
// real StatefulSet of pets, far below what one user could make the webhook and the reconcile
// loop create (replicas is an int32).
const DefaultMaxOrdinals = 1000

// OrdinalCeiling is MaxOrdinals, or DefaultMaxOrdinals when it is not set.
func (c Config) OrdinalCeiling() int {
	if c.MaxOrdinals <= 0 {
		return DefaultMaxOrdinals
	}
	return c.MaxOrdinals
}

// Class is a Datera StorageClass as the decisions need it.
type Class struct {
	Name          string
	Parameters    map[string]string
	ReclaimPolicy corev1.PersistentVolumeReclaimPolicy
	MountOptions  []string
}

// ClassFromStorageClass converts a StorageClass; ok is false when it is not Datera's.
func ClassFromStorageClass(sc *storagev1.StorageClass) (Class, bool) {
	if sc.Provisioner != Provisioner {
		return Class{}, false
	}
	c := Class{Name: sc.Name, Parameters: sc.Parameters, ReclaimPolicy: corev1.PersistentVolumeReclaimDelete, MountOptions: sc.MountOptions}
	if sc.ReclaimPolicy != nil {
		c.ReclaimPolicy = *sc.ReclaimPolicy
	}
	return c, true
}

// Input is everything a decision about one StatefulSet depends on.
type Input struct {
	StatefulSet     *appsv1.StatefulSet
	NamespaceLabels map[string]string
	// Classes are the Datera StorageClasses by name.
	Classes map[string]Class
	// PinnedOnly considers only templates whose stored storageClassName or beta annotation
	// already names a Datera class. On UPDATE the templates are immutable, so a template the
	// webhook did not pin at CREATE can never get a Datera claim: PVs for it could never bind.
	PinnedOnly bool
	// NamespaceUID is the UID of the StatefulSet's namespace. Every PV records it as its owner,
	// so a namespace deleted and re-created under the same name is a different owner.
	NamespaceUID string
}

// TemplatePlan is the decision for one Datera-bound claim template.
type TemplatePlan struct {
	Index       int    // position in spec.volumeClaimTemplates
	Name        string // the template's metadata.name
	Class       Class
	Options     Options
	RequestGiB  int64 // the template's storage request, rounded up to GiB
	AccessModes []corev1.PersistentVolumeAccessMode
	// AccessMode is the PV option pvoptions.OptAccessMode: ReadOnlyMany when the template asks
	// for exactly [ReadOnlyMany], else ReadWriteOnce (one node at a time).
	AccessMode string
}

// SizeGiB is the volume size: the claim's storage request, which is what ResourceQuota
// counts. No option makes a volume larger than its claim asked for.
func (t TemplatePlan) SizeGiB() int64 { return t.RequestGiB }

// Plan is the decision for one StatefulSet.
type Plan struct {
	Namespace    string
	NamespaceUID string
	StatefulSet  string
	Templates    []TemplatePlan // only the Datera-bound ones, in template order
	// SchedulerName and ManagedResource are Config's, for the pod template (PodTemplatePatch).
	SchedulerName, ManagedResource string
}

// Decide finds the Datera-bound claim templates of a StatefulSet and resolves their options.
// A template is Datera-bound when its storageClassName, or a legacy beta/alpha annotation,
// names a Datera class; or when its namespace opted in and it names no class, or carries the
// alpha annotation (whose value Kubernetes 1.3 ignored, hence the blog's "anything"), in which
// case it gets cfg.DefaultClass. A StatefulSet labelled petfabric.io/inject=disabled is left alone.
// An invalid option is an error naming the field and the allowed values.
func Decide(cfg Config, in Input) (Plan, error) {
	sts := in.StatefulSet
	p := Plan{Namespace: sts.Namespace, NamespaceUID: in.NamespaceUID, StatefulSet: sts.Name,
		SchedulerName: cfg.SchedulerName, ManagedResource: cfg.ManagedResource}
	if sts.Labels[InjectLabel] == "disabled" {
		return p, nil
	}
	optedIn := in.NamespaceLabels[InjectLabel] == "enabled"
	for i := range sts.Spec.VolumeClaimTemplates {
		t := &sts.Spec.VolumeClaimTemplates[i]
		className, ok := dateraClassOf(cfg, in.Classes, t, optedIn)
		if !ok || in.PinnedOnly && !pinned(t, className) {
			continue
		}
		field := fmt.Sprintf("spec.volumeClaimTemplates[%d]", i)
		if err := validNames(sts, t, field); err != nil {
			return p, err
		}
		class, ok := in.Classes[className]
		if !ok {
			return p, &ValidationError{Field: field, Value: className,
				Allowed: fmt.Sprintf("the default Datera StorageClass %q does not exist; create it or name another class with provisioner %s", className, Provisioner)}
		}
		tp, err := planTemplate(cfg, i, t, class, field)
		if err != nil {
			return p, err
		}
		p.Templates = append(p.Templates, tp)
	}
	return p, nil
}

// validNames checks, for a Datera-bound template, the names its claims and PVs are made of.
// Mutating admission runs before the apiserver validates the object, so without this an
// invalid StatefulSet would get PVs (named after claims that can never exist) before being
// rejected, or a PV create would fail with a confusing message. The rules are the
// apiserver's: namespace and StatefulSet names are DNS labels (pod host names), and so are
// claim template names (they become pod volume names).
func validNames(sts *appsv1.StatefulSet, t *corev1.PersistentVolumeClaim, field string) error {
	if sts.Name == "" {
		return &ValidationError{Field: "metadata.name", Allowed: "a name: petfabric names each ordinal's volume after the StatefulSet, so generateName is not supported for StatefulSets with Datera volumes"}
	}
	if errs := validation.IsDNS1123Label(sts.Name); len(errs) > 0 {
		return &ValidationError{Field: "metadata.name", Value: sts.Name, Allowed: errs[0]}
	}
	if errs := validation.IsDNS1123Label(sts.Namespace); len(errs) > 0 {
		return &ValidationError{Field: "metadata.namespace", Value: sts.Namespace, Allowed: errs[0]}
	}
	if t.Name == "" {
		return &ValidationError{Field: field + ".metadata.name", Allowed: "a claim template needs a name"}
	}
	if errs := validation.IsDNS1123Label(t.Name); len(errs) > 0 {
		return &ValidationError{Field: field + ".metadata.name", Value: t.Name, Allowed: errs[0]}
	}
	return nil
}

// dateraClassOf returns the Datera class a template is bound to, if any: its effective class
// (ClaimClass: the beta annotation when present, else spec.storageClassName) when that names a
// Datera class; else the alpha annotation naming one; else, in an opted-in namespace, the
// default class for a template that asks for no class at all (HasClass false; an empty
// storageClassName or beta annotation explicitly asks for none) or carries the alpha
// annotation of any value.
func dateraClassOf(cfg Config, classes map[string]Class, t *corev1.PersistentVolumeClaim, optedIn bool) (string, bool) {
	isDatera := func(name string) bool { _, ok := classes[name]; return ok }
	if c := ClaimClass(t); c != "" {
		return c, isDatera(c)
	}
	alpha, hasAlpha := t.Annotations[AlphaClassAnnotation]
	if hasAlpha && isDatera(alpha) {
		return alpha, true
	}
	if optedIn && cfg.DefaultClass != "" && !HasClass(t) {
		return cfg.DefaultClass, true
	}
	return "", false
}

// pinned reports whether the stored template already asks for class through the fields the
// PV controller honours.
func pinned(t *corev1.PersistentVolumeClaim, class string) bool { return ClaimClass(t) == class }

func planTemplate(cfg Config, i int, t *corev1.PersistentVolumeClaim, class Class, field string) (TemplatePlan, error) {
	tp := TemplatePlan{Index: i, Name: t.Name, Class: class, AccessModes: t.Spec.AccessModes}
	if t.Name == "" {
		return tp, &ValidationError{Field: field + ".metadata.name", Allowed: "a claim template needs a name"}
	}
	if t.Spec.VolumeMode != nil && *t.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return tp, &ValidationError{Field: field + ".spec.volumeMode", Value: string(corev1.PersistentVolumeBlock),
			Allowed: "Filesystem (the datera/iscsi FlexVolume driver mounts a filesystem)"}
	}
	if t.Spec.DataSource != nil || t.Spec.DataSourceRef != nil {
		return tp, &ValidationError{Field: field + ".spec.dataSource", Value: "set", Allowed: "no data source: petfabric volumes start empty"}
	}
	if len(tp.AccessModes) == 0 {
		tp.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	mode, err := accessModeOf(tp.AccessModes, field)
	if err != nil {
		return tp, err
	}
	tp.AccessMode = mode
	req, ok := t.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok || req.Sign() <= 0 {
		return tp, &ValidationError{Field: field + ".spec.resources.requests.storage", Value: req.String(), Allowed: "a positive storage request"}
	}
	if req.Cmp(maxRequest) > 0 {
		return tp, &ValidationError{Field: field + ".spec.resources.requests.storage", Value: req.String(),
			Allowed: fmt.Sprintf("at most %dGi (the largest Datera volume)", datera.MaxSizeGiB)}
	}
	tp.RequestGiB = roundUpGiB(req)
	opts, err := resolveOptions(t.Annotations, class.Parameters, cfg.Defaults,
		"storageclass "+class.Name, field+".metadata.annotations", tp.RequestGiB)
	if err != nil {
		return tp, err
	}
	tp.Options = opts
	return tp, nil
}

// accessModeOf maps a template's access modes to the PV's accessMode option. ReadWriteMany is
// refused: the volume is a local filesystem on one LUN, and two nodes mounting it read-write
// corrupt it. Exactly [ReadOnlyMany] is ReadOnlyMany (any number of nodes, every mount
// read-only); everything else (ReadWriteOnce, ReadWriteOncePod, or ReadWriteOnce together with
// ReadOnlyMany) is ReadWriteOnce: one node at a time.
func accessModeOf(modes []corev1.PersistentVolumeAccessMode, field string) (string, error) {
	for _, m := range modes {
		if m == corev1.ReadWriteMany {
			return "", &ValidationError{Field: field + ".spec.accessModes", Value: string(m),
				Allowed: "ReadWriteOnce, ReadWriteOncePod or ReadOnlyMany: a Datera volume holds a local filesystem, which two nodes must never mount read-write"}
		}
	}
	if len(modes) == 1 && modes[0] == corev1.ReadOnlyMany {
		return pvoptions.AccessReadOnlyMany, nil
	}
	return pvoptions.AccessReadWriteOnce, nil
}

const giB = int64(1) << 30

// maxRequest is the largest storage request a Datera volume can serve; checking it first also
// keeps roundUpGiB clear of int64 overflow.
var maxRequest = *resource.NewQuantity(datera.MaxSizeGiB*giB, resource.BinarySI)

func roundUpGiB(q resource.Quantity) int64 {
	b := q.Value()
	return (b + giB - 1) / giB
}

// ClassNames lists the Datera classes a plan uses, sorted (for logs and events).
func (p Plan) ClassNames() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range p.Templates {
		if !seen[t.Class.Name] {
			seen[t.Class.Name] = true
			out = append(out, t.Class.Name)
		}
	}
	sort.Strings(out)
	return out
}
