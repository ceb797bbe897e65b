package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookIsolationScenarios runs issue 9's webhook scenarios against the real apiserver,
// controller-manager and scheduler: look-alike namespaces, an upgrade over version 1 PVs,
// a forged claim review, a denied UPDATE, replicas: 2147483647, ReadWriteMany, and the size
// annotation.
func TestWebhookIsolationScenarios(t *testing.T) {
	cluster.RequireBinaries(t)
	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(2)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := c.Client
	nsUID := map[string]types.UID{}
	for _, name := range []string{"team", "team-a", "up", "shop"} {
		ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		require.NoError(t, err)
		nsUID[name] = ns.UID
	}
	_, err := cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", "127.0.0.1:7717", corev1.PersistentVolumeReclaimRetain, nil), metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := mutate.Config{ClusterID: "e2e", MaxOrdinals: 50}
	w := startWebhook(t, c, cfg)
	registerWebhook(ctx, t, c, w, admissionregistrationv1.Fail)

	t.Run("look-alike claims in team and team-a each get their own PV, with their owner", func(t *testing.T) {
		squatter := statefulSet("team", "db", 1, ptr.To("datera-gold"), "a-data") // claim a-data-db-0
		victim := statefulSet("team-a", "db", 1, ptr.To("datera-gold"), "data")   // claim data-db-0
		_, err := cs.AppsV1().StatefulSets("team").Create(ctx, squatter, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = cs.AppsV1().StatefulSets("team-a").Create(ctx, victim, metav1.CreateOptions{})
		require.NoError(t, err, "the victim's StatefulSet is admitted")
		waitClaimsBound(ctx, t, cs, "team", "a-data", "db", 1)
		waitClaimsBound(ctx, t, cs, "team-a", "data", "db", 1)
		for _, x := range []struct{ ns, claim string }{{"team", "a-data-db-0"}, {"team-a", "data-db-0"}} {
			pv := getPV(ctx, t, cs, x.ns, x.claim)
			owner, ok := pvoptions.OwnerFromOptions(pv.Spec.FlexVolume.Options)
			require.True(t, ok)
			assert.Equal(t, pvoptions.Owner{ClusterID: "e2e", Namespace: x.ns, Claim: x.claim, NamespaceUID: string(nsUID[x.ns])}, owner)
			assert.Equal(t, pvoptions.AccessReadWriteOnce, pv.Spec.FlexVolume.Options[pvoptions.OptAccessMode])
		}
	})

	t.Run("after an upgrade a claim keeps its version 1 PV, and no second PV is made", func(t *testing.T) {
		// The PV the previous webhook made: datera-<ns>-<claim>, no owner, no cluster ID.
		old := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: mutate.LegacyPVName("up", "data-web-0"), Labels: map[string]string{mutate.LabelManagedBy: mutate.ManagedByValue}},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *getQuantity("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              "datera-gold",
				ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: "up", Name: "data-web-0"},
				PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
					Driver: mutate.Driver, FSType: "xfs",
					Options: map[string]string{"volumeID": "up_data-web-0", "size": "1", "replica": "3", "backstoreServer": "127.0.0.1:7717"},
				}},
			},
		}
		_, err := cs.CoreV1().PersistentVolumes().Create(ctx, old, metav1.CreateOptions{})
		require.NoError(t, err)
		waitPVVisible(ctx, t, c, old.Name)
		_, err = cs.AppsV1().StatefulSets("up").Create(ctx, statefulSet("up", "web", 2, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			pvc, err := cs.CoreV1().PersistentVolumeClaims("up").Get(ctx, "data-web-0", metav1.GetOptions{})
			return err == nil && pvc.Spec.VolumeName == old.Name && pvc.Status.Phase == corev1.ClaimBound
		}, time.Minute, 250*time.Millisecond, "the claim binds its version 1 PV")
		_, err = cs.CoreV1().PersistentVolumes().Get(ctx, mutate.PVName("up", "data-web-0"), metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "no second PV for a claim that has one")
		getPV(ctx, t, cs, "up", "data-web-1") // the new ordinal gets a version 2 PV
	})

	t.Run("a forged claim review posted straight to the webhook makes no PV", func(t *testing.T) {
		before := countPVs(ctx, t, cs)
		claim := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "data-ghost-3", Namespace: "shop", Annotations: map[string]string{
				mutate.AnnStatefulSet: "ghost", mutate.AnnClaimTemplate: "data", "petfabric.io/replica": "5",
			}},
			Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr.To("datera-gold"),
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *getQuantity("30Ti")}},
			},
		}
		resp := postReview(t, w, webhook.PathClaims, &admissionv1.AdmissionRequest{
			UID: "forged-1", Operation: admissionv1.Create, Namespace: "shop", Name: claim.Name,
			Kind:     metav1.GroupVersionKind{Version: "v1", Kind: "PersistentVolumeClaim"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "persistentvolumeclaims"},
			Object:   rawJSON(t, claim),
		})
		assert.True(t, resp.Allowed)
		assert.Equal(t, before, countPVs(ctx, t, cs), "no PV for a StatefulSet that does not exist")
	})

	t.Run("an UPDATE the apiserver rejects leaves no PVs behind", func(t *testing.T) {
		_, err := cs.AppsV1().StatefulSets("shop").Create(ctx, statefulSet("shop", "web", 1, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		before := countPVs(ctx, t, cs)
		sts, err := cs.AppsV1().StatefulSets("shop").Get(ctx, "web", metav1.GetOptions{})
		require.NoError(t, err)
		sts.Spec.Replicas = ptr.To[int32](4)
		sts.Spec.ServiceName = "renamed" // immutable
		_, err = cs.AppsV1().StatefulSets("shop").Update(ctx, sts, metav1.UpdateOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "forbidden")
		assert.Equal(t, before, countPVs(ctx, t, cs))
	})

	t.Run("replicas above the ordinal ceiling is denied, on create and on scale", func(t *testing.T) {
		before := countPVs(ctx, t, cs)
		_, err := cs.AppsV1().StatefulSets("shop").Create(ctx, statefulSet("shop", "huge", 2147483647, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "spec.replicas: invalid value \"2147483647\": at most 50")
		_, err = c.Kubectl("-n", "shop", "scale", "statefulset", "web", "--replicas=51")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "at most 50")
		assert.Equal(t, before, countPVs(ctx, t, cs))
	})

	t.Run("ReadWriteMany and a size above the request are denied naming the field", func(t *testing.T) {
		rwx := statefulSet("shop", "rwx", 1, ptr.To("datera-gold"))
		rwx.Spec.VolumeClaimTemplates[0].Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
		_, err := cs.AppsV1().StatefulSets("shop").Create(ctx, rwx, metav1.CreateOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "spec.volumeClaimTemplates[0].spec.accessModes")
		big := statefulSet("shop", "big", 1, ptr.To("datera-gold"))
		big.Spec.VolumeClaimTemplates[0].Annotations = map[string]string{"petfabric.io/size": "32768"}
		_, err = cs.AppsV1().StatefulSets("shop").Create(ctx, big, metav1.CreateOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "annotations[petfabric.io/size]")
		assert.Contains(t, err.Error(), "ResourceQuota")
	})
}

// waitPVVisible waits until a PV can be read, then gives the webhook's informer a moment to
// see it too (its cache has no observable of its own).
func waitPVVisible(ctx context.Context, t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, err := c.Client.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		return err == nil
	}, 30*time.Second, 100*time.Millisecond)
	time.Sleep(time.Second) // the watch event reaches the webhook's informer well within this
}

// postReview posts an AdmissionReview straight to the webhook, as any pod that reaches its
// port could.
func postReview(t *testing.T, w *runningWebhook, path string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	body, err := json.Marshal(&admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req})
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(w.CAPEM))
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Post(w.URL+path, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	var out admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(b, &out))
	require.NotNil(t, out.Response, string(b))
	return out.Response
}

func rawJSON(t *testing.T, obj any) (r runtime.RawExtension) {
	t.Helper()
	b, err := json.Marshal(obj)
	require.NoError(t, err)
	r.Raw = b
	return r
}
