package mutate

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// AnnClaim on a PV records the full namespace/name of the claim it is pre-bound to.
const AnnClaim = "petfabric.io/claim"

// ClaimVolume is everything needed to write the PV of one claim; both the StatefulSet path
// (per ordinal) and the PVC path build one, so both produce the identical PV.
type ClaimVolume struct {
	Namespace    string
	NamespaceUID string // the owner: required, so a re-created namespace is another owner
	Claim        string
	StatefulSet  string // "" for a claim not made from a StatefulSet template
	Template     string
	Ordinal      int // -1 when StatefulSet is ""
	Class        Class
	Options      Options
	SizeGiB      int64
	AccessModes  []corev1.PersistentVolumeAccessMode
	AccessMode   string // pvoptions.AccessReadWriteOnce or AccessReadOnlyMany
}

// Ordinal returns the ClaimVolume of one ordinal of a planned template.
func (p Plan) Ordinal(tp TemplatePlan, ordinal int) ClaimVolume {
	return ClaimVolume{
		Namespace: p.Namespace, NamespaceUID: p.NamespaceUID, Claim: ClaimName(tp.Name, p.StatefulSet, ordinal),
		StatefulSet: p.StatefulSet, Template: tp.Name, Ordinal: ordinal,
		Class: tp.Class, Options: tp.Options, SizeGiB: tp.SizeGiB(), AccessModes: tp.AccessModes, AccessMode: tp.AccessMode,
	}
}

// Owner is who the claim's volume belongs to.
func (cv ClaimVolume) Owner(cfg Config) pvoptions.Owner {
	return pvoptions.Owner{ClusterID: cfg.ClusterID, Namespace: cv.Namespace, Claim: cv.Claim, NamespaceUID: cv.NamespaceUID}
}

// PersistentVolume is the pre-bound FlexVolume PV for the claim (PV contract version 2: the
// version 1 options plus accessMode and the owner). It fails without a cluster ID or a
// namespace UID: a PV that does not say whose it is could be handed to the wrong owner.
func (cv ClaimVolume) PersistentVolume(cfg Config) (*corev1.PersistentVolume, error) {
	if cfg.ClusterID == "" {
		return nil, fmt.Errorf("claim %s/%s: no cluster id: the webhook derives one from the kube-system namespace UID unless --cluster-id is set", cv.Namespace, cv.Claim)
	}
	if cv.NamespaceUID == "" {
		return nil, fmt.Errorf("claim %s/%s: the UID of namespace %s is not known, so the PV could not record its owner", cv.Namespace, cv.Claim, cv.Namespace)
	}
	mode, err := pvoptions.ParseAccessMode(cv.AccessMode)
	if err != nil {
		return nil, fmt.Errorf("claim %s/%s: %w", cv.Namespace, cv.Claim, err)
	}
	volumeID, err := VolumeID(cfg.ClusterID, cv.Namespace, cv.Claim)
	if err != nil {
		return nil, err
	}
	o := cv.Options
	opts := pvoptions.Volume{
		VolumeID: volumeID, SizeGiB: cv.SizeGiB, Replica: o.Replica, BackstoreServer: o.BackstoreServer,
		Template: o.Template, PlacementMode: o.PlacementMode, MaxIOPS: o.MaxIOPS, MaxBWKiB: o.MaxBW,
		IPPool: o.IPPool, Tenant: o.Tenant, AccessMode: mode, Owner: cv.Owner(cfg), HasOwner: true,
	}.Options()
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
