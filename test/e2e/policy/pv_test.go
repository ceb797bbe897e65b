package policy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

const dateraClass = "datera"

// dateraPV is a PV as the webhook makes it: FlexVolume datera/iscsi with the admin's
// credentials Secret, pre-bound (namespace and name, no UID) to the claim it is for.
func dateraPV(name, claimNS, claim string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              dateraClass,
			ClaimRef:                      &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Namespace: claimNS, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver:    mutate.Driver,
				FSType:    "ext4",
				SecretRef: &corev1.SecretReference{Namespace: releaseNS, Name: "datera-credentials"},
				Options: map[string]string{
					"volumeID":                  "k0123456789abcdef_" + claimNS + "_" + claim,
					"backstoreServer":           "datera.example:7717",
					"size":                      "1",
					pvoptions.OptAccessMode:     pvoptions.AccessReadWriteOnce,
					pvoptions.OptClaimNamespace: claimNS,
					pvoptions.OptClaimName:      claim,
					pvoptions.OptClusterID:      "k0123456789abcdef",
					pvoptions.OptNamespaceUID:   "00000000-0000-0000-0000-000000000000",
				},
			}},
		},
	}
}

// otherPV is the same with another FlexVolume driver: not petfabric's business.
func otherPV(name, claimNS, claim string) *corev1.PersistentVolume {
	pv := dateraPV(name, claimNS, claim)
	pv.Spec.FlexVolume.Driver = "example.com/nfs"
	pv.Spec.FlexVolume.SecretRef = nil
	return pv
}

func claim(ns, name string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To(dateraClass),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

func createPV(ctx context.Context, cs kubernetes.Interface, pv *corev1.PersistentVolume, dry bool) error {
	_, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv.DeepCopy(), metav1.CreateOptions{DryRun: dryRun(dry)})
	return err
}

// updatePV reads PV name as cs, applies change and writes it back as cs, again when the PV
// controller changed the PV in between.
func updatePV(ctx context.Context, cs kubernetes.Interface, name string, dry bool, change func(*corev1.PersistentVolume)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(pv)
		_, err = cs.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{DryRun: dryRun(dry)})
		return err
	})
}

func retarget(ns, name string) func(*corev1.PersistentVolume) {
	return func(pv *corev1.PersistentVolume) {
		pv.Spec.ClaimRef = &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolumeClaim", Namespace: ns, Name: name}
	}
}

func reclaimDelete(pv *corev1.PersistentVolume) {
	pv.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimDelete
}

// pvEnv is a cluster with the Datera StorageClass, the webhook's ServiceAccount, a tenant
// (team-b) and a storage operator (storage-admins/pv-admin), all three with RBAC to create
// and change any PersistentVolume, and the tenant with claims in team-b.
type pvEnv struct {
	*env
	webhook, tenant, pvAdmin kubernetes.Interface
}

func startPV(t *testing.T) *pvEnv {
	e := start(t)
	_, err := e.c.Client.StorageV1().StorageClasses().Create(e.ctx, &storagev1.StorageClass{
		ObjectMeta:    metav1.ObjectMeta{Name: dateraClass},
		Provisioner:   "petfabric.io/datera",
		ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimRetain),
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	p := &pvEnv{env: e}
	p.webhook = e.asSA(releaseNS, webhookSA)
	p.tenant = e.asSA("team-b", "tenant")
	p.pvAdmin = e.asSA("storage-admins", "pv-admin")
	e.namespace("team-a")
	e.grantCluster("pv-writer", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
	}, saSubject(releaseNS, webhookSA), saSubject("team-b", "tenant"), saSubject("storage-admins", "pv-admin"))
	e.grantNamespace("team-b", "claims", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
	}, saSubject("team-b", "tenant"))
	return p
}

// waitPVPhase waits until PV name is in phase, and, when bound, bound to claim ns/claimName.
func (e *env) waitPVPhase(name string, phase corev1.PersistentVolumePhase, ns, claimName string) *corev1.PersistentVolume {
	e.t.Helper()
	var pv *corev1.PersistentVolume
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := e.c.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pv = got
		if got.Status.Phase != phase {
			return false, nil
		}
		if phase != corev1.VolumeBound {
			return true, nil
		}
		c, err := e.c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claimName, metav1.GetOptions{})
		return err == nil && c.Status.Phase == corev1.ClaimBound && c.Spec.VolumeName == name &&
			got.Spec.ClaimRef != nil && got.Spec.ClaimRef.UID == c.UID, nil
	})
	require.NoError(e.t, err, "PV %s never %s (to %s/%s); last: %+v", name, phase, ns, claimName, pvSummary(pv))
	return pv
}

