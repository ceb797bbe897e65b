package extender

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/placement"
)

// fullPV is a webhook-made PV as the apiserver returns it: every option of the contract,
// managed fields, kubectl's last-applied copy.
func fullPV(name, claim, volumeID string, modes ...corev1.PersistentVolumeAccessMode) *corev1.PersistentVolume {
	pv := dateraPV(name, "shop", claim, volumeID)
	pv.UID, pv.ResourceVersion = types.UID("uid-"+name), "42"
	pv.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: `{"a very":"long copy of the object"}`, "petfabric.io/statefulset": "db"}
	pv.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "petfabric-webhook", Operation: metav1.ManagedFieldsOperationUpdate}}
	pv.Spec.ClaimRef.UID, pv.Spec.ClaimRef.Kind, pv.Spec.ClaimRef.APIVersion = "claim-uid", "PersistentVolumeClaim", "v1"
	pv.Spec.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}
	pv.Spec.StorageClassName = "datera-gold"
	pv.Spec.MountOptions = []string{"noatime"}
	pv.Spec.FlexVolume.FSType = "xfs"
	pv.Spec.FlexVolume.SecretRef = &corev1.SecretReference{Name: "datera-creds", Namespace: "petfabric-system"}
	for k, v := range map[string]string{"size": "10", "replica": "3", "placement": "hybrid", "template": "", "ipPool": "default", "clusterID": "c1"} {
		pv.Spec.FlexVolume.Options[k] = v
	}
	if modes != nil {
		pv.Spec.AccessModes = modes
	}
	pv.Status.Phase = corev1.VolumeBound
	return pv
}

func fullClaim(name, volumeName string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: "claim-uid", ResourceVersion: "7",
			Annotations:   map[string]string{"pv.kubernetes.io/bind-completed": "yes", corev1.LastAppliedConfigAnnotation: "{}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager"}}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: volumeName,
			StorageClassName: ptr.To("datera-gold"), Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}}},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
			Conditions: []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimResizing, Status: corev1.ConditionFalse, Message: "a condition"}}},
	}
}

// The extender decides the same on slim objects as on full ones, and the slim ones are
// smaller.
func TestSlimObjectKeepsWhatPlacementReads(t *testing.T) {
	otherPV := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "nfs-1"},
		Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "shop", Name: "nfs"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs", Path: "/x"}}}}
	for _, tc := range []struct {
		name   string
		pvs    []*corev1.PersistentVolume
		claims []*corev1.PersistentVolumeClaim
		pod    *corev1.Pod
	}{
		{"bound RWO claim", []*corev1.PersistentVolume{fullPV("pv-a", "data-db-0", "pf-a")}, []*corev1.PersistentVolumeClaim{fullClaim("data-db-0", "pv-a")}, claimPod("db-0", "data-db-0")},
		{"shared volume", []*corev1.PersistentVolume{fullPV("pv-s", "shared", "pf-s", corev1.ReadWriteMany)}, []*corev1.PersistentVolumeClaim{fullClaim("shared", "pv-s")}, claimPod("db-0", "shared")},
		{"claim not yet created, PV pre-bound", []*corev1.PersistentVolume{fullPV("pv-b", "data-db-1", "pf-b")}, nil, claimPod("db-1", "data-db-1")},
		{"claim of another driver", []*corev1.PersistentVolume{otherPV}, []*corev1.PersistentVolumeClaim{fullClaim("nfs", "nfs-1")}, claimPod("db-2", "nfs")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full, slim := mapLookup{claims: map[string]*corev1.PersistentVolumeClaim{}, pvs: map[string]*corev1.PersistentVolume{}}, mapLookup{claims: map[string]*corev1.PersistentVolumeClaim{}, pvs: map[string]*corev1.PersistentVolume{}}
			for _, pv := range tc.pvs {
				full.pvs[pv.Name] = pv
				s, err := SlimObject(pv.DeepCopy())
				require.NoError(t, err)
				slim.pvs[pv.Name] = s.(*corev1.PersistentVolume)
				assert.Less(t, jsonSize(t, s), jsonSize(t, pv))
			}
			for _, c := range tc.claims {
				full.claims[c.Namespace+"/"+c.Name] = c
				s, err := SlimObject(c.DeepCopy())
				require.NoError(t, err)
				slim.claims[c.Namespace+"/"+c.Name] = s.(*corev1.PersistentVolumeClaim)
				assert.Less(t, jsonSize(t, s), jsonSize(t, c))
			}
			fullVols, fullErr := placement.PodVolumes(tc.pod, byClaimRef{full})
			slimVols, slimErr := placement.PodVolumes(tc.pod, byClaimRef{slim})
			assert.Equal(t, fullErr, slimErr)
			assert.Equal(t, fullVols, slimVols)
		})
	}
	t.Run("slim PV keeps exactly the read fields", func(t *testing.T) {
		s, err := SlimObject(fullPV("pv-a", "data-db-0", "pf-a"))
		require.NoError(t, err)
		pv := s.(*corev1.PersistentVolume)
		assert.Equal(t, map[string]string{"petfabric.io/statefulset": "db"}, pv.Annotations)
		assert.Nil(t, pv.ManagedFields)
		assert.Equal(t, &corev1.ObjectReference{Namespace: "shop", Name: "data-db-0", UID: "claim-uid"}, pv.Spec.ClaimRef)
		assert.Equal(t, &corev1.FlexPersistentVolumeSource{Driver: placement.FlexDriver,
			Options: map[string]string{"volumeID": "pf-a", "backstoreServer": backstore}}, pv.Spec.FlexVolume)
		assert.Equal(t, corev1.VolumeBound, pv.Status.Phase)
		assert.Equal(t, "datera-gold", pv.Spec.StorageClassName)
	})
	t.Run("other objects lose managed fields only; tombstones pass", func(t *testing.T) {
		l := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m"}}}, Data: map[string]string{"a": "b"}}
		got, err := SlimObject(l)
		require.NoError(t, err)
		assert.Equal(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Data: map[string]string{"a": "b"}}, got)
		tomb := cache.DeletedFinalStateUnknown{Key: "k"}
		got, err = SlimObject(tomb)
		require.NoError(t, err)
		assert.Equal(t, tomb, got)
	})
}

// byClaimRef is mapLookup with PVForClaim answered from the PVs' claimRefs.
type byClaimRef struct{ mapLookup }

func (m byClaimRef) PVForClaim(ns, name string) (*corev1.PersistentVolume, bool) {
	for _, pv := range m.pvs {
		if pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == ns && pv.Spec.ClaimRef.Name == name {
			return pv, true
		}
	}
	return nil, false
}

func jsonSize(t *testing.T, v any) int {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return len(b)
}
