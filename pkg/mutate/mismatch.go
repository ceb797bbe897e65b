package mutate

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Reasons a PV pre-bound to a claim does not fit it (the reason label of the mismatch metrics).
const (
	MismatchStorageClass = "storage_class"
	MismatchCapacity     = "capacity"
	MismatchAccessModes  = "access_modes"
	MismatchDriver       = "driver"
	MismatchVolumeID     = "volume_id"
	MismatchOwner        = "owner"
)

// EventPVMismatch is the reason of the Warning Event on a PV that does not fit its claim, the
// same whether the webhook or the reconcile loop found it.
const EventPVMismatch = "PersistentVolumeMismatch"

// Mismatch is one way an existing PV differs from what its claim needs.
type Mismatch struct {
	Reason string // one of the Mismatch* constants
	Detail string // for people: what the PV has and what the claim needs
}

func (m Mismatch) String() string { return m.Reason + ": " + m.Detail }

// CheckPV compares an existing PV that serves the claim of cv with what the claim needs: its
// storage class, a capacity of at least the request, every access mode the claim asks for,
// the datera/iscsi driver with the claim's own volume ID, and the recorded owner. A PV that
// does not fit must be reported, never taken as the claim's volume without a word: the claim
// would bind a volume of the wrong class or size, or fail to bind at all.
//
// Older PVs are not mismatches for being old: a contract version 1 PV (no owner options) has no
// owner to compare, and a volume ID made without a cluster ID (the old default) is the claim's
// own volume. A PV recording another namespace UID is: it belonged to a namespace of the same
// name that was deleted.
func CheckPV(cfg Config, cv ClaimVolume, pv *corev1.PersistentVolume) []Mismatch {
	var out []Mismatch
	if pv.Spec.StorageClassName != cv.Class.Name {
		out = append(out, Mismatch{MismatchStorageClass, fmt.Sprintf("PV %s has class %q, the claim needs %q", pv.Name, pv.Spec.StorageClassName, cv.Class.Name)})
	}
	want := resource.NewQuantity(cv.SizeGiB*giB, resource.BinarySI)
	if have, ok := pv.Spec.Capacity[corev1.ResourceStorage]; !ok || have.Cmp(*want) < 0 {
		out = append(out, Mismatch{MismatchCapacity, fmt.Sprintf("PV %s holds %s, the claim requests %s", pv.Name, have.String(), want.String())})
	}
	for _, m := range cv.AccessModes {
		if !slices.Contains(pv.Spec.AccessModes, m) {
			out = append(out, Mismatch{MismatchAccessModes, fmt.Sprintf("PV %s has access modes %v, the claim asks for %v", pv.Name, pv.Spec.AccessModes, cv.AccessModes)})
			break
		}
	}
	fv := pv.Spec.FlexVolume
	if fv == nil || fv.Driver != Driver {
		driver := "none"
		if fv != nil {
			driver = fv.Driver
		} else if pv.Spec.CSI != nil {
			driver = "csi " + pv.Spec.CSI.Driver
		}
		return append(out, Mismatch{MismatchDriver, fmt.Sprintf("PV %s uses flexVolume driver %q, not %s", pv.Name, driver, Driver)})
	}
	wantID, err := VolumeID(cfg.ClusterID, cv.Namespace, cv.Claim)
	legacyID, lerr := VolumeID("", cv.Namespace, cv.Claim)
	if got := fv.Options[pvoptions.OptVolumeID]; (err != nil || got != wantID) && (lerr != nil || got != legacyID) {
		out = append(out, Mismatch{MismatchVolumeID, fmt.Sprintf("PV %s names Datera volume %q, the claim's volume is %q", pv.Name, got, wantID)})
	}
	if recorded, ok := pvoptions.OwnerFromOptions(fv.Options); ok {
		if recorded.Namespace != cv.Namespace || recorded.Claim != cv.Claim ||
			cv.NamespaceUID != "" && recorded.NamespaceUID != cv.NamespaceUID ||
			cfg.ClusterID != "" && recorded.ClusterID != "" && recorded.ClusterID != cfg.ClusterID {
			out = append(out, Mismatch{MismatchOwner, fmt.Sprintf("PV %s was made for claim %s/%s of namespace uid %s in cluster %q; this claim is %s/%s of namespace uid %s in cluster %q",
				pv.Name, recorded.Namespace, recorded.Claim, recorded.NamespaceUID, recorded.ClusterID, cv.Namespace, cv.Claim, cv.NamespaceUID, cfg.ClusterID)})
		}
	}
	return out
}