func pvSummary(pv *corev1.PersistentVolume) string {
	if pv == nil {
		return "<none>"
	}
	return fmt.Sprintf("phase=%s claimRef=%+v", pv.Status.Phase, pv.Spec.ClaimRef)
}

// TestOnlyWebhookWritesDateraPVs: a tenant allowed by RBAC to write PersistentVolumes hands
// itself another tenant's Datera volume, by creating a datera/iscsi PV of its own (pointing
// at the victim's volume ID and the admin's credentials Secret) or by pointing an existing PV
// at its own claim, and can make retained data deletable by flipping the reclaim policy.
// Without the chart's policy every step works; with it each is denied with a message saying
// who may, while the webhook's ServiceAccount keeps doing its job, other drivers' PVs are not
// affected, cluster admins are denied by default and allowed when policies.pvManagers says
// so.
func TestOnlyWebhookWritesDateraPVs(t *testing.T) {
	e := startPV(t)
	cs := e.c.Client

	// Without the policy: every attack works.
	require.NoError(t, createPV(e.ctx, e.tenant, dateraPV("handmade-1", "team-b", "loot-1"), false),
		"RBAC must allow the hand-made PV for this test to mean anything")
	_, err := e.tenant.CoreV1().PersistentVolumeClaims("team-b").Create(e.ctx, claim("team-b", "loot-1"), metav1.CreateOptions{})
	require.NoError(t, err)
	e.waitPVPhase("handmade-1", corev1.VolumeBound, "team-b", "loot-1")
	t.Log("without the policy: the tenant's hand-made datera PV (team-a's volume ID, the admin's Secret) is bound to its claim")

	victim1 := pvoptions.PVName("team-a", "data-db-0")
	require.NoError(t, createPV(e.ctx, e.webhook, dateraPV(victim1, "team-a", "data-db-0"), false))
	require.NoError(t, updatePV(e.ctx, e.tenant, victim1, false, retarget("team-b", "loot-2")))
	_, err = e.tenant.CoreV1().PersistentVolumeClaims("team-b").Create(e.ctx, claim("team-b", "loot-2"), metav1.CreateOptions{})
	require.NoError(t, err)
	e.waitPVPhase(victim1, corev1.VolumeBound, "team-b", "loot-2")
	t.Log("without the policy: the tenant pointed team-a's PV at its own claim and got it bound")

	victim2 := pvoptions.PVName("team-a", "data-db-1")
	require.NoError(t, createPV(e.ctx, e.webhook, dateraPV(victim2, "team-a", "data-db-1"), false))
	require.NoError(t, updatePV(e.ctx, e.tenant, victim2, false, reclaimDelete))
	t.Log("without the policy: the tenant set team-a's retained PV to Delete")
	require.NoError(t, updatePV(e.ctx, cs, victim2, false, func(pv *corev1.PersistentVolume) {
		pv.Spec.PersistentVolumeReclaimPolicy = corev1.PersistentVolumeReclaimRetain
	}))

	// The volume source itself cannot be edited by anyone, policy or not: the apiserver
	// keeps spec.persistentvolumesource immutable and checks that before admission. So
	// neither an edit of a datera PV's options nor turning another PV into a datera one
	// needs a rule.
	require.NoError(t, createPV(e.ctx, e.tenant, otherPV("nfs-0", "team-b", "nfs-0"), false))
	for who, c := range map[string]kubernetes.Interface{"tenant": e.tenant, "webhook": e.webhook} {
		err := updatePV(e.ctx, c, victim2, false, func(pv *corev1.PersistentVolume) {
			pv.Spec.FlexVolume.Options["volumeID"] = "k0123456789abcdef_team-c_other"
		})
		require.Error(t, err, "%s edited spec.flexVolume.options", who)
		require.Contains(t, err.Error(), "spec.persistentvolumesource is immutable after creation", who)
		err = updatePV(e.ctx, c, "nfs-0", false, func(pv *corev1.PersistentVolume) {
			pv.Spec.FlexVolume.Driver = mutate.Driver
		})
		require.Error(t, err, "%s turned a PV into a datera one", who)
		require.Contains(t, err.Error(), "spec.persistentvolumesource is immutable after creation", who)
	}
	t.Log("without the policy: spec.flexVolume of any PV is immutable for everyone (apiserver validation)")

	e.install("")
	e.waitEnforced(pvPolicy, func(ctx context.Context) error {
		return createPV(ctx, e.tenant, dateraPV("probe", "team-b", "probe"), true)
	})

	victim3 := pvoptions.PVName("team-a", "data-db-2")
	t.Run("webhook creates a datera PV", func(t *testing.T) {
		require.NoError(t, createPV(e.ctx, e.webhook, dateraPV(victim3, "team-a", "data-db-2"), false))
	})
	t.Run("tenant's hand-made datera PV denied", func(t *testing.T) {
		err := createPV(e.ctx, e.tenant, dateraPV("handmade-2", "team-b", "loot-3"), false)
		requireDenied(t, err, pvPolicy, "only the petfabric webhook ("+webhookUser+")", "policies.pvManagers")
	})
	t.Run("cluster admin's hand-made datera PV denied by default", func(t *testing.T) {
		err := createPV(e.ctx, cs, dateraPV("handmade-admin", "team-b", "loot-3"), false)
		requireDenied(t, err, pvPolicy, "only the petfabric webhook")
	})
	t.Run("unlisted storage operator denied", func(t *testing.T) {
		err := createPV(e.ctx, e.pvAdmin, dateraPV("handmade-op", "team-b", "loot-3"), false)
		requireDenied(t, err, pvPolicy, "only the petfabric webhook")
	})
	t.Run("tenant pointing the PV at its own claim denied", func(t *testing.T) {
		err := updatePV(e.ctx, e.tenant, victim3, false, retarget("team-b", "loot-3"))
		requireDenied(t, err, pvPolicy, "spec.claimRef", "team-a/data-db-2")
	})
	t.Run("tenant removing the claimRef denied", func(t *testing.T) {
		err := updatePV(e.ctx, e.tenant, victim3, false, func(pv *corev1.PersistentVolume) { pv.Spec.ClaimRef = nil })
		requireDenied(t, err, pvPolicy, "spec.claimRef")
	})
	t.Run("tenant changing the reclaim policy denied", func(t *testing.T) {
		err := updatePV(e.ctx, e.tenant, victim3, false, reclaimDelete)
		requireDenied(t, err, pvPolicy, "spec.persistentVolumeReclaimPolicy")
	})
	t.Run("tenant changing class, size and access modes denied, naming each", func(t *testing.T) {
		err := updatePV(e.ctx, e.tenant, victim3, false, func(pv *corev1.PersistentVolume) {
			pv.Spec.StorageClassName = "other"
			pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("32Ti")
			pv.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
		})
		requireDenied(t, err, pvPolicy, "spec.storageClassName", "spec.capacity", "spec.accessModes")
	})
	t.Run("tenant setting bound-by-controller denied", func(t *testing.T) {
		// With this annotation the PV controller would drop the claimRef when the claim
		// goes, and the volume would be free for any claim of the class.
		err := updatePV(e.ctx, e.tenant, victim3, false, func(pv *corev1.PersistentVolume) {
			metav1.SetMetaDataAnnotation(&pv.ObjectMeta, "pv.kubernetes.io/bound-by-controller", "yes")
		})
		requireDenied(t, err, pvPolicy, "pv.kubernetes.io/bound-by-controller")
	})
	t.Run("tenant labelling the PV allowed", func(t *testing.T) {
		require.NoError(t, updatePV(e.ctx, e.tenant, victim3, false, func(pv *corev1.PersistentVolume) {
			metav1.SetMetaDataLabel(&pv.ObjectMeta, "backup", "nightly")
		}))
	})
	t.Run("webhook changes claimRef and reclaim policy", func(t *testing.T) {
		require.NoError(t, updatePV(e.ctx, e.webhook, victim3, false, reclaimDelete))
		require.NoError(t, updatePV(e.ctx, e.webhook, victim3, false, retarget("team-a", "data-db-3")))
	})
	t.Run("other drivers' PVs untouched", func(t *testing.T) {
		require.NoError(t, createPV(e.ctx, e.tenant, otherPV("nfs-1", "team-b", "nfs"), false))
		require.NoError(t, updatePV(e.ctx, e.tenant, "nfs-1", false, retarget("team-b", "nfs-2")))
		require.NoError(t, updatePV(e.ctx, e.tenant, "nfs-1", false, reclaimDelete))
	})

	// The operator lists a storage team's ServiceAccount and the cluster admins.
	e.install(`policies:
  pvManagers:
    users: ["system:serviceaccount:storage-admins:pv-admin"]
    groups: ["system:masters"]
`)
	e.waitAllowed("cluster admin's datera PV", func(ctx context.Context) error {
		return createPV(ctx, cs, dateraPV("probe", "team-b", "probe"), true)
	})
	t.Run("listed pvManagers allowed", func(t *testing.T) {
		require.NoError(t, createPV(e.ctx, cs, dateraPV("admin-made", "team-b", "restore-0"), false))
		require.NoError(t, createPV(e.ctx, e.pvAdmin, dateraPV("operator-made", "team-b", "restore-1"), false))
		require.NoError(t, updatePV(e.ctx, e.pvAdmin, "operator-made", false, retarget("team-b", "restore-2")))
	})
	t.Run("tenant still denied", func(t *testing.T) {
		err := createPV(e.ctx, e.tenant, dateraPV("handmade-3", "team-b", "loot-4"), false)
		requireDenied(t, err, pvPolicy, "only the petfabric webhook")
	})
}

