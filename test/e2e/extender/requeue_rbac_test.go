package extendere2e

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestRequeueTriggerLeastPrivilege: the requeue trigger works with exactly the Role the README
// and the chart grant (create csistoragecapacities, patch only the trigger object by name) and
// nothing more, acting as a ServiceAccount on the real apiserver: its first write creates the
// object, later writes patch it, while the same identity may neither patch another
// CSIStorageCapacity nor read any.
func TestRequeueTriggerLeastPrivilege(t *testing.T) {
	c := cluster.Start(t, cluster.Options{})
	ctx := context.Background()
	admin := c.Client
	_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNS}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.CoreV1().ServiceAccounts(releaseNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "extender"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.RbacV1().Roles(releaseNS).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "extender-requeue"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"csistoragecapacities"}, Verbs: []string{"create"}},
			{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"csistoragecapacities"}, ResourceNames: []string{extender.DefaultRequeueObject}, Verbs: []string{"patch"}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = admin.RbacV1().RoleBindings(releaseNS).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "extender-requeue"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "extender-requeue"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "extender", Namespace: releaseNS}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + releaseNS + ":extender"}
	sa, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	m := extender.NewMetrics()
	r, err := extender.NewRequeuer(sa, extender.RequeueOptions{Namespace: releaseNS, Coalesce: 10 * time.Millisecond,
		MinInterval: 10 * time.Millisecond, Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	annotation := func() string {
		obj, err := admin.StorageV1().CSIStorageCapacities(releaseNS).Get(ctx, extender.DefaultRequeueObject, metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return obj.Annotations[extender.RequeueAnnotation]
	}
	r.Notify("n1")
	require.Eventually(t, func() bool { return annotation() != "" }, 10*time.Second, 20*time.Millisecond, "first write did not create the trigger object")
	first := annotation()
	r.Notify("n1")
	require.Eventually(t, func() bool { return annotation() != first }, 10*time.Second, 20*time.Millisecond, "second write did not patch the trigger object")

	// Nothing beyond: another CSIStorageCapacity cannot be patched, none can be read.
	_, err = admin.StorageV1().CSIStorageCapacities(releaseNS).Create(ctx, &storagev1.CSIStorageCapacity{
		ObjectMeta: metav1.ObjectMeta{Name: "someone-elses"}, StorageClassName: "fast"}, metav1.CreateOptions{})
	require.NoError(t, err)
	caps := sa.StorageV1().CSIStorageCapacities(releaseNS)
	_, err = caps.Patch(ctx, "someone-elses", types.MergePatchType, []byte(`{"metadata":{"annotations":{"x":"y"}}}`), metav1.PatchOptions{})
	require.True(t, apierrors.IsForbidden(err), "patching another object must be forbidden: %v", err)
	_, err = caps.Get(ctx, extender.DefaultRequeueObject, metav1.GetOptions{})
	require.True(t, apierrors.IsForbidden(err), "get must be forbidden: %v", err)
	_, err = caps.List(ctx, metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "list must be forbidden: %v", err)
	_, err = sa.StorageV1().CSIStorageCapacities("default").Create(ctx, &storagev1.CSIStorageCapacity{
		ObjectMeta: metav1.ObjectMeta{Name: extender.DefaultRequeueObject}, StorageClassName: extender.RequeueStorageClass}, metav1.CreateOptions{})
	require.True(t, apierrors.IsForbidden(err), "create outside the namespace must be forbidden: %v", err)
}
