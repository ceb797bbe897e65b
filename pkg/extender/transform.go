package extender

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// The extender caches every PersistentVolume and claim of the cluster, tens of thousands on
// a big one, but its decisions read a handful of their fields. SlimObject, the transform of
// its informers (exported for the memory measurement in test/e2e), keeps those and drops
// the rest before an object is stored:
//
//   - metadata: name, namespace, UID, resourceVersion, labels (the pet labels; claim
//     selectors), annotations but kubectl's last-applied copy, deletionTimestamp;
//   - a PersistentVolume's capacity, access modes, claimRef (namespace, name, UID), class,
//     volume mode, phase, and of a Datera FlexVolume its driver and the two options
//     placement reads (volumeID, backstoreServer; see pvoptions: the rest are the driver's);
//   - a claim's access modes, requests, volumeName, class, volume mode, selector, phase.
//
// Everything placement.PodVolumes and the claim → PV resolution read is kept
// (transform_test.go checks PodVolumes gives the same answer on slim and full objects);
// a new reader of another field must add it here.
//
// It is a client-go TransformFunc: it takes the object the informer hands over and returns
// the one to store; anything but a PersistentVolume or a claim only loses its managed fields.
func SlimObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.PersistentVolume:
		return slimPV(o), nil
	case *corev1.PersistentVolumeClaim:
		return slimClaim(o), nil
	}
	return cachetransform.StripManagedFields(obj)
}

func slimMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: m.Labels, DeletionTimestamp: m.DeletionTimestamp}
	if _, ok := m.Annotations[corev1.LastAppliedConfigAnnotation]; ok {
		out.Annotations = make(map[string]string, len(m.Annotations)-1)
		for k, v := range m.Annotations {
			if k != corev1.LastAppliedConfigAnnotation {
				out.Annotations[k] = v
			}
		}
	} else {
		out.Annotations = m.Annotations
	}
	return out
}

func slimPV(pv *corev1.PersistentVolume) *corev1.PersistentVolume {
	out := &corev1.PersistentVolume{
		ObjectMeta: slimMeta(&pv.ObjectMeta),
		Spec: corev1.PersistentVolumeSpec{
			Capacity:         pv.Spec.Capacity,
			AccessModes:      pv.Spec.AccessModes,
			StorageClassName: pv.Spec.StorageClassName,
			VolumeMode:       pv.Spec.VolumeMode,
		},
		Status: corev1.PersistentVolumeStatus{Phase: pv.Status.Phase},
	}
	if ref := pv.Spec.ClaimRef; ref != nil {
		out.Spec.ClaimRef = &corev1.ObjectReference{Namespace: ref.Namespace, Name: ref.Name, UID: ref.UID}
	}
	if fv := pv.Spec.FlexVolume; fv != nil && fv.Driver == placement.FlexDriver {
		opts := make(map[string]string, 2)
		for _, k := range []string{pvoptions.OptVolumeID, pvoptions.OptBackstoreServer} {
			if v, ok := fv.Options[k]; ok {
				opts[k] = v
			}
		}
		out.Spec.FlexVolume = &corev1.FlexPersistentVolumeSource{Driver: fv.Driver, Options: opts}
	}
	return out
}

func slimClaim(c *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: slimMeta(&c.ObjectMeta),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      c.Spec.AccessModes,
			Resources:        corev1.VolumeResourceRequirements{Requests: c.Spec.Resources.Requests},
			VolumeName:       c.Spec.VolumeName,
			StorageClassName: c.Spec.StorageClassName,
			VolumeMode:       c.Spec.VolumeMode,
			Selector:         c.Spec.Selector,
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: c.Status.Phase},
	}
}