// TestWebhookPVIsBoundAndReleasedByPVControllerUnderPolicy: with the policies installed, the
// webhook's ServiceAccount creates a PV pre-bound to a claim that does not exist yet; the
// real PV controller binds it when the claim appears (writing claimRef's UID, which the
// policy allows it), releases it when the claim is deleted, and, once the webhook frees it for
// the re-created claim, binds it again. The policy blocks none of it.
func TestWebhookPVIsBoundAndReleasedByPVControllerUnderPolicy(t *testing.T) {
	e := startPV(t)
	e.install("")
	e.waitEnforced(pvPolicy, func(ctx context.Context) error {
		return createPV(ctx, e.tenant, dateraPV("probe", "team-b", "probe"), true)
	})

	name := pvoptions.PVName("team-b", "data-db-0")
	require.NoError(t, createPV(e.ctx, e.webhook, dateraPV(name, "team-b", "data-db-0"), false))
	e.waitPVPhase(name, corev1.VolumeAvailable, "", "")

	claims := e.tenant.CoreV1().PersistentVolumeClaims("team-b")
	_, err := claims.Create(e.ctx, claim("team-b", "data-db-0"), metav1.CreateOptions{})
	require.NoError(t, err)
	pv := e.waitPVPhase(name, corev1.VolumeBound, "team-b", "data-db-0")
	t.Logf("bound by the PV controller: claimRef %s/%s uid %s", pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name, pv.Spec.ClaimRef.UID)

	require.NoError(t, claims.Delete(e.ctx, "data-db-0", metav1.DeleteOptions{}))
	e.waitPVPhase(name, corev1.VolumeReleased, "", "")

	// The StatefulSet comes back: as its PVC hook does before the new claim is stored, the
	// webhook frees the Released PV for it (claimRef without the old UID); then the claim
	// is created.
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := claims.Get(ctx, "data-db-0", metav1.GetOptions{})
		return err != nil, nil
	}), "old claim never went away")
	require.NoError(t, updatePV(e.ctx, e.webhook, name, false, func(pv *corev1.PersistentVolume) {
		pv.Spec.ClaimRef.UID, pv.Spec.ClaimRef.ResourceVersion = "", ""
	}))
	_, err = claims.Create(e.ctx, claim("team-b", "data-db-0"), metav1.CreateOptions{})
	require.NoError(t, err)
	e.waitPVPhase(name, corev1.VolumeBound, "team-b", "data-db-0")
}
