package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestClaimClassIsThePVControllers checks mutate.ClaimClass against the real PV controller
// (kube-controller-manager of the pinned Kubernetes). The controller matches a claim to an
// Available PV only of the class it reads on the claim (a PV pre-bound by claimRef, as the
// webhook writes them, binds whatever its class, so the PVs here are not pre-bound). Each case
// has its own classes, so a claim can only match its own PV: the claims whose PV has the class
// ClaimClass names (the beta annotation when present, even empty) bind; the others stay
// Pending.
func TestClaimClassIsThePVControllers(t *testing.T) {
	cluster.RequireBinaries(t)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := c.Client
	const ns = "classes"
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)

	cases := []struct {
		claim   string
		beta    *string // nil: no annotation
		spec    string
		pvClass string
		bound   bool
	}{
		{claim: "beta-wins", beta: ptr.To("b1"), spec: "s1", pvClass: "b1", bound: true},
		{claim: "spec-loses", beta: ptr.To("b2"), spec: "s2", pvClass: "s2", bound: false},
		{claim: "empty-beta-is-no-class", beta: ptr.To(""), spec: "s3", pvClass: "s3", bound: false},
		{claim: "spec-alone", spec: "s4", pvClass: "s4", bound: true},
	}
	for _, tc := range cases {
		for _, cl := range []string{tc.spec, tc.pvClass} {
			_, err := cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: cl}, Provisioner: "kubernetes.io/no-provisioner"}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				require.NoError(t, err)
			}
		}
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pv-" + tc.claim},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:         corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: tc.pvClass,
				PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
					Driver: pvoptions.Driver, Options: map[string]string{pvoptions.OptVolumeID: "vol_" + tc.claim, pvoptions.OptBackstoreServer: "datera.example:7717", pvoptions.OptSize: "1"},
				}},
			},
		}
		_, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
		require.NoError(t, err)
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: tc.claim, Namespace: ns},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: ptr.To(tc.spec),
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		if tc.beta != nil {
			pvc.Annotations = map[string]string{mutate.BetaClassAnnotation: *tc.beta}
		}
		stored, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{})
		require.NoError(t, err, "the apiserver stores a claim whose two class fields disagree")
		assert.Equal(t, tc.bound, mutate.ClaimClass(stored) == tc.pvClass, "%s: ClaimClass %q, PV class %q", tc.claim, mutate.ClaimClass(stored), tc.pvClass)
	}

	// The claims ClaimClass matches bind; once they have, the PV controller has synced every
	// claim (it takes them in one pass), and the others are still Pending.
	for _, tc := range cases {
		if !tc.bound {
			continue
		}
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, tc.claim, metav1.GetOptions{})
			return err == nil && got.Status.Phase == corev1.ClaimBound && got.Spec.VolumeName == "pv-"+tc.claim, nil
		})
		require.NoError(t, err, "claim %s binds its PV of class %q", tc.claim, tc.pvClass)
	}
	time.Sleep(5 * time.Second) // room for a late sync to (wrongly) bind the others
	for _, tc := range cases {
		if tc.bound {
			continue
		}
		got, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, tc.claim, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, corev1.ClaimPending, got.Status.Phase, "claim %s (spec %q) must not bind a PV of class %q", tc.claim, tc.spec, tc.pvClass)
	}
}
