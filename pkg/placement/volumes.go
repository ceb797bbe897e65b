package placement

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

const (
	// FlexDriver is the FlexVolume driver name of Datera PVs (the PV contract's,
	// pvoptions.Driver).
	FlexDriver = pvoptions.Driver
	// LabelStatefulSet and LabelOrdinal are the labels the webhook puts on the PVs it
	// creates: the StatefulSet's name (its namespace is the claimRef's) and the pet's
	// ordinal. Prioritize uses them to spread one StatefulSet's pets.
	LabelStatefulSet = pvoptions.LabelStatefulSet
	LabelOrdinal     = pvoptions.LabelOrdinal
)

// Volume is one Datera volume a pod uses.
type Volume struct {
	// Claim is "namespace/name" of the PersistentVolumeClaim ("" for an inline volume).
	Claim string
	// PV is the PersistentVolume name ("" for an inline volume).
	PV string
	// VolumeID is the Datera app_instance name (FlexVolume option volumeID).
	VolumeID string
	// Backstore is the FlexVolume option backstoreServer: the key of the node report.
	Backstore string
	// RWO is true when at most one node may attach the volume (ReadWriteOnce,
	// ReadWriteOncePod, or an inline volume, which has no access modes).
	RWO bool
	// Pet identifies the StatefulSet pet the volume belongs to (zero when unlabelled).
	Pet Pet
}

// Pet names one ordinal of a StatefulSet.
type Pet struct {
	Namespace, StatefulSet string
	Ordinal                int
}

// Valid reports whether the pet is known.
func (p Pet) Valid() bool { return p.StatefulSet != "" }

// Lookup reads claims and volumes from a cache (informer listers in the extender, maps in
// tests). Implementations must not block on the network.
type Lookup interface {
	// Claim returns the claim, or false when the cache has none.
	Claim(namespace, name string) (*corev1.PersistentVolumeClaim, bool)
	// PV returns the PersistentVolume by name.
	PV(name string) (*corev1.PersistentVolume, bool)
	// PVForClaim returns a PV whose claimRef names namespace/name: the webhook pre-binds
	// each pet's PV to its future claim before the claim exists.
	PVForClaim(namespace, name string) (*corev1.PersistentVolume, bool)
}

// PodVolumes returns the Datera volumes of pod. A claim that resolves to no PV is not a
// Datera volume as far as placement can tell (it is unbound and no PV is pre-bound to it),
// so it puts no constraint on the node; kube-scheduler's own VolumeBinding plugin handles
// unbound claims. An error means a Datera volume exists but cannot be placed (a PV without
// the options this contract requires, or a bound PV missing from the cache): the scheduler
// should retry rather than guess.
func PodVolumes(pod *corev1.Pod, lk Lookup) ([]Volume, error) {
	var out []Volume
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		switch {
		case v.FlexVolume != nil:
			if v.FlexVolume.Driver != FlexDriver {
				continue
			}
			vol, err := fromOptions(v.FlexVolume.Options, "inline volume "+v.Name)
			if err != nil {
				return nil, err
			}
			vol.RWO = true
			out = append(out, vol)
		case v.PersistentVolumeClaim != nil:
			vol, ok, err := claimVolume(pod.Namespace, v.PersistentVolumeClaim.ClaimName, lk)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, vol)
			}
		case v.Ephemeral != nil:
			// Generic ephemeral volumes get a claim named <pod>-<volume>.
			vol, ok, err := claimVolume(pod.Namespace, pod.Name+"-"+v.Name, lk)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, vol)
			}
		}
	}
	return out, nil
}

func claimVolume(namespace, name string, lk Lookup) (Volume, bool, error) {
	key := namespace + "/" + name
	var pv *corev1.PersistentVolume
	claim, found := lk.Claim(namespace, name)
	if found && claim.Spec.VolumeName != "" {
		var ok bool
		pv, ok = lk.PV(claim.Spec.VolumeName)
		if !ok {
			return Volume{}, false, fmt.Errorf("claim %s is bound to PersistentVolume %s, which the extender has not seen yet", key, claim.Spec.VolumeName)
		}
	} else {
		p, ok := lk.PVForClaim(namespace, name)
		if !ok {
			return Volume{}, false, nil
		}
		// A claimRef with a UID names one incarnation of the claim; a re-created claim
		// with another UID is not the one this PV was bound to.
		if found && p.Spec.ClaimRef.UID != "" && p.Spec.ClaimRef.UID != claim.UID {
			return Volume{}, false, nil
		}
		pv = p
	}
	if pv.Spec.FlexVolume == nil || pv.Spec.FlexVolume.Driver != FlexDriver {
		return Volume{}, false, nil
	}
	vol, err := fromOptions(pv.Spec.FlexVolume.Options, "PersistentVolume "+pv.Name)
	if err != nil {
		return Volume{}, false, err
	}
	vol.Claim = key
	vol.PV = pv.Name
	vol.RWO = isRWO(pv.Spec.AccessModes)
	vol.Pet = PetOfPV(pv)
	return vol, true, nil
}

func fromOptions(opts map[string]string, what string) (Volume, error) {
	// The extender reads two options of the PV contract (pkg/pvoptions), present in every
	// version; what the others say is the driver's to check.
	id, bs := opts[pvoptions.OptVolumeID], opts[pvoptions.OptBackstoreServer]
	if id == "" || bs == "" {
		return Volume{}, fmt.Errorf("%s uses driver %s but lacks option %q or %q", what, FlexDriver, pvoptions.OptVolumeID, pvoptions.OptBackstoreServer)
	}
	return Volume{VolumeID: id, Backstore: bs}, nil
}

func isRWO(modes []corev1.PersistentVolumeAccessMode) bool {
	if len(modes) == 0 {
		// No declared mode: an iSCSI LUN with a local filesystem cannot be shared safely.
		return true
	}
	for _, m := range modes {
		if m == corev1.ReadWriteOnce || m == corev1.ReadWriteOncePod {
			return true
		}
	}
	return false
}

// PetOfPV reads the pet labels of a webhook-made PV (zero Pet when absent or malformed).
func PetOfPV(pv *corev1.PersistentVolume) Pet {
	sts := pv.Labels[LabelStatefulSet]
	ord, err := strconv.Atoi(pv.Labels[LabelOrdinal])
	if sts == "" || err != nil || ord < 0 || pv.Spec.ClaimRef == nil {
		return Pet{}
	}
	return Pet{Namespace: pv.Spec.ClaimRef.Namespace, StatefulSet: sts, Ordinal: ord}
}
