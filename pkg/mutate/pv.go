package mutate

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// AnnClaim on a PV records the full namespace/name of the claim it is pre-bound to.
const AnnClaim = "petfabric.io/claim"

// ClaimVolume is everything needed to write the PV of one claim; both the StatefulSet path
// (per ordinal) and the PVC path build one, so both produce the identical PV.
type ClaimVolume struct {
	Namespace   string
	Claim       string
	StatefulSet string // "" for a claim not made from a StatefulSet template
	Template    string
	Ordinal     int // -1 when StatefulSet is ""
	Class       Class
	Options     Options
	SizeGiB     int64
	AccessModes []corev1.PersistentVolumeAccessMode
}

// Ordinal returns the ClaimVolume of one ordinal of a planned template.
func (p Plan) Ordinal(tp TemplatePlan, ordinal int) ClaimVolume {
	return ClaimVolume{
		Namespace: p.Namespace, Claim: ClaimName(tp.Name, p.StatefulSet, ordinal),
		StatefulSet: p.StatefulSet, Template: tp.Name, Ordinal: ordinal,
		Class: tp.Class, Options: tp.Options, SizeGiB: tp.SizeGiB(), AccessModes: tp.AccessModes,
	}
}

// PersistentVolume is the pre-bound FlexVolume PV for the claim, per the DESIGN.md contract.
func (cv ClaimVolume) PersistentVolume(cfg Config) (*corev1.PersistentVolume, error) {
	volumeID, err := VolumeID(cfg.ClusterID, cv.Namespace, cv.Claim)
	if err != nil {
		return nil, err
	}
	o := cv.Options
	opts := map[string]string{
		"volumeID":        volumeID,
		"size":            strconv.FormatInt(cv.SizeGiB, 10),
		"replica":         strconv.Itoa(o.Replica),
		"backstoreServer": o.BackstoreServer,
	}
	for _, kv := range [...][2]string{{OptTemplate, o.Template}, {OptPlacementMode, o.PlacementMode}, {OptIPPool, o.IPPool}, {OptTenant, o.Tenant}} {
		if kv[1] != "" {
			opts[kv[0]] = kv[1]
		}
	}
	if o.MaxIOPS > 0 {
		opts[OptMaxIOPS] = strconv.FormatInt(o.MaxIOPS, 10)
	}
	if o.MaxBW > 0 {
		opts[OptMaxBW] = strconv.FormatInt(o.MaxBW, 10)
	}
	labels := map[string]string{
		LabelManagedBy: ManagedByValue,
		LabelNamespace: cv.Namespace,
	}
	annotations := map[string]string{AnnClaim: cv.Namespace + "/" + cv.Claim}
	if cv.StatefulSet != "" {
		labels[LabelStatefulSet] = LabelValue(cv.StatefulSet)
		labels[LabelClaimTemplate] = LabelValue(cv.Template)
		labels[LabelOrdinal] = strconv.Itoa(cv.Ordinal)
		annotations[AnnStatefulSet] = cv.StatefulSet
		annotations[AnnClaimTemplate] = cv.Template
	}
	fsMode := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: PVName(cv.Namespace, cv.Claim), Labels: labels, Annotations: annotations},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(cv.SizeGiB*giB, resource.BinarySI)},
			AccessModes:                   cv.AccessModes,
			PersistentVolumeReclaimPolicy: cv.Class.ReclaimPolicy,
			StorageClassName:              cv.Class.Name,
			MountOptions:                  cv.Class.MountOptions,
			VolumeMode:                    &fsMode,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: cv.Namespace, Name: cv.Claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver:    Driver,
				FSType:    o.FSType,
				SecretRef: &corev1.SecretReference{Name: o.SecretName, Namespace: o.SecretNamespace},
				Options:   opts,
			}},
		},
	}, nil
}

// LabelValue returns s when it is a valid label value, else a truncated form with a stable
// hash (StatefulSet names may be longer than the 63 characters a label value allows).
func LabelValue(s string) string {
	if isLabelValue(s) {
		return s
	}
	suffix := "-" + hashSuffix(s)
	head := s
	if len(head) > validation.LabelValueMaxLength-len(suffix) {
		head = head[:validation.LabelValueMaxLength-len(suffix)]
	}
	for len(head) > 0 && !isAlnum(head[len(head)-1]) {
		head = head[:len(head)-1]
	}
	if v := head + suffix; isLabelValue(v) {
		return v
	}
	return suffix[1:] // s had characters no label value may hold (or none to keep): the hash alone
}

func isAlnum(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// PlanClaim decides the PV of a claim at PVC CREATE: Datera-bound when its storageClassName
// (or legacy beta annotation) names a Datera class. Options come from the claim's annotations
// (the webhook recorded them on its template) > class parameters > defaults. ok is false for
// claims petfabric does not serve.
func PlanClaim(cfg Config, pvc *corev1.PersistentVolumeClaim, classes map[string]Class) (cv ClaimVolume, ok bool, err error) {
	className := ""
	if pvc.Spec.StorageClassName != nil {
		className = *pvc.Spec.StorageClassName
	}
	if className == "" {
		className = pvc.Annotations[BetaClassAnnotation]
	}
	class, ok := classes[className]
	if !ok {
		return cv, false, nil
	}
	if pvc.Spec.VolumeName != "" {
		return cv, false, nil // bound to a PV chosen by someone else
	}
	if len(validation.IsDNS1123Label(pvc.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(pvc.Name)) > 0 {
		// Mutating admission runs before validation: the apiserver will reject this claim
		// itself, and no PV should be made for it.
		return cv, false, nil
	}
	tmpl := ClaimVolume{Namespace: pvc.Namespace, Claim: pvc.Name, Ordinal: -1, Class: class, AccessModes: pvc.Spec.AccessModes}
	if sts, tpl := pvc.Annotations[AnnStatefulSet], pvc.Annotations[AnnClaimTemplate]; sts != "" && tpl != "" {
		if n, ok := ParseOrdinal(pvc.Name, tpl, sts); ok {
			tmpl.StatefulSet, tmpl.Template, tmpl.Ordinal = sts, tpl, n
		}
	}
	asTemplate := pvc.DeepCopy()
	asTemplate.Name = pvc.Name
	tp, err := planTemplate(cfg, 0, asTemplate, class, "persistentvolumeclaim "+pvc.Namespace+"/"+pvc.Name)
	if err != nil {
		return cv, true, err
	}
	tmpl.Options, tmpl.SizeGiB, tmpl.AccessModes = tp.Options, tp.SizeGiB(), tp.AccessModes
	return tmpl, true, nil
}

// SameClaim reports whether an existing PV is the one for this claim (pre-bound or bound to
// it), as opposed to a PV of that name that serves another claim.
func SameClaim(pv *corev1.PersistentVolume, namespace, claim string) bool {
	ref := pv.Spec.ClaimRef
	return ref != nil && ref.Namespace == namespace && ref.Name == claim
}

// String is for logs and events.
func (cv ClaimVolume) String() string {
	return fmt.Sprintf("%s/%s (class %s, %d GiB)", cv.Namespace, cv.Claim, cv.Class.Name, cv.SizeGiB)
}
